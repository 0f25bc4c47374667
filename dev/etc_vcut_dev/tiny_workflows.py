"""The example workflows (workflows/api) on the tiny random-weight models of the test fixture pack: loaders
swapped for the fixture's, sizes made small (DEMO_OVERRIDES), inputs for the training template. The demo runs
them, tests/test_workflows.py runs every one."""
import json
import os

from etc_vcut_dev.comfy_host import REPO
from etc_vcut_dev.client import apply_overrides
from etc_vcut_dev.grid_tasks import GRID_TASK_OVERRIDES

TINY_LOADERS = {"ImageOnlyCheckpointLoader": "ETCVCUTTestTinySVD", "CheckpointLoaderSimple": "ETCVCUTTestTinySD2"}
# Single-part loaders (the ETC templates load a UNet, text encoder and VAE apart): the tiny SD 2.x output they stand for.
TINY_PARTS = {"UNETLoader": 0, "CLIPLoader": 1, "VAELoader": 2}
# Checkpoints of other model families that ImageOnlyCheckpointLoader loads: their tiny fixture and its inputs.
TINY_CHECKPOINTS = {"sv3d_p.safetensors": ("ETCVCUTTestTinySV3D", {"variant": "p"}),
                    "sv3d_u.safetensors": ("ETCVCUTTestTinySV3D", {"variant": "u"}),
                    "stable_zero123.ckpt": ("ETCVCUTTestTinyZero123", {})}
SVD_OVERRIDES = ["3.width=128", "3.height=64", "3.video_frames=8"]
SMOKE_OVERRIDES = {  # run untimed on the tiny random models
    "etc_long_video.json": ["5.frames=64", "5.layout=8x8", "5.frame_width=64", "5.frame_height=40",
                            "5.fps_weights=none"],
    "etc_training_launch.json": ["1.frames=4", "1.layout=2x2", "1.resolution=32", "1.max_steps=4",
                                 "1.checkpoint_every=2", "1.mixed_precision=no", "1.gradient_checkpointing=false"],
}
# Every workflow of workflows/api sized for the tiny random models (tests/test_workflows.py runs them all).
DEMO_OVERRIDES = {"svd_baseline.json": SVD_OVERRIDES, "svd_vcut.json": SVD_OVERRIDES,
                  "sv3d_vcut.json": ["3.width=64", "3.height=64", "3.video_frames=4"],
                  "zero123_vcut.json": ["3.width=64", "3.height=64", "3.batch_size=4"],
                  "etc_text_to_video.json": ["7.frame_width=64", "7.frame_height=64", "7.fps_weights=none"],
                  **SMOKE_OVERRIDES, **GRID_TASK_OVERRIDES}


def tiny_training_inputs(base: str, run: str) -> list:
    """Overrides that point the training workflow at a tiny SD in the instance's models/diffusers and
    synthetic data in its input/ (the node reads only ComfyUI's folders), training into output/<run>."""
    from etc_vcut_dev.tiny_diffusers import write_synthetic_data, write_tiny_sd
    data = write_synthetic_data(os.path.join(base, "input", "etc_tiny_data"))
    write_tiny_sd(os.path.join(base, "models", "diffusers", "etc-tiny-sd"))
    return ["1.pretrained=diffusers/etc-tiny-sd", f"1.output_dir={run}"] + \
        [f"1.{key}={os.path.relpath(value, os.path.join(base, 'input'))}" for key, value in data.items()]


def swap_loaders(prompt: dict) -> dict:
    """Replace checkpoint loaders by the tiny-model fixture loaders (same outputs, same order), and UNet,
    text-encoder and VAE loaders by the tiny SD 2.x loader's output of that kind.

    The swapped node gets a new id: the early-2024 executor reuses a cached output when a node's
    id and inputs match an earlier prompt's, whatever its class.
    """
    renamed = {}  # old id -> (new id, slot of the old id's output 0)
    for node_id, node in list(prompt.items()):
        kind = node["class_type"]
        if kind in TINY_LOADERS:
            tiny, inputs = TINY_CHECKPOINTS.get(node["inputs"].get("ckpt_name"), (TINY_LOADERS[kind], {}))
        elif kind in TINY_PARTS:
            tiny, inputs = "ETCVCUTTestTinySD2", {}
        else:
            continue
        renamed[node_id] = (f"{node_id}_{tiny}", TINY_PARTS.get(kind, 0))
        prompt[renamed[node_id][0]] = {"class_type": tiny, "inputs": dict(inputs, seed=0)}
        del prompt[node_id]
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and value[0] in renamed:
                new_id, slot = renamed[value[0]]
                node["inputs"][name] = [new_id, slot + value[1]]
    return prompt


def workflow(name: str, overrides) -> dict:
    with open(os.path.join(REPO, "workflows", "api", name)) as f:
        return apply_overrides(swap_loaders(json.load(f)), list(overrides))


def write_example_image(path: str):
    import cv2
    import numpy as np
    y, x = np.mgrid[0:64, 0:128]
    image = np.stack([x * 2, y * 4, 255 - x * 2], axis=-1).clip(0, 255).astype(np.uint8)
    cv2.imwrite(path, image)
