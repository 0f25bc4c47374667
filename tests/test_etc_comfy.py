"""ETC inside a real ComfyUI (server over HTTP) with the tiny SD 2.x fixture."""
import glob
import os

import pytest
import torch
from safetensors.torch import load_file

from etc_core import FPSEmbedding, save_fps_module
from etc_vcut_dev.video_read import read_video_frames, read_video_metadata
from etc_vcut_dev.graphs import etc_graph


def _run(server, **kwargs):
    server.run(etc_graph(**kwargs))
    return load_file(server.output_path(f"{kwargs['prefix']}.safetensors"))


@pytest.mark.parametrize("frames,layout", [(4, "2x2"), (6, "auto")])
def test_etc_text_to_video_produces_t_frames(comfy_server, frames, layout):
    out = _run(comfy_server, frames=frames, layout=layout, prefix=f"t2v_{frames}")
    image, latent = out["image"], out["latent"]
    assert image.shape == (frames, 64, 64, 3)
    rows, cols = (2, 2) if frames == 4 else (2, 3)
    assert latent.shape == (1, 4, rows * 8, cols * 8)
    assert 0.0 <= image.min() and image.max() <= 1.0
    videos = glob.glob(comfy_server.output_path(f"t2v_{frames}_*.mp4"))
    assert len(videos) == 1
    decoded = read_video_frames(videos[0])
    assert decoded.shape == (frames, 64, 64, 3)
    meta = read_video_metadata(videos[0])
    assert meta["prompt"]["etc"]["class_type"] == "ETCSampler"


def test_untrained_fps_module_is_bit_exact_and_trained_one_changes_output(comfy_server):
    plain = _run(comfy_server, prefix="fps_none", video=False)["image"]
    untrained = _run(comfy_server, prefix="fps_zero", fps_weights="untrained (zero init, no-op)", video=False)
    assert torch.equal(plain, untrained["image"])

    module = FPSEmbedding(128)
    torch.nn.init.normal_(module.mlp[-1].weight, std=0.5)
    path = os.path.join(comfy_server.base, "models", "etc", "trained_fps.safetensors")
    save_fps_module(path, module, frames=4, layout="2x2", theta=10000.0,
                    base_model="sd-unet:in=4,ch=32,temb=128")
    trained = _run(comfy_server, prefix="fps_trained", fps_weights="trained_fps.safetensors", video=False)
    assert not torch.allclose(plain, trained["image"])

    save_fps_module(os.path.join(comfy_server.base, "models", "etc", "other_base.safetensors"), module, frames=4,
                    layout="2x2", theta=10000.0, base_model="sd-unet:in=4,ch=320,temb=1280")
    with pytest.raises(Exception, match="pick the FPS file made with this checkpoint"):
        _run(comfy_server, prefix="fps_other", fps_weights="other_base.safetensors", video=False)


def test_wrong_layout_is_refused_with_the_fix(comfy_server):
    with pytest.raises(Exception, match="use one of"):
        _run(comfy_server, frames=6, layout="2x2", prefix="bad_layout", video=False)
