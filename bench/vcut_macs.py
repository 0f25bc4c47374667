#!/usr/bin/env python3
"""VCUT Table II for every model family VCUT supports: parameters of the full-size UNet, parameters VCUT
leaves unused, and multiply-accumulates per UNet pass at the family's native size, baseline vs VCUT
(SCA linear, TCA drop).

Runs on fake tensors (shapes only: no weights, no memory, no compute): diffusers' UNets with each
family's configuration, MACs counted by torch.utils.flop_counter (MACs = FLOPs / 2). With VCUT the
SCA/TCA outputs come from the cache after the first step, so their cost per pass is removed; the
one-time projection (a few MACs per distinct CLIP token) is not counted.

- SVD (14 frames) and SVD-XT / SVD-XT 1.1 (25 frames, the same UNet), 576x1024;
- SV3D_u / SV3D_p: SVD's UNet at 21 views of 576x576, added conditioning 256 / 1280 wide;
- Stable Zero123: the SD 1.x UNet, 8 input channels (the image latent concatenated), one 768-wide
  context token from cc_projection, 256x256, one view per pass; no temporal layers.
"""
import json
import os
import platform
from types import SimpleNamespace

import torch
from diffusers import UNet2DConditionModel, UNetSpatioTemporalConditionModel
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

import vcut_core

HERE = os.path.dirname(os.path.abspath(__file__))
# name: (frames, height, width, added-conditioning ids of 256 each); None frames: Zero123's image UNet.
FAMILIES = {"svd": (14, 576, 1024, 3), "svd_xt": (25, 576, 1024, 3), "sv3d_u": (21, 576, 576, 1),
            "sv3d_p": (21, 576, 576, 5), "zero123": (None, 256, 256, 0)}


def _build(frames, height, width, ids):
    """(unet, call arguments, owner) of one family, on fake tensors (call inside FakeTensorMode)."""
    if frames is None:
        unet = UNet2DConditionModel(in_channels=8, cross_attention_dim=768)
        # What the detection reads on Zero123: a context projection as wide as the UNet's context.
        owner = SimpleNamespace(cc_projection=torch.nn.Linear(768 + 4, 768))
        return unet, (torch.randn(1, 8, height // 8, width // 8), torch.tensor([1.0]), torch.randn(1, 1, 768)), owner
    unet = UNetSpatioTemporalConditionModel(projection_class_embeddings_input_dim=256 * ids)
    args = (torch.randn(1, frames, 8, height // 8, width // 8), torch.tensor([1.0]), torch.randn(1, 1, 1024),
            torch.randn(1, ids))
    return unet, args, None


def measure(family: str):
    frames, height, width, ids = FAMILIES[family]
    with FakeTensorMode(allow_non_fake_inputs=True):
        unet, args, owner = _build(frames, height, width, ids)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            unet(*args)
    per_module = counter.get_flop_counts()
    sites = vcut_core.find_cross_attentions(unet, owner)
    prefix = type(unet).__name__
    attn_flops = {kind: sum(sum(per_module.get(f"{prefix}.{n}", {}).values()) for n in names)
                  for kind, names in (("sca", sites.sca), ("tca", sites.tca))}
    total = counter.get_total_flops()
    params = sum(p.numel() for p in unet.parameters())
    return {
        "family": family, "frames": frames or 1, "height": height, "width": width,
        "params": params, "unused_params_vcut": vcut_core.unused_parameters(unet, "linear", "drop", owner),
        "sca_sites": len(sites.sca), "tca_sites": len(sites.tca),
        "macs_baseline_T": total / 2e12,
        "macs_vcut_T": (total - attn_flops["sca"] - attn_flops["tca"]) / 2e12,
        "macs_sca_T": attn_flops["sca"] / 2e12, "macs_tca_T": attn_flops["tca"] / 2e12,
    }


def main():
    rows = [measure(family) for family in FAMILIES]
    print("| family | frames | size | params (B) | unused by VCUT (M) | MACs/pass baseline (T) | VCUT (T) | saved |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        saved = r["macs_baseline_T"] - r["macs_vcut_T"]
        print(f"| {r['family']} | {r['frames']} | {r['width']}x{r['height']} | {r['params'] / 1e9:.3f} | "
              f"{r['unused_params_vcut'] / 1e6:.1f} | {r['macs_baseline_T']:.3f} | {r['macs_vcut_T']:.3f} | "
              f"{saved:.3f} T ({100 * saved / r['macs_baseline_T']:.1f}%) |")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "vcut_macs.json"), "w") as f:
        json.dump({"machine": f"fake tensors (shape-level count, no timing), {platform.machine()}", "torch": torch.__version__,
                   "paper_table_II": {"14": [36.1, 35.1], "25": [64.4, 62.9], "params_B": 1.52, "unused_M": 50},
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
