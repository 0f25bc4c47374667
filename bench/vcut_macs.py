#!/usr/bin/env python3
"""VCUT Table II: parameters of the full-size SVD UNet, parameters VCUT leaves unused, and
multiply-accumulates per UNet pass at 576x1024, baseline vs VCUT (SCA linear, TCA drop).

Runs on fake tensors (shapes only: no weights, no memory, no compute): diffusers' UNetSpatioTemporalConditionModel with
SVD's default config, MACs counted by torch.utils.flop_counter (MACs = FLOPs / 2). With VCUT the
SCA/TCA outputs come from the cache after the first step, so their cost per step is removed; the
one-time projection (a few MACs per distinct CLIP token) is reported separately.
"""
import json
import os
import platform

import torch
from diffusers import UNetSpatioTemporalConditionModel
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

import vcut_core

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(frames: int, height: int = 576, width: int = 1024):
    with FakeTensorMode(allow_non_fake_inputs=True):
        unet = UNetSpatioTemporalConditionModel()
        x = torch.randn(1, frames, 8, height // 8, width // 8)
        ctx, ids = torch.randn(1, 1, 1024), torch.randn(1, 3)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            unet(x, torch.tensor([1.0]), ctx, ids)
    per_module = counter.get_flop_counts()
    sites = vcut_core.find_cross_attentions(unet)
    attn_flops = {kind: sum(sum(per_module.get(f"UNetSpatioTemporalConditionModel.{n}", {}).values()) for n in names)
                  for kind, names in (("sca", sites.sca), ("tca", sites.tca))}
    total = counter.get_total_flops()
    params = sum(p.numel() for p in unet.parameters())
    return {
        "frames": frames, "height": height, "width": width,
        "params": params, "unused_params_vcut": vcut_core.unused_parameters(unet, "linear", "drop"),
        "sca_sites": len(sites.sca), "tca_sites": len(sites.tca),
        "macs_baseline_T": total / 2e12,
        "macs_vcut_T": (total - attn_flops["sca"] - attn_flops["tca"]) / 2e12,
        "macs_sca_T": attn_flops["sca"] / 2e12, "macs_tca_T": attn_flops["tca"] / 2e12,
    }


def main():
    rows = [measure(14), measure(25)]
    print("| frames | params (B) | unused by VCUT (M) | MACs/pass baseline (T) | VCUT (T) | saved (T) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['frames']} | {r['params'] / 1e9:.3f} | {r['unused_params_vcut'] / 1e6:.1f} | "
              f"{r['macs_baseline_T']:.2f} | {r['macs_vcut_T']:.2f} | {r['macs_baseline_T'] - r['macs_vcut_T']:.2f} |")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "vcut_macs.json"), "w") as f:
        json.dump({"machine": f"fake tensors (shape-level count, no timing), {platform.machine()}", "torch": torch.__version__,
                   "paper_table_II": {"14": [36.1, 35.1], "25": [64.4, 62.9], "params_B": 1.52, "unused_M": 50},
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
