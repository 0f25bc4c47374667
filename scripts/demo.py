#!/usr/bin/env python3
"""The main job on the embedded default: every example workflow of the pack, queued headless over
ComfyUI's HTTP API, with the tiny seeded models the test fixture pack builds (no download); the
training workflow trains a tiny SD-layout model on synthetic data for a few steps.

Writes the videos, the loss curve and a timing table (timings.md, timings.json) into demo_output/.
"""
import glob
import json
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests"), os.path.join(REPO, "scripts")]

from comfy_host import ComfyServer  # noqa: E402
from queue_workflow import apply_overrides, run  # noqa: E402

TINY_LOADERS = {"ImageOnlyCheckpointLoader": "ETCVCUTTestTinySVD", "CheckpointLoaderSimple": "ETCVCUTTestTinySD2"}
# Sizes a CPU runs in seconds with the tiny models; the workflows themselves keep the paper's sizes.
DEMO_OVERRIDES = {
    "svd_baseline.json": ["3.width=128", "3.height=64", "3.video_frames=8"],
    "svd_vcut.json": ["3.width=128", "3.height=64", "3.video_frames=8"],
    "etc_text_to_video.json": ["4.frame_width=64", "4.frame_height=64"],
    "etc_long_video.json": ["4.frames=64", "4.layout=8x8", "4.frame_width=64", "4.frame_height=40"],
    "etc_training_launch.json": ["1.frames=4", "1.layout=2x2", "1.resolution=32", "1.max_steps=4",
                                 "1.checkpoint_every=2", "1.mixed_precision=no", "1.gradient_checkpointing=false"],
}


def tiny_training_inputs(base: str, run: str) -> list:
    """Overrides that point the training workflow at a tiny SD in the instance's models/diffusers and
    synthetic data in its input/ (the node reads only ComfyUI's folders), training into output/<run>."""
    from tiny_diffusers import write_synthetic_data, write_tiny_sd
    data = write_synthetic_data(os.path.join(base, "input", "etc_tiny_data"))
    write_tiny_sd(os.path.join(base, "models", "diffusers", "etc-tiny-sd"))
    return ["1.pretrained=diffusers/etc-tiny-sd", f"1.output_dir={run}"] + \
        [f"1.{key}={os.path.relpath(value, os.path.join(base, 'input'))}" for key, value in data.items()]


def swap_loaders(prompt: dict) -> dict:
    """Replace checkpoint loaders by the tiny-model fixture loaders (same outputs, same order).

    The swapped node gets a new id: the early-2024 executor reuses a cached output when a node's
    id and inputs match an earlier prompt's, whatever its class.
    """
    renamed = {}
    for node_id, node in list(prompt.items()):
        if node["class_type"] in TINY_LOADERS:
            renamed[node_id] = f"{node_id}_{TINY_LOADERS[node['class_type']]}"
            prompt[renamed[node_id]] = {"class_type": TINY_LOADERS[node["class_type"]], "inputs": {"seed": 0}}
            del prompt[node_id]
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and value[0] in renamed:
                node["inputs"][name] = [renamed[value[0]], value[1]]
    return prompt


def write_example_image(path: str):
    import cv2
    import numpy as np
    y, x = np.mgrid[0:64, 0:128]
    image = np.stack([x * 2, y * 4, 255 - x * 2], axis=-1).clip(0, 255).astype(np.uint8)
    cv2.imwrite(path, image)


def main() -> int:
    out = os.path.join(REPO, "demo_output")
    shutil.rmtree(out, ignore_errors=True)
    rows = []
    with ComfyServer(os.path.join(out, "comfy")) as server:
        write_example_image(os.path.join(server.base, "input", "example.png"))
        for path in sorted(glob.glob(os.path.join(REPO, "workflows", "api", "*.json"))):
            name = os.path.basename(path)
            overrides = list(DEMO_OVERRIDES.get(name, []))
            if name == "etc_training_launch.json":
                overrides += tiny_training_inputs(server.base, "etc_runs/demo")
            with open(path) as f:
                prompt = apply_overrides(swap_loaders(json.load(f)), overrides)
            start = time.perf_counter()
            outputs = run(server.url, prompt, progress=lambda m, n=name: print(f"[{n}] {m}"))
            seconds = time.perf_counter() - start
            videos = [os.path.join(v.get("subfolder", ""), v["filename"])
                      for o in outputs.values() for v in o.get("images", [])
                      if v.get("type", "output") == "output"]
            for video in videos:
                shutil.copy(server.output_path(video), os.path.join(out, os.path.basename(video)))
            rows.append({"workflow": name, "seconds": round(seconds, 3), "outputs": [os.path.basename(v) for v in videos]})
            print(f"[{name}] {seconds:.2f} s -> {', '.join(videos)}")
    with open(os.path.join(out, "timings.json"), "w") as f:
        json.dump({"machine": "CPU, tiny random-weight models (not a speed claim)", "runs": rows}, f, indent=1)
    table = ["| workflow | seconds | outputs |", "|---|---:|---|"]
    table += [f"| {r['workflow']} | {r['seconds']:.2f} | {', '.join(r['outputs'])} |" for r in rows]
    with open(os.path.join(out, "timings.md"), "w") as f:
        f.write("\n".join(table) + "\n")
    print("\n".join(table))
    print(f"videos and timings in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
