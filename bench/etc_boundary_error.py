#!/usr/bin/env python3
"""Frame-boundary error (ETC Table 2, "Err.") with and without the mixed embedding, on a synthetic set.

Two copies of one tiny SD-layout model (random init, same seed) are fine-tuned with ``etc_core.train`` on
moving squares over a shaded background (16 frames in a 4x4 grid), one with the mixed embedding and
one with it switched off (strength 0). Each then generates grids (DDIM, no guidance), and
``boundary_error_rate`` counts the grids whose strongest seams are not at the frame boundaries. The
shaded background makes every frame boundary a seam, so the training grids themselves score 0%.

A random tiny VAE's latents show no picture structure at all (the metric scores its encodings of the
training grids 100% wrong), so the base model's VAE is the demo's constructed TAESD
(``tiny_base.pooling_tiny_vae``: the frame average-pooled by 8, minus a mid grey, in the pixel units of
[-1, 1], with the luma in its fourth channel), read by the trainer as any TAESD; the metric runs on the
generated latent grids.

    python bench/etc_boundary_error.py            # CPU, a few minutes
"""
import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
from etc_core import boundary_error_rate, pack
from etc_core.train import Trainer, TrainConfig
from etc_core.files.video_io import write_video
from etc_vcut_dev.synthetic import moving_square
from etc_vcut_dev.tiny_base import pooling_tiny_vae
from etc_vcut_dev.tiny_diffusers import write_tiny_sd

MID_GREY = (120, 120, 120)  # the shaded background's middle
LATENT_SCALE = 0.3
COLORS = {"red": (230, 40, 40), "green": (40, 230, 40), "blue": (40, 40, 230), "yellow": (230, 230, 40)}
FRAMES, LAYOUT, SIZE = 16, "4x4", 32


