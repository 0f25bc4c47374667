#!/usr/bin/env python3
"""The memory estimates against the real peak, on the CPU: the trainer's (etc_core.train.memory_estimate,
what ETCTrainer refuses by) and the sampler's (etc_core.memory, what ETCSampler refuses by).

Each size runs in a fresh process. Trainer: one step of the real trainer (etc_core.train.Trainer) on the tiny diffusers SD and
synthetic data, from before the trainer is made (everything imported). Sampler: one ETCSampler prompt
(1 step, VAE decode) on ComfyUI's executor in this process with the tiny SD 2.x test model, from before the
prompt (models already loaded by a 4-frame warm-up). Peak = the process's anonymous resident memory
(RssAnon: tensors, not the shared libraries' pages, which the kernel drops and reloads under memory
pressure), sampled every 2 ms, above its level at the start. ratio = estimate / peak: below 1 is the
floor the estimates are meant to be.

    python bench/etc_memory_estimates.py            # both; ETCVCUT_HOST picks the ComfyUI host
    python bench/etc_memory_estimates.py --only train
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

from etc_vcut_dev.peak_memory import PeakMemory

HERE = os.path.dirname(os.path.abspath(__file__))
# (model, frames, resolution, gradient checkpointing): the tiny model's VAE dominates its peak, the SD-layout
# model's UNet (width 320, SD 2.x's blocks) dominates its own
TRAIN_SIZES = [("tiny", 4, 32, False), ("tiny", 16, 64, False), ("tiny", 16, 128, False), ("tiny", 64, 128, True),
               ("tiny", 16, 256, True), ("sd-layout", 4, 64, False), ("sd-layout", 16, 64, False),
               ("sd-layout", 16, 64, True), ("sd-layout", 16, 128, True)]
# up to 1/16 of the pixels of the 256 frames of 512x512 issue 27 asked about (256 x 256 x 256 took 6 GB and
# 9 minutes on the 2-core, 24 GB machine shared with others, and was stopped)
SAMPLE_SIZES = [(16, 128), (64, 128), (256, 128), (16, 256), (64, 256)]


def anonymous_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


def train_one(root: str, model: str, frames: int, resolution: int, checkpointing: bool) -> dict:
    import accelerate  # noqa: F401  (imported before the baseline, as everything the trainer loads)
    import cv2  # noqa: F401
    import diffusers  # noqa: F401
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401
    from transformers import CLIPTextModel  # noqa: F401
    from etc_core.train import Trainer, TrainConfig
    from etc_core.train.memory_estimate import model_sizes, training_bytes
    torch.set_num_threads(2)
    run = f"run_{model}_{frames}_{resolution}_{int(checkpointing)}"
    values = dict(pretrained=os.path.join(root, model), output_dir=os.path.join(root, run),
                  video_manifest=os.path.join(root, "data", "videos.jsonl"), frames=frames, resolution=resolution,
                  max_steps=1, checkpoint_every=10, checkpoint_minutes=0, gradient_checkpointing=checkpointing,
                  ratios=(1.0, 0.0, 0.0))
    config = TrainConfig.from_dict(values)
    estimate = training_bytes(model_sizes(config.pretrained), frames, resolution, 1, checkpointing)
    with PeakMemory(anonymous_rss, 0.002) as measured:
        trainer = Trainer(config, cpu=True, single_process=True, log=lambda line: None)
        trainer.train()
    peak = measured.growth
    return {"model": model, "frames": frames, "resolution": resolution, "gradient_checkpointing": checkpointing,
            "estimate_mib": estimate / 2**20, "peak_mib": peak / 2**20, "ratio": estimate / peak}


def sample_one(root: str, frames: int, size: int) -> dict:
    import torch
    from etc_core.memory import frames_bytes, sampling_bytes
    from etc_vcut_dev.graphs import etc_graph
    from etc_vcut_dev.inprocess import InProcessComfy
    torch.set_num_threads(2)
    comfy = InProcessComfy(os.path.join(root, f"comfy_{frames}_{size}"))
    comfy.run(etc_graph(frames=4, layout="auto", size=32, steps=1, video=False, prefix="warm"))
    probes = next(m for name, m in sys.modules.items() if name.endswith(".nodes.host_probes"))
    model, _, vae = comfy.nodes.NODE_CLASS_MAPPINGS["ETCVCUTTestTinySD2"]().load(0)
    element, attention = probes.compute_element_bytes(model), probes.attention_kind()
    latent = size // 8
    estimate = (sampling_bytes(model.model.diffusion_model, 1, 4, frames * latent, latent, element, attention)
                + probes.decode_bytes(vae, size, size) + frames_bytes(frames, 1, size, size))  # as ETCSampler counts
    with PeakMemory(anonymous_rss, 0.002) as measured:
        comfy.run(etc_graph(frames=frames, layout="auto", size=size, steps=1, video=False, prefix="measured"))
    grown = measured.growth
    return {"frames": frames, "size": size, "attention": attention, "estimate_mib": estimate / 2**20,
            "peak_mib": grown / 2**20, "ratio": estimate / grown}


def child(kind: str, root: str, size: tuple) -> dict:
    run = subprocess.run([sys.executable, __file__, "--child", kind, root, json.dumps(size)], capture_output=True,
                         text=True)
    row = (json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else
           {"size": size, "error": run.stderr.strip().splitlines()[-1:]})
    print(json.dumps(row), flush=True)
    return row


def table(rows, keys):
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(f"{row[k]:.2f}" if isinstance(row.get(k), float) else str(row.get(k)) for k in keys))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["train", "sample"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, root, size = args.child
        print(json.dumps((train_one if kind == "train" else sample_one)(root, *json.loads(size))))
        return
    from etc_vcut_dev.comfy_host import comfyui_path
    from etc_vcut_dev.tiny_diffusers import write_synthetic_data, write_tiny_sd
    result = {"machine": f"CPU {platform.machine()}, 2 threads", "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as root:
        if args.only != "sample":
            write_tiny_sd(os.path.join(root, "tiny"))
            write_tiny_sd(os.path.join(root, "sd-layout"), sd_layout=True)
            write_synthetic_data(os.path.join(root, "data"))
            rows = [child("train", root, size) for size in TRAIN_SIZES]
            table(rows, ["model", "frames", "resolution", "gradient_checkpointing", "estimate_mib", "peak_mib",
                         "ratio"])
            result["trainer"] = {"models": "dev/etc_vcut_dev/tiny_diffusers.write_tiny_sd: tiny, and sd_layout=True "
                                           "(SD 2.x's UNet blocks at width 320)", "rows": rows}
        if args.only != "train":
            rows = [child("sample", root, size) for size in SAMPLE_SIZES]
            table(rows, ["frames", "size", "attention", "estimate_mib", "peak_mib", "ratio"])
            result["sampler"] = {"model": "tiny SD 2.x test model (ETCVCUTTestTinySD2), ETCSampler 1 step + decode",
                                 "host": os.path.basename(comfyui_path()), "rows": rows}
    name = "etc_memory_estimates_cpu" + (f"_{args.only}" if args.only else "") + ".json"
    with open(os.path.join(HERE, "results", name), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
