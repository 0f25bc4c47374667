#!/usr/bin/env python3
"""The first command: a tiny ETC model trained on synthetic motion and sampled in ComfyUI, plus a fair VCUT timing.

1. ETC: writes a synthetic caption-video set (coloured squares moving left/right/up/down, clips of 8 frames at
   4 or 8 fps, captioned stills and label folders; one colour/direction pair held out), builds a tiny SD 2.x-family
   base model (etc_core.tiny_base), fine-tunes it with the pack's trainer (etc_core.train), puts the export
   into ComfyUI's folders for the stock UNETLoader, CLIPLoader and VAELoader (FPS file in models/etc), and
   queues the ETC text-to-video workflow over the HTTP API with the held-out caption. Writes the video, the
   frames as PNGs and a frame strip.
2. VCUT: the SVD workflows on random tiny weights, timed fairly (one warm-up each, then SVD_PAIRS alternated
   pairs, baseline and VCUT with the same seed in each pair; the median of the per-pair ratios with their
   spread, and how much CPU other processes took meanwhile).
3. The other example workflows (long ETC video, training launch) on tiny random models, untimed smoke runs.

Everything lands in demo_output/ (summary.md, summary.json).
"""
import argparse
import glob
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import time


from etc_vcut_dev.comfy_host import REPO, ComfyServer, comfyui_path
from etc_vcut_dev.client import apply_overrides, run
from etc_vcut_dev.grid_tasks import GRID_TASK_OVERRIDES

TINY_LOADERS = {"ImageOnlyCheckpointLoader": "ETCVCUTTestTinySVD", "CheckpointLoaderSimple": "ETCVCUTTestTinySD2"}
# Single-part loaders (the ETC templates load a UNet, text encoder and VAE apart): the tiny SD 2.x output they stand for.
TINY_PARTS = {"UNETLoader": 0, "CLIPLoader": 1, "VAELoader": 2}
# Checkpoints of other model families that ImageOnlyCheckpointLoader loads: their tiny fixture and its inputs.
TINY_CHECKPOINTS = {"sv3d_p.safetensors": ("ETCVCUTTestTinySV3D", {"variant": "p"}),
                    "sv3d_u.safetensors": ("ETCVCUTTestTinySV3D", {"variant": "u"}),
                    "stable_zero123.ckpt": ("ETCVCUTTestTinyZero123", {})}
SVD_OVERRIDES = ["3.width=128", "3.height=64", "3.video_frames=8"]
SMOKE_OVERRIDES = {  # run untimed on the tiny random models
    "etc_long_video.json": ["5.frames=64", "5.layout=8x8", "5.frame_width=64", "5.frame_height=40",
                            "5.fps_weights=none"],
    "etc_training_launch.json": ["1.frames=4", "1.layout=2x2", "1.resolution=32", "1.max_steps=4",
                                 "1.checkpoint_every=2", "1.mixed_precision=no", "1.gradient_checkpointing=false"],
}
# Every workflow of workflows/api sized for the tiny random models (tests/test_workflows.py runs them all).
DEMO_OVERRIDES = {"svd_baseline.json": SVD_OVERRIDES, "svd_vcut.json": SVD_OVERRIDES,
                  "sv3d_vcut.json": ["3.width=64", "3.height=64", "3.video_frames=4"],
                  "zero123_vcut.json": ["3.width=64", "3.height=64", "3.batch_size=4"],
                  "etc_text_to_video.json": ["7.frame_width=64", "7.frame_height=64", "7.fps_weights=none"],
                  **SMOKE_OVERRIDES, **GRID_TASK_OVERRIDES}
HELD_OUT = ("green", "up")
TRAIN_STEPS, LR, BATCH, WARMUP, SCHEDULE = 500, 5e-4, 8, 0, "constant"
FRAMES, LAYOUT, SIZE, FPS = 8, "2x4", 32, 4
SVD_PAIRS = 8


def tiny_training_inputs(base: str, run: str) -> list:
    """Overrides that point the training workflow at a tiny SD in the instance's models/diffusers and
    synthetic data in its input/ (the node reads only ComfyUI's folders), training into output/<run>."""
    from etc_vcut_dev.tiny_diffusers import write_synthetic_data, write_tiny_sd
    data = write_synthetic_data(os.path.join(base, "input", "etc_tiny_data"))
    write_tiny_sd(os.path.join(base, "models", "diffusers", "etc-tiny-sd"))
    return ["1.pretrained=diffusers/etc-tiny-sd", f"1.output_dir={run}"] + \
        [f"1.{key}={os.path.relpath(value, os.path.join(base, 'input'))}" for key, value in data.items()]


