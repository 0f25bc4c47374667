"""The ETC nodes check what they are given (real server): a non SD 2.x-like MODEL, a grid latent of another
layout, negative layouts, and corrupt or wrong-width FPS files are refused with the error that says why."""
import json
import os

import pytest
import torch

from etc_core import FPSEmbedding, GridLayoutError, load_fps_module, parse_layout, save_fps_module
from etc_core.grid import check_grid_latent
from etc_vcut_dev.graphs import etc_graph
from etc_vcut_dev.comfy_host import PromptError
from etc_vcut_dev.refusals import refusal

TINY_BASE = "sd-unet:in=4,ch=32,temb=128"


def _svd_sampler():
    g = etc_graph(video=False, prefix="svd_etc")
    del g["load"]
    g["load_svd"] = {"class_type": "ETCVCUTTestTinySVD", "inputs": {"seed": 0}}
    for name, seed in (("pos", 1), ("neg", 2)):
        g[name] = {"class_type": "ETCVCUTTestRandomConditioning", "inputs": {"seed": seed, "dim": 64, "tokens": 77}}
    g["etc"]["inputs"].update(model=["load_svd", 0], vae=["load_svd", 2])
    return g


def _mixed_embedding(model, frames, layout):
    """``model`` -> ETCMixedEmbedding -> KSampler over a 4x4 grid latent of 16 frames -> saved."""
    grid = {"class_type": "ETCEmptyGridLatent", "inputs": {"frames": 16, "layout": "4x4", "frame_width": 32,
                                                          "frame_height": 32, "batch_size": 1}}
    load = "load_" + model["class_type"]  # the early-2024 executor would reuse a cached "load" of another class
    g = {load: model, "grid": grid,
         "me": {"class_type": "ETCMixedEmbedding", "inputs": {"model": [load, 0], "frames": frames, "layout": layout,
                                                             "theta": 10000.0, "strength": 1.0,
                                                             "latent": ["grid", 0]}},
         "sample": {"class_type": "KSampler", "inputs": {
             "model": ["me", 0], "seed": 0, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal",
             "positive": ["cond", 0], "negative": ["cond", 0], "latent_image": ["grid", 0], "denoise": 1.0}},
         "cond": {"class_type": "ETCVCUTTestRandomConditioning", "inputs": {"seed": 1, "dim": 64, "tokens": 77}},
         "save": {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": "me_check", "latent": ["sample", 0]}}}
    return g


SD2 = {"class_type": "ETCVCUTTestTinySD2", "inputs": {"seed": 0}}
SVD = {"class_type": "ETCVCUTTestTinySVD", "inputs": {"seed": 0}}


def test_svd_model_is_refused_by_sampler_and_mixed_embedding(comfy_server):
    message, _ = refusal(comfy_server, _svd_sampler())
    assert message == ("ETCSampler: the MODEL is not an SD 2.x-like image UNet: it is a video UNet with temporal "
                       "layers (like SVD). ETC needs an SD 2.x checkpoint (e.g. v2-1_512-ema-pruned.safetensors) "
                       "loaded with Load Checkpoint")
    message, _ = refusal(comfy_server, _mixed_embedding(SVD, 16, "4x4"))
    assert message.startswith("ETCMixedEmbedding: the MODEL is not an SD 2.x-like image UNet: it is a video UNet")


def test_mixed_embedding_refuses_a_latent_of_another_grid(comfy_server):
    message, _ = refusal(comfy_server, _mixed_embedding(SD2, 16, "2x8"))
    assert message == "the latent was made as a 4x4 grid of 16 frames; set frames=16 and layout=4x4"
    comfy_server.run(_mixed_embedding(SD2, 16, "4x4"))  # the same grid


def test_mixed_embedding_without_its_latent_is_refused_before_running(comfy_server):
    """Sizes of a 4x4 grid also divide as 2x8, so an unwired latent could not be checked: graph validation
    refuses it, naming the input."""
    graph = _mixed_embedding(SD2, 16, "2x8")
    del graph["me"]["inputs"]["latent"]
    # a stock output node: the early-2024 validator follows required inputs only, and the fixture's are optional
    graph["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "me_check"}}
    with pytest.raises(PromptError) as refused:
        comfy_server.queue(graph)
    reply = json.loads(str(refused.value).split(": ", 1)[1])
    [error] = reply["node_errors"]["me"]["errors"]
    assert (error["type"], error["extra_info"]["input_name"]) == ("required_input_missing", "latent")


def test_negative_layouts_get_the_layout_error(comfy_server):
    g = etc_graph(frames=16, layout="-2x-8", video=False, prefix="negative")
    message, _ = refusal(comfy_server, g)
    assert message.startswith("layout -2x-8 is not positive; use one of: 4x4, 2x8")
    with pytest.raises(GridLayoutError, match="is not positive"):
        parse_layout(4, "-1x-4")


@pytest.mark.parametrize("name, write, expected", [
    ("corrupt_fps.safetensors", lambda path: open(path, "wb").write(b"\x10\0\0\0\0\0\0\0{not json"),
     "fps_weights corrupt_fps.safetensors is not a readable safetensors file"),
    ("wide_fps.safetensors", lambda path: save_fps_module(path, FPSEmbedding(256), frames=4, layout="2x2",
                                                          theta=1e4, base_model=TINY_BASE),
     "fps_weights wide_fps.safetensors does not hold the weights of an FPS module of width '256'"),
])
def test_corrupt_or_wrong_width_fps_files_are_refused_by_name(comfy_server, name, write, expected):
    path = os.path.join(comfy_server.base, "models", "etc", name)
    write(path)
    message, history = refusal(comfy_server, etc_graph(fps_weights=name, video=False, prefix="fps_check"))
    assert message.startswith(expected)
    with pytest.raises(ValueError, match=expected.replace("'", ".")):
        load_fps_module(path, expected_base_model=TINY_BASE)


def test_a_file_whose_weights_contradict_its_width_is_refused(tmp_path):
    path = str(tmp_path / "lying.safetensors")
    save_fps_module(path, FPSEmbedding(64), frames=4, layout="2x2", theta=1e4, base_model=TINY_BASE)
    from safetensors.torch import load_file, save_file
    save_file(load_file(path), path, {"format": "etc-fps-embedding/1", "width": "128", "base_model": TINY_BASE})
    with pytest.raises(ValueError, match="lying.safetensors does not hold the weights of an FPS module of width"):
        load_fps_module(path, expected_base_model=TINY_BASE)


def test_grid_latent_check_uses_metadata_then_shape():
    latent = {"samples": torch.zeros(1, 4, 16, 16), "etc_grid": {"frames": 16, "rows": 4, "cols": 4}}
    with pytest.raises(GridLayoutError, match="made as a 4x4 grid"):
        check_grid_latent(latent, 2, 8)
    check_grid_latent(latent, 4, 4)
    with pytest.raises(GridLayoutError, match="not a grid of 3x3"):
        check_grid_latent({"samples": torch.zeros(1, 4, 16, 16)}, 3, 3)


def test_decoding_memory_counts_one_frame_or_one_tile():
    """ETCSampler's memory check counts ComfyUI's own decode estimate for one frame, or for one 64x64-latent tile
    of a larger frame (ComfyUI decodes in tiles when a frame does not fit), never the whole frame beyond that."""
    from types import SimpleNamespace
    from etc_vcut_dev.pack import pack_submodule
    decode_bytes = pack_submodule("nodes.host_probes").decode_bytes
    shapes = []
    vae = SimpleNamespace(vae_dtype=torch.float32,
                          memory_used_decode=lambda shape, dtype: shapes.append(shape) or shape[2] * shape[3] * 10)
    assert decode_bytes(vae, 256, 128) == 16 * 32 * 10
    assert decode_bytes(vae, 4096, 4096) == 64 * 64 * 10
    assert decode_bytes(vae, 8192, 256) == 32 * 64 * 10
    assert shapes == [(1, 4, 16, 32), (1, 4, 64, 64), (1, 4, 32, 64)]
