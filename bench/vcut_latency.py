#!/usr/bin/env python3
"""VCUT latency of a 25-step StableVideoDiffusionPipeline run, side by side in one process: baseline,
VCUT (SCA linear, TCA drop) without cutoff, and with guidance cutoff c = 20, 17, 10.

The UNet is SVD's full-size default config (random weights); the CLIP image encoder and the VAE are
small stand-ins so the UNet dominates, as it does in the real pipeline. On a CPU the video is reduced
(``--frames 8 --size 64``); on a GPU pass ``--device cuda --frames 14 --height 576 --size 1024``.

For each c the largest saving possible is (25 - c) * (t2 - t1) / t_baseline, where t2 and t1 are the
measured costs of a batch-2 and a batch-1 UNet pass: the uncond pass removed from every step from c on.
"""
import argparse
import json
import os
import platform

import torch
from PIL import Image
from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline,
                       UNetSpatioTemporalConditionModel)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

import vcut_core
from etc_vcut_dev.timing import median_seconds

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 25


def build(device, dtype):
    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel()
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(32, 32, 32, 32), layers_per_block=1,
                                       down_block_types=("DownEncoderBlock2D",) * 4, latent_channels=4)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=64, projection_dim=1024, num_hidden_layers=2,
                                                             num_attention_heads=2, image_size=224,
                                                             intermediate_size=128, patch_size=32))
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       prediction_type="v_prediction", use_karras_sigmas=True,
                                       timestep_spacing="leading", interpolation_type="linear", sigma_max=700.0,
                                       sigma_min=0.002, timestep_type="continuous")
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder, unet=unet, scheduler=scheduler,
                                        feature_extractor=CLIPImageProcessor())
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="width in pixels")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    height = args.height or args.size
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    pipe = build(device, dtype)
    # A PIL image takes the pipeline's own resize to the encoder's 224x224.
    image = Image.fromarray((torch.rand(height, args.size, 3) * 255).to(torch.uint8).numpy())
    kwargs = dict(height=height, width=args.size, num_frames=args.frames, num_inference_steps=STEPS,
                  decode_chunk_size=args.frames, output_type="pt")

    def run():
        with torch.no_grad():
            pipe(image, generator=torch.Generator().manual_seed(0), **kwargs)

    latent = torch.randn(2, args.frames, 8, height // 8, args.size // 8, device=device, dtype=dtype)
    ctx = torch.randn(2, 1, 1024, device=device, dtype=dtype)
    ids = torch.tensor([[6.0, 127.0, 0.02]] * 2, device=device, dtype=dtype)
    t = torch.tensor([1.0], device=device)

    def unet_pass(batch):
        def go():
            with torch.no_grad():
                pipe.unet(latent[:batch], t, ctx[:batch], ids[:batch])
        return go

    run()  # warm-up
    t2, t1 = median_seconds(unet_pass(2), 3, sync), median_seconds(unet_pass(1), 3, sync)
    results = {"baseline": median_seconds(run, args.repeats, sync)}
    vcut_core.apply_vcut(pipe.unet, "linear", "drop")
    results["VCUT, no cutoff"] = median_seconds(run, args.repeats, sync)
    for c in (20, 17, 10):
        vcut_core.enable_guidance_cutoff(pipe, c)
        results[f"VCUT, c={c}"] = median_seconds(run, args.repeats, sync)
        vcut_core.disable_guidance_cutoff(pipe)
    vcut_core.remove_vcut(pipe.unet)

    base = results["baseline"]
    rows = []
    print("| run | seconds | saving | largest possible | share of possible |")
    print("|---|---:|---:|---:|---:|")
    for name, value in results.items():
        c = int(name.split("c=")[1]) if "c=" in name else None
        possible = (STEPS - c) * (t2 - t1) / base if c is not None else None
        saving = 1 - value / base
        rows.append({"run": name, "seconds": value, "saving": saving, "possible": possible,
                     "share": saving / possible if possible else None})
        print(f"| {name} | {value:.2f} | {saving:.1%} | {'' if possible is None else f'{possible:.1%}'} | "
              f"{'' if possible is None else f'{saving / possible:.0%}'} |")
    machine = (torch.cuda.get_device_name() if device.type == "cuda"
               else f"CPU {platform.machine()}, {torch.get_num_threads()} threads")
    print(f"UNet pass: batch 2 {t2:.3f} s, batch 1 {t1:.3f} s; {args.frames} frames {args.size}x{height}; {machine}")
    with open(os.path.join(HERE, "results", f"vcut_latency_{device.type}.json"), "w") as f:
        json.dump({"machine": machine, "torch": torch.__version__, "dtype": str(dtype), "frames": args.frames,
                   "width": args.size, "height": height, "steps": STEPS, "unet_batch2_s": t2, "unet_batch1_s": t1,
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
