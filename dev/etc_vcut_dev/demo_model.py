"""The demo's ETC model: its settings, the synthetic set and tiny base model it trains on, the training (trained
once per :func:`training_key` into a cache for the tests and benchmarks), its files in ComfyUI's folders, and
the sampling of the text-to-video template that reads them."""
import glob
import hashlib
import json
import os
import shutil
import time

from etc_vcut_dev.comfy_host import REPO, comfyui_path

HELD_OUT = ("green", "up")
TRAIN_STEPS, LR, BATCH, WARMUP, SCHEDULE = 200, 5e-4, 8, 0, "constant"
# The text tower's word scale (tiny_base.text_encoder), the EMA decay of the exported weights and timesteps
# drawn more often at high noise (etc_core/train/timesteps.py): with all three, 200 steps give what 500 steps
# of the live weights with a plain tower and uniform timesteps gave (docs/demo-timing.md, sessions 12 and 13).
WORD_SCALE, EMA_DECAY, TIMESTEPS = 30.0, 0.98, "ramp"
FRAMES, LAYOUT, SIZE, FPS = 8, "2x4", 32, 4


def cpu_precision() -> str:
    """bf16 autocast where the CPU has bf16 instructions (about twice as fast here), else fp32."""
    import torch
    return "bf16" if not torch.cuda.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"


def progress_bar(steps: int):
    """The trainer's ``progress`` callback as a terminal bar with rate, ETA and loss; returns (callback, bar)."""
    from tqdm import tqdm
    bar = tqdm(total=steps, desc="[etc train]", unit="step", mininterval=2.0)

    def progress(step, total, loss):
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
    return progress, bar


def demo_trainer(folder: str, steps: int = TRAIN_STEPS, me_strength: float = 1.0, batch: int = BATCH,
                 lr: float = LR, precision: str = None, warmup: int = WARMUP, schedule: str = SCHEDULE,
                 unet: str = None, word_scale: float = WORD_SCALE, ema_decay: float = EMA_DECAY,
                 timesteps: str = TIMESTEPS):
    """The synthetic set, the tiny base model and an etc_core.train Trainer on them, under ``folder``; returns
    (trainer, vae, data). The trainer exports the EMA of the weights unless ``ema_decay`` is 0."""
    import numpy as np

    from etc_vcut_dev import synthetic, tiny_base
    from etc_core.data import frames_to_tensor
    from etc_core.train import Trainer, TrainConfig
    data = synthetic.write_square_set(os.path.join(folder, "data"), FRAMES, held_out=HELD_OUT, size=SIZE)
    rng = np.random.default_rng(0)
    frames = np.stack([synthetic.square_frame(SIZE, 10, *rng.integers(0, SIZE - 9, 2),
                                              list(synthetic.COLORS.values())[rng.integers(len(synthetic.COLORS))])
                       for _ in range(256)])
    vae = tiny_base.pooling_tiny_vae(synthetic.BACKGROUND)
    tiny_base.set_latent_scale(vae, frames_to_tensor(frames))
    pretrained = tiny_base.write_pretrained(os.path.join(folder, "pretrained"), vae, word_scale=word_scale,
                                            unet_config=tiny_base.UNET_LAYOUTS[unet] if unet else None)
    config = TrainConfig(pretrained=pretrained, output_dir=os.path.join(folder, "run"),
                         video_manifest=data["video_manifest"], image_manifest=data["image_manifest"],
                         label_folder=data["label_folder"], ratios=(0.9, 0.05, 0.05), frames=FRAMES, layout=LAYOUT,
                         resolution=SIZE, me_strength=me_strength, caption_dropout=0.1,
                         mixed_precision=precision or cpu_precision(), lr=lr, lr_schedule=schedule,
                         lr_warmup_steps=warmup, timestep_sampling=timesteps, batch_size=batch, max_steps=steps,
                         checkpoint_every=10**9, checkpoint_minutes=0, ema_decay=ema_decay, seed=0)  # nothing to resume: no checkpoints
    return Trainer(config), vae, data


def train_etc(folder: str, steps: int = TRAIN_STEPS, me_strength: float = 1.0, batch: int = BATCH, lr: float = LR,
              precision: str = None, warmup: int = WARMUP, schedule: str = SCHEDULE, unet: str = None,
              timesteps: str = TIMESTEPS) -> dict:
    """Synthetic set, tiny base model, fine-tune with etc_core.train; returns the files for ComfyUI."""
    trainer, vae, data = demo_trainer(folder, steps, me_strength, batch, lr, precision, warmup, schedule, unet,
                                      timesteps=timesteps)
    progress, bar = progress_bar(steps)
    start = time.perf_counter()
    losses = trainer.train(progress=progress)
    seconds = time.perf_counter() - start
    bar.close()
    final = trainer.export()
    return {"unet": os.path.join(final, "etc_unet_comfyui.safetensors"), "fps": os.path.join(final, "etc_fps.safetensors"),
            "text_encoder": trainer.text_encoder, "vae": vae, "train_seconds": seconds, "losses": losses,
            "captions": data["captions"]}


ETC_FOLDERS = {"unet": "unet", "fps": "etc", "clip": "clip", "vae": "vae"}  # file -> folder under models/


def etc_file_names(name: str) -> dict:
    return {"unet": f"{name}_unet.safetensors", "fps": f"{name}_fps.safetensors",
            "clip": f"{name}_text_encoder.safetensors", "vae": f"{name}_taesd.safetensors"}


