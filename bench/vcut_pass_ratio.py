#!/usr/bin/env python3
"""Time of one UNet pass with and without VCUT (SCA linear, TCA drop), side by side, per model family.

Each family's full-size UNet (the configs of ``vcut_macs.py``, random weights), batch 1, passes
alternated (baseline, VCUT) after one untimed pass of each, medians. Zero123 runs at its native
256x256; on a CPU the video families run reduced (``--frames 4 --size 64``: one native SVD pass is
minutes on 2 cores). On a GPU: ``python bench/vcut_pass_ratio.py --device cuda --native``.
"""
import argparse
import json
import os
import platform
import statistics
import time

import torch

import vcut_core
from vcut_macs import FAMILIES, _build  # the benchmark beside this one

HERE = os.path.dirname(os.path.abspath(__file__))


def _timed(fn, sync):
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure(family, frames, height, width, ids, device, repeats):
    """{seconds baseline, seconds VCUT, ratio} of one pass of ``family``'s UNet."""
    torch.manual_seed(0)
    unet, args, owner = _build(frames, height, width, ids)
    unet, args = unet.to(device).eval(), tuple(a.to(device) for a in args)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = {"baseline": [], "vcut": []}
    with torch.no_grad():
        for i in range(repeats + 1):  # the first round warms up (and fills the VCUT cache)
            for kind in times:
                if kind == "vcut":
                    vcut_core.apply_vcut(unet, "linear", "drop", owner)
                else:
                    vcut_core.remove_vcut(unet)
                seconds = _timed(lambda: unet(*args), sync)
                if i:
                    times[kind].append(seconds)
    base, vcut = statistics.median(times["baseline"]), statistics.median(times["vcut"])
    return {"family": family, "frames": frames or 1, "height": height, "width": width, "seconds_baseline": base,
            "seconds_vcut": vcut, "vcut_over_baseline": vcut / base}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--native", action="store_true", help="every family at its native size")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--families", default="svd,sv3d_u,sv3d_p,zero123")
    args = parser.parse_args()
    rows = []
    for family in args.families.split(","):
        frames, height, width, ids = FAMILIES[family]
        if frames is not None and not args.native:
            frames, height, width = args.frames, args.size, args.size
        rows.append(measure(family, frames, height, width, ids, args.device, args.repeats))
        r = rows[-1]
        print(f"| {family} | {r['frames']} | {width}x{height} | {r['seconds_baseline']:.3f} | {r['seconds_vcut']:.3f} | "
              f"{r['vcut_over_baseline']:.3f} |", flush=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    name = f"vcut_pass_ratio_{'cuda' if args.device.startswith('cuda') else 'cpu'}.json"
    with open(os.path.join(HERE, "results", name), "w") as f:
        json.dump({"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                              f"{torch.get_num_threads()} threads", "torch": torch.__version__, "device": args.device,
                   "repeats": args.repeats, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
