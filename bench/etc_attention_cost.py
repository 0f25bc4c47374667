#!/usr/bin/env python3
"""ETC Table 3: one grid attention [1, T*h*w, C] (image diffusion on the packed grid) vs spatial
[T, h*w, C] + temporal [h*w, T, C] attention (video diffusion), C = 4, at the paper's four settings.

Each attention is q/k/v projections ([C, C]) plus scaled-dot-product attention. Times are for 1000
inferences, extrapolated from as many runs as fit in about a second per shape on this machine; the
analytic cost is the paper's 2*B*L*C*(4C + L) FLOPs.
"""
import json
import os
import platform
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
C = 4
SETTINGS = [("Base (F=16, Res=256)", 16, 1024), ("Long video (F=32, Res=256)", 32, 1024),
            ("High res (F=16, Res=512)", 16, 2048), ("High quality (F=32, Res=512)", 32, 2048)]
PAPER = {"Base (F=16, Res=256)": (6.453, 2.166, 0.947), "Long video (F=32, Res=256)": (24.710, 4.209, 0.941),
         "High res (F=16, Res=512)": (24.710, 9.196, 0.971), "High quality (F=32, Res=512)": (99.212, 18.252, 1.571)}


def attention_seconds_per_1000(batch, length, budget=1.0):
    w = torch.randn(3, C, C)
    x = torch.randn(batch, length, C)

    def once():
        q, k, v = (x @ w[i] for i in range(3))
        return F.scaled_dot_product_attention(q, k, v)

    once()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget or runs < 2:
        once()
        runs += 1
    return (time.perf_counter() - start) / runs * 1000, runs


def flops(batch, length):
    return 2 * batch * length * C * (4 * C + length)


def main():
    torch.manual_seed(0)
    rows = []
    print("| setting | grid [1, T*hw, 4] s/1000 | spatial [T, hw, 4] | temporal [hw, T, 4] | spatial+temporal | "
          "grid / (spatial+temporal) | FLOPs ratio | paper ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with torch.no_grad():
        for name, frames, hw in SETTINGS:
            grid, _ = attention_seconds_per_1000(1, frames * hw)
            spatial, _ = attention_seconds_per_1000(frames, hw)
            temporal, _ = attention_seconds_per_1000(hw, frames)
            paper = PAPER[name]
            row = {"setting": name, "grid_s": grid, "spatial_s": spatial, "temporal_s": temporal,
                   "ratio": grid / (spatial + temporal),
                   "flops_ratio": flops(1, frames * hw) / (flops(frames, hw) + flops(hw, frames)),
                   "paper_ratio": paper[0] / (paper[1] + paper[2])}
            rows.append(row)
            print(f"| {name} | {grid:.2f} | {spatial:.2f} | {temporal:.2f} | {spatial + temporal:.2f} | "
                  f"{row['ratio']:.2f} | {row['flops_ratio']:.2f} | {row['paper_ratio']:.2f} |")
    with open(os.path.join(HERE, "results", "etc_attention_cost.json"), "w") as f:
        json.dump({"machine": f"CPU {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
