"""The demo's ETC path end to end: synthetic set, tiny base model, etc_core.train, export into ComfyUI's
folders, stock UNet/CLIP/VAE loaders and ETCSampler over the HTTP API. The sampled videos (not the
training data) are read back with the square tracker."""
import numpy as np
import pytest
import torch

import demo
from etc_core import synthetic

TRAIN_STEPS = 300  # the demo's own budget: the assertions below need it (see README, "First command")
SEEDS = 10


@pytest.fixture(scope="module")
def etc_files(comfy_server, tmp_path_factory):
    model = demo.train_etc(str(tmp_path_factory.mktemp("etc")), TRAIN_STEPS)
    return demo.install_etc(model, comfy_server.base, name="etc_test")


def _directions(comfy_server, files, caption):
    frames, _ = demo.sample_etc(comfy_server, files, caption, seed=0, batch=SEEDS, prefix="ETC/test")
    return frames, [synthetic.motion_direction(synthetic.square_centres(v)) for v in frames]


def test_tiny_vae_and_text_encoder_files_match_what_the_trainer_used(etc_files, comfy_server):
    from safetensors.torch import load_file
    clip = load_file(f"{comfy_server.base}/models/clip/{etc_files['clip']}")
    assert "text_model.encoder.layers.23.mlp.fc2.weight" in clip
    assert not clip["text_model.encoder.layers.2.self_attn.out_proj.weight"].any()
    vae = load_file(f"{comfy_server.base}/models/vae/{etc_files['vae']}")
    assert "taesd_decoder.1.weight" in vae and torch.isfinite(vae["vae_scale"])


def test_held_out_caption_gives_one_square_moving_its_way(comfy_server, etc_files):
    caption = synthetic.caption(*demo.HELD_OUT)
    frames, directions = _directions(comfy_server, etc_files, caption)
    assert frames.shape == (SEEDS, demo.FRAMES, demo.SIZE, demo.SIZE, 3)
    assert sum(d == demo.HELD_OUT[1] for d in directions) >= 8, directions
    steps = np.abs(np.diff(frames.astype(np.int16), axis=1)).reshape(SEEDS, demo.FRAMES - 1, -1).max(-1)
    assert (steps > 40).all()  # no frame is a copy of the one before


@pytest.mark.parametrize("direction", ["left", "right", "down"])
def test_direction_follows_the_caption(comfy_server, etc_files, direction):
    _, directions = _directions(comfy_server, etc_files, synthetic.caption("red", direction))
    assert sum(d == direction for d in directions) >= 8, directions