def install_etc(model: dict, base: str, name: str = "etc_demo") -> dict:
    """Put the ETC files where ComfyUI's stock loaders look; returns the file names per loader."""
    from etc_vcut_dev import tiny_base
    files = etc_file_names(name)
    shutil.copy(model["unet"], os.path.join(base, "models", "unet", files["unet"]))
    shutil.copy(model["fps"], os.path.join(base, "models", "etc", files["fps"]))
    tiny_base.save_comfyui_text_encoder(os.path.join(base, "models", "clip", files["clip"]), model["text_encoder"])
    tiny_base.save_comfyui_vae(os.path.join(base, "models", "vae", files["vae"]), model["vae"])
    return files


# The development modules the trained model depends on (others, such as the test hosts, do not retrain it).
TRAINING_MODULES = ("demo_model.py", "synthetic.py", "tiny_base.py", "tiny_diffusers.py")


def training_key() -> str:
    """What the demo's trained model depends on: the ETC code, the development modules that build it
    (this module's settings, the tiny base model, the synthetic set: TRAINING_MODULES), the two host files
    the tokenizer reads (vocabulary and merges; both CI hosts ship the same, while their
    ``tokenizer_config.json`` differ), torch and the training precision."""
    import torch
    digest = hashlib.sha256(f"{torch.__version__} {cpu_precision()}".encode())
    tokenizer = os.path.join(comfyui_path(), "comfy", "sd1_tokenizer")
    code = glob.glob(os.path.join(REPO, "etc_core", "**", "*.py"), recursive=True) + \
        [os.path.join(REPO, "dev", "etc_vcut_dev", name) for name in TRAINING_MODULES]
    files = {os.path.relpath(p, REPO): p for p in code}
    files.update({f"sd1_tokenizer/{name}": os.path.join(tokenizer, name) for name in ("vocab.json", "merges.txt")})
    for name in sorted(files):  # named by place in the repository or the host, not by the host's folder
        with open(files[name], "rb") as f:
            digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]


def cached_etc(cache: str, base: str, name: str = "etc_test") -> dict:
    """``install_etc(train_etc(...))`` into ``base``, trained once per :func:`training_key`: the installed files
    are kept under ``cache``, so the test pass on the second ComfyUI host reuses the model."""
    folder = os.path.join(cache, training_key())
    if not os.path.isdir(folder):
        staging = folder + ".partial"
        shutil.rmtree(staging, ignore_errors=True)
        for sub in ETC_FOLDERS.values():
            os.makedirs(os.path.join(staging, "models", sub))
        install_etc(train_etc(os.path.join(staging, "train")), staging, name)
        shutil.rmtree(os.path.join(staging, "train"))
        os.replace(staging, folder)
    files = etc_file_names(name)
    for kind, sub in ETC_FOLDERS.items():
        shutil.copy(os.path.join(folder, "models", sub, files[kind]), os.path.join(base, "models", sub))
    return files


def etc_prompt(files: dict, caption: str, seed: int, batch: int = 1, me_strength: float = 1.0,
               steps: int = 20, cfg: float = 4.0, prefix: str = "ETC/demo") -> dict:
    """workflows/api/etc_text_to_video.json, the template that samples this model (loaders, size and frame rate
    are the demo's), with ``files``, the caption and seed; also saves the frames as PNGs."""
    with open(os.path.join(REPO, "workflows", "api", "etc_text_to_video.json")) as f:
        prompt = json.load(f)
    prompt["1"]["inputs"]["unet_name"] = files["unet"]
    prompt["3"]["inputs"]["clip_name"] = files["clip"]
    prompt["4"]["inputs"]["vae_name"] = files["vae"]
    prompt["5"]["inputs"]["text"] = caption
    prompt["7"]["inputs"].update(batch_size=batch, seed=seed, steps=steps, cfg=cfg, me_strength=me_strength,
                                 fps_weights=files["fps"])
    prompt["9"]["inputs"]["filename_prefix"] = prefix
    prompt["png"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": prefix + "_frame"}}
    return prompt


def sample_etc(server, files: dict, caption: str, seed: int, **kwargs):
    """Queue the ETC graph; returns (frames uint8 [B, T, H, W, 3] from the PNGs, output records)."""
    import cv2
    import numpy as np
    outputs = server.run(etc_prompt(files, caption, seed, **kwargs))
    records = [r for o in outputs.values() for r in o.get("images", []) + o.get("videos", []) + o.get("latents", [])]
    pngs = [r for r in records if r["filename"].endswith(".png") and r.get("type", "output") == "output"]
    frames = np.stack([cv2.imread(server.output_path(r.get("subfolder", ""), r["filename"]))[:, :, ::-1] for r in pngs])
    return frames.reshape(-1, FRAMES, *frames.shape[1:]), records


def frame_strip(frames, path: str, scale: int = 4) -> str:
    """Frames [T, H, W, 3] side by side (or videos [B, T, H, W, 3], one row each), enlarged ``scale`` times,
    2-pixel gaps."""
    import cv2
    import numpy as np
    videos = frames if frames.ndim == 5 else frames[None]
    big = np.repeat(np.repeat(videos, scale, 2), scale, 3)
    padded = np.pad(big, ((0, 0), (0, 0), (0, 2), (0, 2), (0, 0)), constant_values=255)
    rows = [np.concatenate(list(video), axis=1) for video in padded]
    cv2.imwrite(path, np.concatenate(rows, axis=0)[:-2, :-2, ::-1])
    return path