def machine() -> str:
    import torch
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor() or platform.machine()) if os.path.exists("/proc/cpuinfo") else platform.machine()
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def log(message: str):
    print(message, flush=True)


# -- ETC: data, base model, training, export ----------------------------------------------------------------
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


def train_etc(folder: str, steps: int = TRAIN_STEPS, me_strength: float = 1.0, batch: int = BATCH, lr: float = LR,
              precision: str = None, warmup: int = WARMUP, schedule: str = SCHEDULE, unet: str = None) -> dict:
    """Synthetic set, tiny base model, fine-tune with etc_core.train; returns the files for ComfyUI."""
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
    pretrained = tiny_base.write_pretrained(os.path.join(folder, "pretrained"), vae,
                                            unet_config=tiny_base.UNET_LAYOUTS[unet] if unet else None)
    config = TrainConfig(pretrained=pretrained, output_dir=os.path.join(folder, "run"),
                         video_manifest=data["video_manifest"], image_manifest=data["image_manifest"],
                         label_folder=data["label_folder"], ratios=(0.9, 0.05, 0.05), frames=FRAMES, layout=LAYOUT,
                         resolution=SIZE, me_strength=me_strength, caption_dropout=0.1,
                         mixed_precision=precision or cpu_precision(), lr=lr, lr_schedule=schedule,
                         lr_warmup_steps=warmup, batch_size=batch, max_steps=steps, checkpoint_every=10**9,
                         checkpoint_minutes=0, seed=0)  # nothing to resume: no checkpoint writes
    trainer = Trainer(config)
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
TRAINING_MODULES = ("demo.py", "synthetic.py", "tiny_base.py", "tiny_diffusers.py")


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


# -- VCUT timing ---------------------------------------------------------------------------------------------
def swap_loaders(prompt: dict) -> dict:
    """Replace checkpoint loaders by the tiny-model fixture loaders (same outputs, same order), and UNet,
    text-encoder and VAE loaders by the tiny SD 2.x loader's output of that kind.

    The swapped node gets a new id: the early-2024 executor reuses a cached output when a node's
    id and inputs match an earlier prompt's, whatever its class.
    """
    renamed = {}  # old id -> (new id, slot of the old id's output 0)
    for node_id, node in list(prompt.items()):
        kind = node["class_type"]
        if kind in TINY_LOADERS:
            tiny, inputs = TINY_CHECKPOINTS.get(node["inputs"].get("ckpt_name"), (TINY_LOADERS[kind], {}))
        elif kind in TINY_PARTS:
            tiny, inputs = "ETCVCUTTestTinySD2", {}
        else:
            continue
        renamed[node_id] = (f"{node_id}_{tiny}", TINY_PARTS.get(kind, 0))
        prompt[renamed[node_id][0]] = {"class_type": tiny, "inputs": dict(inputs, seed=0)}
        del prompt[node_id]
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and value[0] in renamed:
                new_id, slot = renamed[value[0]]
                node["inputs"][name] = [new_id, slot + value[1]]
    return prompt


def workflow(name: str, overrides) -> dict:
    with open(os.path.join(REPO, "workflows", "api", name)) as f:
        return apply_overrides(swap_loaders(json.load(f)), list(overrides))


def timed_run(server, prompt) -> float:
    start = time.perf_counter()
    server.run(prompt)
    return time.perf_counter() - start


def cpu_seconds(pids) -> float:
    """User + system CPU seconds of the processes ``pids`` so far (Linux /proc)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far, all cores (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How busy the machine was with other work while a timing ran: CPU seconds of every process but ours
    (this one and ``pids``, the ComfyUI server) per wall second, in cores, and the load averages. Timings
    taken while others used a sizeable share of the cores are noise, whatever their spread says."""

    def __init__(self, pids):
        self.pids = [os.getpid(), *pids]

    def __enter__(self):
        self.load_before = os.getloadavg()[0]
        self.start = (time.perf_counter(), machine_cpu_seconds(), cpu_seconds(self.pids))
        return self

    def __exit__(self, *exc):
        wall, machine, ours = (now - then for now, then in zip(
            (time.perf_counter(), machine_cpu_seconds(), cpu_seconds(self.pids)), self.start))
        cores = os.cpu_count()
        self.result = {"other_processes_cores": round(max(0.0, machine - ours) / wall, 2), "cores": cores,
                       "loadavg_1min_before": round(self.load_before, 2),
                       "loadavg_1min_after": round(os.getloadavg()[0], 2)}
        # a quarter of a core of other work shifts a 2-core CPU-bound timing by more than VCUT's gain at this size
        self.result["busy"] = self.result["other_processes_cores"] > 0.25