def shaded_square_video(color, dx: int, dy: int, length: int = 48) -> np.ndarray:
    """[length, SIZE, SIZE, 3] uint8: a square moving by (dx, dy) per frame over a dark-to-light shade."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    shade = (20 + 110 * x / (SIZE - 1) + 90 * y / (SIZE - 1)).round().astype(np.uint8)[:, :, None]
    positions = [((4 + dx * t) % (SIZE - 10), (4 + dy * t) % (SIZE - 10)) for t in range(length)]
    return moving_square(positions, 10, color, SIZE, background=shade)


def videos():
    """{(colour name, motion): frames} of the data set."""
    return {(name, motion): shaded_square_video(color, dx, dy) for name, color in COLORS.items()
            for dx, dy, motion in ((1, 0, "right"), (0, 1, "down"))}


def write_pooling_vae(pretrained: str):
    """Put the pooling TAESD in place of ``pretrained``'s VAE, its latents in the pixel units of [-1, 1]
    and every channel a picture: with a constant fourth channel, generated noise there drowns the seams
    (57.8% and 59.4% wrong with and without the mixed embedding, measured)."""
    vae = pooling_tiny_vae(MID_GREY, scale=LATENT_SCALE, luma=True)
    vae.register_to_config(scaling_factor=2.0 / LATENT_SCALE)  # [0, 1] -> [-1, 1] units, undoing the scale
    shutil.rmtree(os.path.join(pretrained, "vae"))
    vae.save_pretrained(os.path.join(pretrained, "vae"))


def write_data(folder: str) -> str:
    os.makedirs(folder)
    lines = []
    for (name, motion), video in videos().items():
        path = os.path.join(folder, f"{name}_{motion}.mp4")
        write_video(path, video, 30.0)
        lines.append(json.dumps({"video": path, "caption": f"a {name} square moving {motion}"}) + "\n")
    manifest = os.path.join(folder, "videos.jsonl")
    with open(manifest, "w") as f:
        f.writelines(lines)
    return manifest


@torch.no_grad()
def generate(trainer: Trainer, captions, steps: int, seed: int) -> torch.Tensor:
    """Latent grids [N, 4, H, W] from pure noise with DDIM, conditioned on ``captions``, fps 8."""
    from diffusers import DDIMScheduler
    unet = trainer.accelerator.unwrap_model(trainer.unet).eval()
    # The stand-in's latents are pixels in [-1, 1], so x0 is clipped to that range as pixel-space DDIM does
    # (diffusers' default, which the tiny SD's scheduler had until it took SD's own schedule, clip_sample off).
    scheduler = DDIMScheduler.from_config(trainer.noise_scheduler.config, clip_sample=True)
    scheduler.set_timesteps(steps)
    tokens = trainer.tokenizer(captions, padding="max_length", max_length=trainer.tokenizer.model_max_length,
                               truncation=True, return_tensors="pt")
    text = trainer.text_encoder(tokens.input_ids)[0]
    unet.time_embedding.fps = torch.full((len(captions),), 8.0)
    side = SIZE // 8
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(len(captions), 4, trainer.rows * side, trainer.cols * side, generator=generator)
    for t in scheduler.timesteps:
        latents = scheduler.step(unet(latents, t, text).sample, t, latents).prev_sample
    return latents


def run(pretrained, manifest, out, mixed_embedding: bool, args):
    config = TrainConfig(pretrained=pretrained, output_dir=out, video_manifest=manifest, ratios=(1.0, 0.0, 0.0),
                         frames=FRAMES, layout=LAYOUT, resolution=SIZE, lr=args.lr, batch_size=args.batch,
                         max_steps=args.steps, checkpoint_every=10**9, seed=0, cache_latents=True)
    trainer = Trainer(config)
    if not mixed_embedding:
        trainer.accelerator.unwrap_model(trainer.unet).conv_in.strength = 0.0
    start = time.perf_counter()
    losses = trainer.train()
    seconds = time.perf_counter() - start
    captions = [f"a {name} square moving {motion}" for name in COLORS for motion in ("right", "down")]
    captions = (captions * (args.samples // len(captions) + 1))[:args.samples]
    grids = generate(trainer, captions, args.sampling_steps, seed=1)
    return {"train_seconds": seconds, "loss_first_10": float(np.mean(losses[:10])),
            "loss_last_10": float(np.mean(losses[-10:])),
            "boundary_error": boundary_error_rate(grids, trainer.rows, trainer.cols)}, trainer


def training_grid_error(trainer: Trainer, count: int) -> float:
    grids = []
    for i in range(count):
        batch = trainer.data.batch([10**6 + i])
        with torch.no_grad():
            latents = trainer.vae.encode(batch["pixels"].flatten(0, 1)).latent_dist.mean
        grids.append(pack(latents[None], trainer.rows, trainer.cols)[0])
    return boundary_error_rate(grids, trainer.rows, trainer.cols)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--sampling-steps", type=int, default=25)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        pretrained = write_tiny_sd(os.path.join(tmp, "sd"))
        write_pooling_vae(pretrained)
        manifest = write_data(os.path.join(tmp, "data"))
        results = {}
        for name, me in (("with ME", True), ("without ME", False)):
            results[name], trainer = run(pretrained, manifest, os.path.join(tmp, name.replace(" ", "_")), me, args)
        data_error = training_grid_error(trainer, 32)
    import diffusers
    result = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
                         f"diffusers {diffusers.__version__}",
              "frames": FRAMES, "layout": LAYOUT, "frame_size": SIZE, "steps": args.steps, "batch": args.batch,
              "lr": args.lr, "samples": args.samples, "sampling_steps": args.sampling_steps,
              "training_grids_error": data_error, "runs": results}
    print(f"| run | train s | loss (first 10 -> last 10 steps) | boundary error ({args.samples} grids) |")
    print("|---|---:|---|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['train_seconds']:.0f} | {r['loss_first_10']:.3f} -> {r['loss_last_10']:.3f} | "
              f"{r['boundary_error']:.1%} |")
    print(f"training grids themselves: {data_error:.0%} error (32 grids)")
    with open(os.path.join(HERE, "results", "etc_boundary_error.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
