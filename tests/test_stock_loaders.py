"""Checkpoints in the real SGM layout, loaded by ComfyUI's stock loader nodes (detection included)."""
import pytest
import torch
from safetensors.torch import load_file

from etc_vcut_dev.graphs import etc_graph, svd_graph


@pytest.fixture(scope="module")
def checkpoints(comfy_server):
    comfy_server.run({"w": {"class_type": "ETCVCUTTestWriteCheckpoints", "inputs": {"seed": 0}}}, timeout=900)
    return {"svd": "etcvcut_test_svd.safetensors", "sd2": "etcvcut_test_sd2.safetensors"}


def _svd_from_checkpoint(ckpt, **kwargs):
    g = svd_graph(loader={"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": ckpt}}, steps=3, **kwargs)
    # The file has no ViT-H image encoder (632M parameters); a small one with the same 1024-d output stands in.
    g["cv"] = {"class_type": "ETCVCUTTestTinyCLIPVision", "inputs": {"seed": 0, "projection_dim": 1024}}
    g["cond"]["inputs"]["clip_vision"] = ["cv", 0]
    return g


def test_svd_checkpoint_loads_with_image_only_loader_and_vcut_is_exact(comfy_server, checkpoints):
    comfy_server.run(_svd_from_checkpoint(checkpoints["svd"], prefix="ckpt_svd_base"))
    comfy_server.run(_svd_from_checkpoint(checkpoints["svd"], prefix="ckpt_svd_vcut", vcut=("linear", "linear")))
    base = load_file(comfy_server.output_path("ckpt_svd_base.safetensors"))["latent"]
    vcut = load_file(comfy_server.output_path("ckpt_svd_vcut.safetensors"))["latent"]
    assert base.shape == (4, 4, 8, 8)
    assert (base - vcut).abs().max() <= 1e-5
    assert "SVD_img2vid" in comfy_server.log()  # detected as SVD by ComfyUI's model detection


def test_sd2_checkpoint_loads_with_checkpoint_loader_and_runs_etc(comfy_server, checkpoints):
    g = etc_graph(prefix="ckpt_etc", video=False, steps=2)
    g["load"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoints["sd2"]}}
    for node, seed in (("pos", 1), ("neg", 2)):
        g[node] = {"class_type": "ETCVCUTTestRandomConditioning", "inputs": {"seed": seed, "dim": 1024, "tokens": 77}}
    comfy_server.run(g)
    out = load_file(comfy_server.output_path("ckpt_etc.safetensors"))
    assert out["image"].shape == (4, 64, 64, 3) and out["latent"].shape == (1, 4, 16, 16)
    assert torch.isfinite(out["image"]).all()
