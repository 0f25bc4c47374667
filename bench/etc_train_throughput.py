#!/usr/bin/env python3
"""ETC training throughput and peak memory: SD 2.1-size UNet (random weights) on T-frame grids, bf16
autocast (fp32 on a CPU), gradient checkpointing, AdamW, mixed embedding + FPS module, batch 1 and up.

GPU (the paper's setting, goal: batch >= 2 within 24 GB at 16x256x256):
    python bench/etc_train_throughput.py --device cuda --size 256 --max-batch 16
CPU (reduced size, fp32; peak resident memory of a fresh process per batch size):
    python bench/etc_train_throughput.py --size 64 --max-batch 2
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
from etc_core import FPSConditionedTimeEmbedding, FPSEmbedding, MixedEmbeddingInput, parse_layout, sd2
from etc_vcut_dev.timing import etc_size_arguments

SD21 = sd2.UNET_SD21


def one_batch_size(device, size, frames, batch, precision, steps=2):
    """(seconds per step, peak bytes) for one batch size; raises torch.OutOfMemoryError if it does not fit."""
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    rows, cols = parse_layout(frames)
    unet = UNet2DConditionModel(**SD21).to(device)
    unet.enable_gradient_checkpointing()
    unet.conv_in = MixedEmbeddingInput(unet.conv_in, rows, cols)
    unet.time_embedding = FPSConditionedTimeEmbedding(unet.time_embedding, FPSEmbedding(1280).to(device), fps=8.0)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.9, 0.9), weight_decay=0.03)
    h = size // 8
    grid = torch.randn(batch, 4, rows * h, cols * h, device=device)
    text = torch.randn(batch, 77, 1024, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.mse_loss(unet(grid, t, text).sample.float(), grid)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return seconds, peak


def main():
    parser = etc_size_arguments(argparse.ArgumentParser())
    parser.add_argument("--max-batch", type=int, default=2)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default=None,
                        help="bf16 autocast (default on a GPU) or fp32 (default on a CPU, where bf16 is emulated)")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child process: one batch size
    args = parser.parse_args()
    device = torch.device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    if args.one is not None:
        print(json.dumps(one_batch_size(device, args.size, args.frames, args.one, precision)))
        return
    rows = []
    batch = 1
    while batch <= args.max_batch:
        # A fresh process per batch size, so each peak is its own.
        run = subprocess.run([sys.executable, __file__, "--device", args.device, "--size", str(args.size),
                              "--frames", str(args.frames), "--precision", precision, "--one", str(batch)],
                             capture_output=True, text=True)
        if run.returncode != 0:
            rows.append({"batch": batch, "fits": False, "error": run.stderr.strip().splitlines()[-1:]})
            break
        seconds, peak = json.loads(run.stdout.strip().splitlines()[-1])
        rows.append({"batch": batch, "fits": True, "seconds_per_step": seconds, "samples_per_s": batch / seconds,
                     "peak_gib": peak / 2**30})
        print(f"batch {batch}: {seconds:.2f} s/step, {batch / seconds:.3f} samples/s, peak {peak / 2**30:.1f} GiB",
              flush=True)
        batch *= 2
    machine = (torch.cuda.get_device_name() if device.type == "cuda"
               else f"CPU {platform.machine()}, {torch.get_num_threads()} threads (peak = process RSS)")
    with open(os.path.join(HERE, "results", f"etc_train_throughput_{device.type}_{args.size}.json"), "w") as f:
        json.dump({"machine": machine, "torch": torch.__version__, "frames": args.frames, "size": args.size,
                   "precision": f"{precision} (autocast over fp32 master weights when bf16), gradient checkpointing, "
                                "AdamW", "rows": rows},
                  f, indent=1)


if __name__ == "__main__":
    main()
