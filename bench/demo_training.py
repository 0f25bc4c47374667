#!/usr/bin/env python3
"""The demo's training step (etc_vcut_dev.demo_model) per UNet layout, batch size and precision, timed alternately.

Every variant gets its own trainer on the demo's synthetic set; then rounds of ``--steps`` steps run variant after
variant in one process, so a load that comes and goes (a shared machine) lands on all of them alike. Prints
seconds per step (median over rounds, min and max) and the ratio to the first variant per round (median, min,
max), with the 1-minute load average before and after; writes bench/results/demo_training_<name>.json.

    .venv/bin/python bench/demo_training.py --variants sd21:8 level0:8 level0:4 --precision no
"""
import argparse
import json
import os
import statistics
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def trainer_for(folder: str, layout: str, batch: int, precision: str, cache: bool):
    from etc_vcut_dev import demo_model, synthetic, tiny_base
    from etc_core.train import Trainer, TrainConfig
    data_folder = os.path.join(folder, "data")
    if not os.path.isdir(data_folder):
        synthetic.write_square_set(data_folder, demo_model.FRAMES, held_out=demo_model.HELD_OUT, size=demo_model.SIZE)
    data = {"video_manifest": os.path.join(data_folder, "videos.jsonl"),
            "image_manifest": os.path.join(data_folder, "images.jsonl"),
            "label_folder": os.path.join(data_folder, "labels")}
    vae = tiny_base.pooling_tiny_vae(synthetic.BACKGROUND)
    pretrained = tiny_base.write_pretrained(os.path.join(folder, f"pretrained_{layout}"), vae,
                                            unet_config=tiny_base.UNET_LAYOUTS[layout])
    config = TrainConfig(pretrained=pretrained, output_dir=os.path.join(folder, f"run_{layout}_{batch}_{cache}_{precision}"),
                         ratios=(0.9, 0.05, 0.05), frames=demo_model.FRAMES, layout=demo_model.LAYOUT, resolution=demo_model.SIZE,
                         caption_dropout=0.1, mixed_precision=precision, lr=demo_model.LR, batch_size=batch,
                         max_steps=1, checkpoint_every=10**9, seed=0, cache_latents=cache, **data)
    return Trainer(config)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["sd21:8", "level0:8"],
                        help="LAYOUT:BATCH[:cache][:bf16|:no], LAYOUT a key of tiny_base.UNET_LAYOUTS, cache: the "
                        "trainer's cache_latents, bf16/no: this variant's precision; the first is the reference")
    parser.add_argument("--precision", default="no", help="the trainer's mixed_precision (no: fp32)")
    parser.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    parser.add_argument("--name", default="cpu")
    args = parser.parse_args()
    import torch
    from etc_vcut_dev import demo
    variants = [(v.split(":")[0], int(v.split(":")[1]), ":cache" in v,
                 next((p for p in ("bf16", "no") if v.endswith(":" + p)), args.precision)) for v in args.variants]
    with tempfile.TemporaryDirectory() as folder:
        trainers = [trainer_for(folder, layout, batch, precision, cache) for layout, batch, cache, precision in variants]
        params = [sum(p.numel() for p in t.unet.parameters()) for t in trainers]
        for t in trainers:  # warm-up steps (first-call allocations, the text cache; the latent cache fills)
            t.config.max_steps = args.warmup
            t.train()
        load_before = os.getloadavg()
        per_round = [[] for _ in variants]
        for _ in range(args.rounds):
            for i, t in enumerate(trainers):
                t.config.max_steps += args.steps
                start = time.perf_counter()
                t.train()
                per_round[i].append((time.perf_counter() - start) / args.steps)
        load_after = os.getloadavg()
    rows = []
    for (layout, batch, cache, precision), n, times in zip(variants, params, per_round):
        ratios = [a / b for a, b in zip(times, per_round[0])]
        rows.append({"layout": layout, "batch": batch, "cache_latents": cache, "precision": precision, "parameters": n, "seconds_per_step": times,
                     "median": statistics.median(times), "ratio_median": statistics.median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios)})
    result = {"machine": demo.machine(), "precision": args.precision, "steps_per_round": args.steps,
              "rounds": args.rounds, "loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": load_after,
              "torch_threads": torch.get_num_threads(), "variants": rows}
    print(f"{result['machine']}, mixed_precision={args.precision} unless named, load before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f}")
    print("| layout | batch | latent cache | precision | params (M) | s/step median (min-max) | ratio to first, median (min-max) |")
    print("|---|---:|---|---|---:|---|---|")
    for r in rows:
        t = r["seconds_per_step"]
        print(f"| {r['layout']} | {r['batch']} | {'yes' if r['cache_latents'] else 'no'} | "
              f"{r['precision']} | {r['parameters'] / 1e6:.1f} | {r['median']:.2f} ({min(t):.2f}-"
              f"{max(t):.2f}) | {r['ratio_median']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) |")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", f"demo_training_{args.name}.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
