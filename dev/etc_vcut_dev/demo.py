#!/usr/bin/env python3
"""The first command: a tiny ETC model trained on synthetic motion and sampled in ComfyUI, plus a fair VCUT timing.

1. ETC: writes a synthetic caption-video set (coloured squares moving left/right/up/down, clips of 8 frames at
   4 or 8 fps, captioned stills and label folders; one colour/direction pair held out), builds a tiny SD 2.x-family
   base model (etc_vcut_dev.tiny_base), fine-tunes it with the pack's trainer (etc_core.train), puts the export
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
import json
import os
import platform
import shutil
import sys
import time

from etc_core.train.timesteps import TIMESTEP_SAMPLING
from etc_vcut_dev.client import apply_overrides, run
from etc_vcut_dev.comfy_host import REPO, ComfyServer, comfyui_path
from etc_vcut_dev.demo_model import (BATCH, EMA_DECAY, HELD_OUT, LR, SCHEDULE, TIMESTEPS, TRAIN_STEPS, WARMUP,
                                     WORD_SCALE, cpu_precision, frame_strip, install_etc, sample_etc, train_etc)
from etc_vcut_dev.svd_timing import SVD_PAIRS, OtherLoad, svd_timings
from etc_vcut_dev.tiny_workflows import SMOKE_OVERRIDES, tiny_training_inputs, workflow, write_example_image


def machine() -> str:
    import torch
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor() or platform.machine()) if os.path.exists("/proc/cpuinfo") else platform.machine()
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def log(message: str):
    print(message, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=TRAIN_STEPS)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--warmup", type=int, default=WARMUP, help="learning-rate warm-up steps")
    parser.add_argument("--schedule", choices=["constant", "cosine"], default=SCHEDULE, help="learning rate after "
                        "the warm-up")
    parser.add_argument("--timesteps", choices=TIMESTEP_SAMPLING, default=TIMESTEPS, help="how training draws "
                        "its timesteps (etc_core/train/timesteps.py)")
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
                          precision, args.warmup, args.schedule, args.unet, args.timesteps)
    summary["etc_train"] = {"steps": args.train_steps, "lr": args.lr, "batch": args.batch, "warmup": args.warmup,
                            "schedule": args.schedule, "timesteps": args.timesteps, "unet": args.unet or "default",
                            "ema_decay": EMA_DECAY, "text_word_scale": WORD_SCALE,
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
            summary["svd"] = svd_timings(server, args.svd_pairs, log)
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


if __name__ == "__main__":
    sys.exit(main())