def svd_timings(server, pairs: int = SVD_PAIRS) -> dict:
    """Warm-up once per graph, then ``pairs`` alternated (baseline, VCUT) pairs, the order swapped every other
    pair so that a trend in the machine's speed favours neither; each pair shares a seed that no earlier run
    used, so neither ComfyUI version can answer from its output cache. The ratio is the median of the
    per-pair ratios, with their quartiles, minimum and maximum; ``load`` says how busy the machine was."""
    names = {"baseline": "svd_baseline.json", "vcut": "svd_vcut.json"}
    warm = {key: timed_run(server, workflow(name, SVD_OVERRIDES + ["7.seed=1000"])) for key, name in names.items()}
    runs = {key: [] for key in names}
    with OtherLoad([server.process.pid]) as load:
        for i in range(pairs):
            for key in (names if i % 2 == 0 else reversed(list(names))):
                runs[key].append(timed_run(server, workflow(names[key], SVD_OVERRIDES + [f"7.seed={i}"])))
            log(f"[svd timing] pair {i + 1}/{pairs}: baseline {runs['baseline'][-1]:.2f} s, "
                f"VCUT {runs['vcut'][-1]:.2f} s")
    ratios = [v / b for b, v in zip(runs["baseline"], runs["vcut"])]
    quartiles = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return {"measured": "wall time of one whole prompt (POST /prompt to its /history entry): tiny random-weight SVD "
                        "UNet, 8 frames of 128x64, 25 euler steps, cfg 2.5, VAE decode and MP4",
            "warm_up": warm, "runs": runs, "median": {key: statistics.median(v) for key, v in runs.items()},
            "pair_ratios": ratios, "vcut_over_baseline": statistics.median(ratios),
            "ratio_quartiles": [quartiles[0], quartiles[2]], "ratio_min_max": [min(ratios), max(ratios)],
            "load": load.result}


# -- main ----------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=TRAIN_STEPS)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--warmup", type=int, default=WARMUP, help="learning-rate warm-up steps")
    parser.add_argument("--schedule", choices=["constant", "cosine"], default=SCHEDULE, help="learning rate after "
                        "the warm-up")
    parser.add_argument("--unet", help="a UNet layout of tiny_base.UNET_LAYOUTS instead of tiny_base.UNET_CONFIG "
                        "(bench/demo_training.py times them)")
    parser.add_argument("--precision", choices=["auto", "bf16", "no"], default="auto",
                        help="training precision: auto (bf16 where the CPU has bf16 instructions, else fp32), "
                        "bf16, or no (fp32: what a CPU without bf16 runs, for timing it on one that has bf16)")
    parser.add_argument("--me-strength", type=float, default=1.0, help="mixed embedding strength in training and "
                        "sampling (0: the ablation)")
    parser.add_argument("--seeds", type=int, default=10, help="held-out-caption samples scored in summary.json")
    parser.add_argument("--skip-svd", action="store_true", help="ETC only (for the ablation)")
    parser.add_argument("--svd-pairs", type=int, default=SVD_PAIRS, help="alternated (baseline, VCUT) pairs timed")
    parser.add_argument("--out", default=os.path.join(REPO, "demo_output"))
    args = parser.parse_args(argv)
    import numpy as np

    from etc_vcut_dev import synthetic
    started = time.perf_counter()
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    summary = {"machine": machine(), "comfyui": comfyui_path()}
    precision = cpu_precision() if args.precision == "auto" else args.precision
    with OtherLoad([]) as train_load:
        model = train_etc(os.path.join(out, "etc"), args.train_steps, args.me_strength, args.batch, args.lr,
                          precision, args.warmup, args.schedule, args.unet)
    summary["etc_train"] = {"steps": args.train_steps, "lr": args.lr, "batch": args.batch, "warmup": args.warmup,
                            "schedule": args.schedule, "unet": args.unet or "default",
                            "seconds": round(model["train_seconds"], 1),
                            "loss_first_25": float(np.mean(model["losses"][:25])),
                            "loss_last_25": float(np.mean(model["losses"][-25:])), "me_strength": args.me_strength,
                            "precision": precision, "load": train_load.result}
    with ComfyServer(os.path.join(out, "comfy")) as server:
        files = install_etc(model, server.base)
        caption = synthetic.caption(*HELD_OUT)
        start = time.perf_counter()
        frames, records = sample_etc(server, files, caption, seed=0, batch=args.seeds, me_strength=args.me_strength)
        summary["etc_sample_seconds"] = round(time.perf_counter() - start, 1)
        for record in records:
            if record["filename"].endswith(".mp4"):
                shutil.copy(server.output_path(record.get("subfolder", ""), record["filename"]),
                            os.path.join(out, "etc_held_out.mp4"))
        frame_strip(frames[0], os.path.join(out, "etc_held_out_strip.png"))
        frame_strip(frames, os.path.join(out, "etc_held_out_seeds.png"))
        centres = [synthetic.square_centres(v) for v in frames]
        directions = [synthetic.motion_direction(c) for c in centres]
        # A grid cut in the wrong places (Table 2's "Err.") shows here as frames without exactly one square
        # (Table 2's seam metric does not suit a plain background: a square's edges are its strongest seams).
        summary["etc_held_out"] = {"caption": caption, "directions": directions,
                                   "correct": sum(d == HELD_OUT[1] for d in directions), "of": len(directions),
                                   "one_square_per_frame": sum(all(p is not None for p in c) for c in centres)}
        log(f"[etc] '{caption}': {summary['etc_held_out']['correct']}/{len(directions)} samples move "
            f"{HELD_OUT[1]} ({directions})")
        if not args.skip_svd:
            write_example_image(os.path.join(server.base, "input", "example.png"))
            summary["svd"] = svd_timings(server, args.svd_pairs)
            for name, overrides in SMOKE_OVERRIDES.items():
                prompt = workflow(name, overrides)
                if name == "etc_training_launch.json":
                    prompt = apply_overrides(prompt, tiny_training_inputs(server.base, "etc_runs/demo"))
                start = time.perf_counter()
                run(server.url, prompt, progress=lambda m, n=name: log(f"[{n}] {m}"))
                summary.setdefault("smoke_runs", {})[name] = round(time.perf_counter() - start, 1)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary_markdown(summary))
    log(summary_markdown(summary))
    return 0


