#!/usr/bin/env python3
"""ETC's grid tasks on the demo's tiny trained ETC (etc_vcut_dev.demo_model), in a real ComfyUI over HTTP.

Coloured squares on a grey background, 8 frames of 32x32 in a 2x4 grid, 4 fps, 20 euler steps, cfg 4, seeds
0..N-1 as one batch per task (ComfyUI draws each batch item its own noise from the seed). Per task, how many
of the N clips do what was asked, judged by the square tracker of the synthetic set (synthetic.square_centres):

- image-to-video: frame 0 = a green square at the bottom (a frame of the training generator), "a green square
  moving up" (the held-out caption): frame 0 keeps the square within 2 px, and the clip moves up;
- interpolation: frame 0 bottom, frame 7 top, same caption: one square in every frame, its height never going
  down by more than 1 px from frame to frame;
- video-to-video: the training set's "a red square moving left" clip (4 fps) re-captioned "a green square
  moving left", at denoise 0.5 and 0.75: every frame's square nearest green, and the clip moves left;
- per-frame prompts: frames 0-3 "a red square moving up", 4-7 "a green square moving up" (global "a square
  moving up"): each frame's square nearest the colour asked;
- guidance cutoff at c = 5, 10, 15, 20 of 20 steps on the held-out caption: clips moving up, and UNet passes
  per clip (counted; c = 20 is plain guidance).

The model is trained once per demo_model.training_key() into --cache (about 8 CPU minutes on an idle 2-core machine).
Prints the table, writes bench/results/etc_grid_tasks.json and a frame strip per task.
"""
import argparse
import json
import os

import cv2
import numpy as np
from safetensors.torch import load_file

from etc_vcut_dev import demo, demo_model, synthetic
from etc_vcut_dev.comfy_host import ComfyServer
from etc_vcut_dev.graphs import unet_calls
from etc_vcut_dev.grid_tasks import grid_task_graph

HERE = os.path.dirname(os.path.abspath(__file__))
SIDE, HELD_OUT = 10, synthetic.caption(*demo_model.HELD_OUT)
BOTTOM, TOP = demo_model.SIZE - SIDE, 0
MIDDLE = (demo_model.SIZE - SIDE) // 2


def _png(frame) -> bytes:
    return cv2.imencode(".png", np.ascontiguousarray(frame[:, :, ::-1]))[1].tobytes()


def _colour(frame) -> str:
    """The colour of synthetic.COLORS nearest the mean of the pixels that stand out from the background."""
    background = np.median(frame.reshape(-1, 3), axis=0)
    pixels = frame.reshape(-1, 3)[np.abs(frame.reshape(-1, 3).astype(float) - background).max(axis=-1) > 60]
    if len(pixels) == 0:
        return "none"
    mean = pixels.mean(axis=0)
    return min(synthetic.COLORS, key=lambda name: np.linalg.norm(mean - synthetic.COLORS[name]))


def _frames(server, prefix, seeds):
    image = load_file(server.output_path(f"{prefix}.safetensors"))["image"].numpy()
    return (image * 255).round().clip(0, 255).astype(np.uint8).reshape(seeds, demo_model.FRAMES, *image.shape[1:])


