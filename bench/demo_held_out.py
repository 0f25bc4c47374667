#!/usr/bin/env python3
"""The demo's held-out result along one training run: how many of 10 seeds of the held-out caption move its way.

Trains the demo's model (etc_vcut_dev.demo_model: synthetic set, tiny base, etc_core.train) with the recipe
given, pauses at each ``--evals`` step to export it into one ComfyUI server and sample the held-out caption
with the demo's graph (10 seeds, 20 euler steps, cfg 4 unless ``--cfgs``), then goes on. Prints one row per
evaluation (seeds moving up, seeds with one square in every frame, their directions, the loss of the last 25
steps, training seconds so far) and writes bench/results/demo_held_out_<name>.json. One run is one draw:
neighbouring recipes differ by several seeds (docs/demo-timing.md).

    .venv/bin/python bench/demo_held_out.py --name default --evals 150 200 250 300
"""
import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    from etc_core.train.timesteps import TIMESTEP_SAMPLING
    from etc_vcut_dev import demo_model, synthetic
    from etc_vcut_dev.comfy_host import ComfyServer
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="names the result file")
    parser.add_argument("--evals", type=int, nargs="+", required=True, help="steps at which to sample")
    parser.add_argument("--batch", type=int, default=demo_model.BATCH)
    parser.add_argument("--lr", type=float, default=demo_model.LR)
    parser.add_argument("--warmup", type=int, default=demo_model.WARMUP)
    parser.add_argument("--schedule", choices=["constant", "cosine"], default=demo_model.SCHEDULE)
    parser.add_argument("--cosine-to", type=int, help="the cosine's end (max_steps; default: the last eval)")
    parser.add_argument("--timesteps", choices=TIMESTEP_SAMPLING, default=demo_model.TIMESTEPS,
                        help="how training draws its timesteps (etc_core/train/timesteps.py)")
    parser.add_argument("--precision", choices=["auto", "bf16", "no"], default="auto")
    parser.add_argument("--unet", help="a layout of tiny_base.UNET_LAYOUTS (default: the demo's)")
    parser.add_argument("--word-scale", type=float, default=demo_model.WORD_SCALE,
                        help="the text encoder's word-embedding scale (tiny_base.text_encoder; 1: a plain random tower)")
    parser.add_argument("--ema", type=float, default=demo_model.EMA_DECAY,
                        help="the trainer's ema_decay (0: export the live weights)")
    parser.add_argument("--cfgs", type=float, nargs="+", default=[4.0])
    parser.add_argument("--also", nargs="*", default=[], metavar="COLOUR:DIRECTION",
                        help="more captions to score at each step, e.g. red:left red:right red:down (tests/test_demo.py's)")
    args = parser.parse_args()
    precision = demo_model.cpu_precision() if args.precision == "auto" else args.precision
    rows = []
    with tempfile.TemporaryDirectory() as root:
        trainer, vae, _ = demo_model.demo_trainer(root, args.cosine_to or max(args.evals), batch=args.batch,
                                                  lr=args.lr, precision=precision, warmup=args.warmup,
                                                  schedule=args.schedule, unet=args.unet, word_scale=args.word_scale,
                                                  ema_decay=args.ema, timesteps=args.timesteps)
        seconds = 0.0
        with ComfyServer(os.path.join(root, "comfy")) as server:
            models = os.path.join(server.base, "models")
            for step in args.evals:
                trainer.config.max_steps = step
                start = time.perf_counter()
                trainer.train()
                seconds += time.perf_counter() - start
                final = trainer.export()
                if not rows:  # text encoder and VAE once (the text file is 0.9 GB)
                    base = demo_model.install_etc({"unet": os.path.join(final, "etc_unet_comfyui.safetensors"),
                                                   "fps": os.path.join(final, "etc_fps.safetensors"),
                                                   "text_encoder": trainer.text_encoder, "vae": vae}, server.base)
                for name in os.listdir(os.path.join(models, "unet")):
                    os.remove(os.path.join(models, "unet", name))
                # a new name per step: ComfyUI reuses a loader's output while its inputs stay the same
                files = dict(base, unet=f"step{step}_unet.safetensors", fps=f"step{step}_fps.safetensors")
                shutil.copy(os.path.join(final, "etc_unet_comfyui.safetensors"),
                            os.path.join(models, "unet", files["unet"]))
                shutil.copy(os.path.join(final, "etc_fps.safetensors"), os.path.join(models, "etc", files["fps"]))
                for cfg in args.cfgs:
                    row = {"step": step, "cfg": cfg, "loss_last_25": float(np.mean(trainer.losses[-25:])),
                           "train_seconds": round(seconds, 1)}
                    for colour, direction in [demo_model.HELD_OUT] + [tuple(c.split(":")) for c in args.also]:
                        caption = synthetic.caption(colour, direction)
                        videos, _ = demo_model.sample_etc(server, files, caption, seed=0, batch=10, cfg=cfg)
                        centres = [synthetic.square_centres(v) for v in videos]
                        directions = [synthetic.motion_direction(c) for c in centres]
                        scored = {"moving_its_way": directions.count(direction),
                                  "one_square_per_frame": sum(all(p is not None for p in c) for c in centres),
                                  "directions": directions}
                        if "captions" not in row:  # the held-out caption's fields, as before --also
                            row.update(moving_up=scored["moving_its_way"], directions=directions,
                                       one_square_per_frame=scored["one_square_per_frame"])
                        row.setdefault("captions", {})[caption] = scored
                        print(f"step {step} cfg {cfg:g} '{caption}': {scored['moving_its_way']}/10 {direction}, "
                              f"{scored['one_square_per_frame']}/10 one square per frame, loss "
                              f"{row['loss_last_25']:.3f}, {seconds:.0f} s {directions}", flush=True)
                    rows.append(row)
                    write_result(args, precision, rows)  # after each row: a stopped run keeps what it measured


def write_result(args, precision: str, rows: list):
    from etc_vcut_dev import demo
    result = {"machine": demo.machine(), "precision": precision, "args": vars(args), "rows": rows}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", f"demo_held_out_{args.name}.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