def summary_markdown(summary: dict) -> str:
    held = summary["etc_held_out"]
    lines = [f"Machine: {summary['machine']}", "",
             f"ETC: {summary['etc_train']['steps']} training steps in {summary['etc_train']['seconds']} s "
             f"(mixed precision: {summary['etc_train']['precision']}) "
             f"(loss {summary['etc_train']['loss_first_25']:.3f} -> {summary['etc_train']['loss_last_25']:.3f}), "
             f"held-out caption '{held['caption']}': {held['correct']}/{held['of']} samples move that way, "
             f"{held['one_square_per_frame']}/{held['of']} have one square in every frame", ""]
    train_load = summary["etc_train"].get("load", {})
    if train_load.get("busy"):
        lines += [f"Training time taken while other processes used {train_load['other_processes_cores']:.2f} of "
                  f"{train_load['cores']} cores: slower than on an idle machine.", ""]
    if "svd" in summary:
        svd = summary["svd"]
        load = svd["load"]
        lines += [f"SVD ({svd['measured']}), seconds:", "",
                  "| graph | warm-up | runs (alternated) | median |", "|---|---:|---|---:|"]
        lines += [f"| {key} | {svd['warm_up'][key]:.2f} | {', '.join(f'{v:.2f}' for v in svd['runs'][key])} | "
                  f"{svd['median'][key]:.2f} |" for key in ("baseline", "vcut")]
        lines += ["", f"VCUT / baseline, median of {len(svd['pair_ratios'])} pairs: {svd['vcut_over_baseline']:.3f} "
                  f"(quartiles {svd['ratio_quartiles'][0]:.3f}-{svd['ratio_quartiles'][1]:.3f}, "
                  f"min {svd['ratio_min_max'][0]:.3f}, max {svd['ratio_min_max'][1]:.3f})", "",
                  f"Other processes used {load['other_processes_cores']:.2f} of {load['cores']} cores during the "
                  f"timing (1-min load average {load['loadavg_1min_before']:.2f} before, "
                  f"{load['loadavg_1min_after']:.2f} after): " +
                  ("the machine was BUSY, so these times and the ratio are not a fair measurement; rerun on an idle "
                   "machine" if load["busy"] else "the machine was otherwise idle")]
    lines += ["", f"Total: {summary['total_seconds']} s", ""]
    return "\n".join(lines)


def write_example_image(path: str):
    import cv2
    import numpy as np
    y, x = np.mgrid[0:64, 0:128]
    image = np.stack([x * 2, y * 4, 255 - x * 2], axis=-1).clip(0, 255).astype(np.uint8)
    cv2.imwrite(path, image)


if __name__ == "__main__":
    sys.exit(main())