def _load_image(g, name, file):
    g[name] = {"class_type": "LoadImage", "inputs": {"image": file}}
    return [name, 0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=os.path.join(demo_model.REPO, ".cache", "demo_model"),
                        help="where the trained demo model is kept (trained there when missing)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--work", default="/tmp/etc_grid_tasks", help="the ComfyUI instance's folder")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "etc_grid_tasks.json"))
    args = parser.parse_args(argv)
    n, steps = args.seeds, args.steps
    green, red = synthetic.COLORS["green"], synthetic.COLORS["red"]
    results = {"machine": demo.machine(), "training_key": demo_model.training_key(), "seeds": list(range(n)),
               "steps": steps, "frames": demo_model.FRAMES, "layout": demo_model.LAYOUT, "size": demo_model.SIZE, "fps": demo_model.FPS}
    strips = {}
    with ComfyServer(args.work) as server:
        files = demo_model.cached_etc(args.cache, server.base)
        models = ({"unet": server.unet_loader(files["unet"]),
                   "v": {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["unet", 0],
                                                                           "sampling": "v_prediction", "zsnr": False}},
                   "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": files["clip"],
                                                                   "type": "stable_diffusion"}},
                   "vae": {"class_type": "VAELoader", "inputs": {"vae_name": files["vae"]}}},
                  ["v", 0], ["clip", 0], ["vae", 0])
        common = dict(models=models, frames=demo_model.FRAMES, layout=demo_model.LAYOUT, size=demo_model.SIZE, steps=steps, cfg=4.0,
                      batch=n, seed=0, fps=demo_model.FPS, fps_weights=files["fps"])
        server.upload("grid_bottom.png", _png(synthetic.square_frame(demo_model.SIZE, SIDE, MIDDLE, BOTTOM, green)))
        server.upload("grid_top.png", _png(synthetic.square_frame(demo_model.SIZE, SIDE, MIDDLE, TOP, green)))
        source = synthetic.square_clip(red, "left", 4.0, demo_model.FRAMES, demo_model.SIZE, SIDE)
        rows, cols = demo_model.LAYOUT.split("x")
        grid = np.concatenate([np.concatenate(list(r), axis=1) for r in source.reshape(int(rows), int(cols),
                                                                                      *source.shape[1:])], axis=0)
        server.upload("grid_red_left.png", _png(grid))

        def run(name, g):
            server.run(g)
            strips[name] = _frames(server, name, n)
            return strips[name]

        # image-to-video
        g = grid_task_graph(prefix="i2v", text=HELD_OUT, keyframes=("0", ["key0", 0]), **common)
        _load_image(g, "key0", "grid_bottom.png")
        videos = run("i2v", g)
        centres = [synthetic.square_centres(v) for v in videos]
        kept = [c[0] is not None and abs(c[0][1] - (BOTTOM + SIDE / 2 - 0.5)) <= 2 for c in centres]
        moves = [synthetic.motion_direction(c) for c in centres]
        results["image_to_video"] = {"frame_0_kept": sum(kept), "moves_up": sum(m == "up" for m in moves),
                                     "both": sum(k and m == "up" for k, m in zip(kept, moves)), "directions": moves}
        # interpolation
        g = grid_task_graph(prefix="interp", text=HELD_OUT, keyframes=("0, 7", ["key_images", 0]), **common)
        g["key_images"] = {"class_type": "ImageBatch", "inputs": {"image1": _load_image(g, "k0", "grid_bottom.png"),
                                                            "image2": _load_image(g, "k7", "grid_top.png")}}
        centres = [synthetic.square_centres(v) for v in run("interp", g)]
        monotone = [all(p is not None for p in c) and all(b[1] <= a[1] + 1 for a, b in zip(c, c[1:]))
                    for c in centres]
        results["interpolation"] = {"one_square_moving_monotonically": sum(monotone),
                                    "one_square_per_frame": sum(all(p is not None for p in c) for c in centres)}
        # video-to-video
        results["video_to_video"] = {}
        for denoise in (0.5, 0.75):
            name = f"v2v_{denoise}"
            g = grid_task_graph(prefix=name, text="a green square moving left", source=["src", 0], denoise=denoise,
                                **common)
            g["src"] = {"class_type": "ETCGridUnpackImage", "inputs": {
                "image": _load_image(g, "src_grid", "grid_red_left.png"), "frames": demo_model.FRAMES,
                "layout": demo_model.LAYOUT}}
            videos = run(name, g)
            colour = [all(_colour(f) == "green" for f in v) for v in videos]
            moves = [synthetic.motion_direction(synthetic.square_centres(v)) for v in videos]
            results["video_to_video"][str(denoise)] = {
                "green_every_frame": sum(colour), "moves_left": sum(m == "left" for m in moves),
                "both": sum(c and m == "left" for c, m in zip(colour, moves))}
        # per-frame prompts
        g = grid_task_graph(prefix="per_frame", text="a square moving up", frame_prompts=[
            ("0-3", "a red square moving up"), ("4-7", "a green square moving up")], **common)
        asked = ["red"] * 4 + ["green"] * 4
        colours = [[_colour(f) for f in v] for v in run("per_frame", g)]
        results["per_frame_prompts"] = {"every_frame_as_asked": sum(c == asked for c in colours),
                                        "frames_as_asked": sum(a == b for c in colours for a, b in zip(c, asked)),
                                        "of_frames": n * demo_model.FRAMES}
        # guidance cutoff
        results["cutoff"] = {}
        for c in (5, 10, 15, 20):
            name = f"cutoff_{c}"
            g = grid_task_graph(prefix=name, text=HELD_OUT, cutoff=c, count_file=f"{name}.json", **common)
            moves = [synthetic.motion_direction(synthetic.square_centres(v)) for v in run(name, g)]
            passes = sum(call["batch"] for call in unet_calls(server, f"{name}.json")) / n
            results["cutoff"][str(c)] = {"moves_up": sum(m == "up" for m in moves), "unet_passes_per_clip": passes}
    for name, frames in strips.items():
        demo_model.frame_strip(frames, os.path.join(os.path.dirname(args.out), f"etc_grid_tasks_{name}.png"))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    print(table(results))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1, default=lambda value: value.item())  # numpy counts
    return 0


def table(r: dict) -> str:
    n = len(r["seeds"])
    v2v = r["video_to_video"]
    lines = ["| task | what is counted | clips of " + str(n) + " |", "|---|---|---|",
             f"| image-to-video | frame 0 kept (within 2 px) / moves up / both | {r['image_to_video']['frame_0_kept']} / "
             f"{r['image_to_video']['moves_up']} / {r['image_to_video']['both']} |",
             f"| interpolation 0 bottom, 7 top | one square per frame / moving monotonically up | "
             f"{r['interpolation']['one_square_per_frame']} / {r['interpolation']['one_square_moving_monotonically']} |"]
    lines += [f"| video-to-video, denoise {d} | green in every frame / moves left / both | {v['green_every_frame']} / "
              f"{v['moves_left']} / {v['both']} |" for d, v in v2v.items()]
    p = r["per_frame_prompts"]
    lines.append(f"| per-frame prompts | every frame's colour as asked (frames as asked of {p['of_frames']}) | "
                 f"{p['every_frame_as_asked']} ({p['frames_as_asked']}) |")
    lines += [f"| cutoff c = {c} of {r['steps']} | moves up; UNet passes per clip | {v['moves_up']}; "
              f"{v['unet_passes_per_clip']:g} |" for c, v in r["cutoff"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
