#!/usr/bin/env python3
"""ETC speed, side by side in one process:

1. overhead of mixed embedding + FPS embedding over the bare UNet on the same grid latent (goal <= 2%);
2. ETC (SD 2.1 UNet on the T-frame grid) vs diffusers' UNet3DConditionModel (the ModelScope
   architecture, spatial + temporal layers) at the same frames and resolution: frames per second of a
   25-step generation with classifier-free guidance (paper: ETC 1.92, ModelScope 0.55 at 16x256x256).

Both UNets use their full-size default configs with random weights. On a CPU the resolution is reduced
(``--size``, default 64 px, 16 frames); on a GPU pass ``--device cuda --size 256``.
"""
import argparse
import json
import os
import platform
import statistics

import torch
from diffusers import UNet2DConditionModel, UNet3DConditionModel

from etc_core import FPSConditionedTimeEmbedding, FPSEmbedding, MixedEmbeddingInput, parse_layout, sd2
from etc_vcut_dev.timing import etc_size_arguments, median_seconds

HERE = os.path.dirname(os.path.abspath(__file__))
SD21 = sd2.UNET_SD21
STEPS = 25


def main():
    parser = etc_size_arguments(argparse.ArgumentParser())
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    rows, cols = parse_layout(args.frames)
    h = w = args.size // 8
    unet = UNet2DConditionModel(**SD21).to(device, dtype).eval()
    unet3d = UNet3DConditionModel().to(device, dtype).eval()
    params = {"etc_unet": sum(p.numel() for p in unet.parameters()),
              "modelscope_unet3d": sum(p.numel() for p in unet3d.parameters())}
    grid = torch.randn(2, 4, rows * h, cols * w, device=device, dtype=dtype)
    video = torch.randn(2, 4, args.frames, h, w, device=device, dtype=dtype)
    text = torch.randn(2, 77, 1024, device=device, dtype=dtype)
    t = torch.tensor([500], device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def call(model, x):
        def run():
            with torch.no_grad():
                model(x, t, text)
            sync()
        return run

    bare_conv, bare_temb = unet.conv_in, unet.time_embedding
    etc_conv = MixedEmbeddingInput(bare_conv, rows, cols)
    fps_module = FPSEmbedding(bare_temb.linear_2.out_features).to(device, dtype)
    torch.nn.init.normal_(fps_module.mlp[-1].weight, std=0.02)  # a trained-looking module, not a zero no-op
    etc_temb = FPSConditionedTimeEmbedding(bare_temb, fps_module, fps=8)
    bare, etc = [], []
    for _ in range(args.repeats):  # alternate, so drift hits both alike
        unet.conv_in, unet.time_embedding = bare_conv, bare_temb
        bare.append(median_seconds(call(unet, grid), 1, warmup=True))
        unet.conv_in, unet.time_embedding = etc_conv, etc_temb
        etc.append(median_seconds(call(unet, grid), 1, warmup=True))
    t_bare, t_etc = statistics.median(bare), statistics.median(etc)
    t_3d = median_seconds(call(unet3d, video), args.repeats, warmup=True)
    result = {
        "machine": f"{device.type} {torch.cuda.get_device_name() if device.type == 'cuda' else platform.machine()}, "
                   f"{torch.get_num_threads()} threads, torch {torch.__version__}, {dtype}",
        "frames": args.frames, "size": args.size, "layout": f"{rows}x{cols}", "params": params,
        "unet_pass_s": {"bare": t_bare, "etc": t_etc, "unet3d": t_3d},
        "me_fps_overhead": t_etc / t_bare - 1,
        "fps_etc": args.frames / (STEPS * t_etc), "fps_modelscope": args.frames / (STEPS * t_3d),
    }
    result["speedup"] = result["fps_etc"] / result["fps_modelscope"]
    print("| model | params (B) | s per CFG pass | frames/s (25 steps) |")
    print("|---|---:|---:|---:|")
    print(f"| SD 2.1 UNet, bare | {params['etc_unet'] / 1e9:.3f} | {t_bare:.3f} | |")
    print(f"| ETC (+ ME + FPS) | {params['etc_unet'] / 1e9:.3f} | {t_etc:.3f} | {result['fps_etc']:.3f} |")
    print(f"| UNet3D (ModelScope) | {params['modelscope_unet3d'] / 1e9:.3f} | {t_3d:.3f} | {result['fps_modelscope']:.3f} |")
    print(f"ME + FPS overhead: {result['me_fps_overhead']:+.2%}; ETC / ModelScope frames/s: {result['speedup']:.2f}x "
          f"({args.frames} frames of {args.size}x{args.size}, {result['machine']})")
    with open(os.path.join(HERE, "results", f"etc_speed_{device.type}_{args.size}.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
