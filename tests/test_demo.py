"""The demo's ETC path end to end: synthetic set, tiny base model, etc_core.train, export into ComfyUI's
folders, stock UNet/CLIP/VAE loaders and ETCSampler over the HTTP API. The sampled videos (not the
training data) are read back with the square tracker."""
import os

import numpy as np
import pytest
import torch

from etc_vcut_dev import demo_model
from etc_vcut_dev.browser import ADVANCED, CHROMIUM, PLAY, frontend_page, view_url
from etc_vcut_dev import synthetic

SEEDS = 10


@pytest.fixture(scope="module")
def etc_files(comfy_server):
    """The demo's model at the demo's own budget, trained once for both host passes (.cache/demo_model)."""
    return demo_model.cached_etc(os.path.join(demo_model.REPO, ".cache", "demo_model"), comfy_server.base)


def _directions(comfy_server, files, caption):
    """(frames [SEEDS, T, H, W, 3], direction per seed, output records) of one prompt of SEEDS videos."""
    frames, records = demo_model.sample_etc(comfy_server, files, caption, seed=0, batch=SEEDS, prefix="ETC/test")
    return frames, [synthetic.motion_direction(synthetic.square_centres(v)) for v in frames], records


@pytest.fixture(scope="module")
def held_out(comfy_server, etc_files):
    """The held-out caption sampled as the demo samples it."""
    return _directions(comfy_server, etc_files, synthetic.caption(*demo_model.HELD_OUT))


def test_both_ci_hosts_share_one_trained_demo_model(monkeypatch):
    """The cache key names the tokenizer's files, not the host's folder, so the second pass reuses the model."""
    from etc_vcut_dev.comfy_host import REGISTRY_HOSTS
    if os.environ.get("COMFYUI_PATH"):
        pytest.skip("COMFYUI_PATH names one host")
    keys = set()
    for host in REGISTRY_HOSTS:
        monkeypatch.setenv("ETCVCUT_HOST", host)
        keys.add(demo_model.training_key())
    assert len(REGISTRY_HOSTS) == 2 and len(keys) == 1


def test_tracker_reads_each_direction_and_rejects_two_squares():
    for direction in synthetic.DIRECTIONS:
        clip = synthetic.square_clip(synthetic.COLORS["red"], direction, 4.0, 8, 32, 10)
        assert synthetic.motion_direction(synthetic.square_centres(clip)) == direction
    two = synthetic.square_frame(32, 10, 0, 0, synthetic.COLORS["red"])
    two[20:30, 20:30] = synthetic.COLORS["blue"]
    assert synthetic.square_centres(two[None]) == [None]


def test_constructed_vae_keeps_the_motion_of_the_training_clips(tmp_path):
    """The decoded frames are coarse (8x8 blocks), but the tracker still reads the clips' directions."""
    from etc_vcut_dev import tiny_base
    from etc_core.data import TripleData
    data = synthetic.write_square_set(str(tmp_path), demo_model.FRAMES)
    assert synthetic.caption(*demo_model.HELD_OUT) not in data["captions"] and len(data["captions"]) == 15
    clips = TripleData(demo_model.FRAMES, demo_model.SIZE, data["video_manifest"], ratios=(1, 0, 0), seed=0)
    vae = tiny_base.pooling_tiny_vae(synthetic.BACKGROUND)
    results = []
    for index in range(40):
        sample = clips.sample(index)
        if sample["fps"] != demo_model.FPS:
            continue
        with torch.no_grad():
            decoded = vae.decode(vae.encode(sample["pixels"]).latents).sample.clamp(-1, 1)
        frames = ((decoded + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        results.append(synthetic.motion_direction(synthetic.square_centres(frames)) == sample["caption"].split()[-1])
    assert len(results) >= 10 and all(results)


def test_scaled_word_embeddings_keep_each_word_apart():
    """With word_scale 30 (the demo's, demo_model.WORD_SCALE), the encoder output at the direction word follows
    the word, not the colour before it, as a trained CLIP's does; a plain random tower (scale 1) mixes them."""
    from etc_vcut_dev import tiny_base
    from etc_vcut_dev.tiny_diffusers import clip_tokenizer
    tokenizer = clip_tokenizer(pad_token="!")
    position = len(tokenizer("a green square moving up").input_ids) - 2  # the last word, before the end token

    def similarities(encoder):
        with torch.no_grad():
            out = {c: encoder(tokenizer([synthetic.caption(*c)], padding="max_length", max_length=77,
                                        return_tensors="pt").input_ids)[0][0, position]
                   for c in (("green", "up"), ("red", "up"), ("green", "down"))}
        cos = torch.nn.functional.cosine_similarity
        up = out["green", "up"]
        return float(cos(up, out["red", "up"], dim=0)), float(cos(up, out["green", "down"], dim=0))

    same_word, other_word = similarities(tiny_base.text_encoder(1, word_scale=demo_model.WORD_SCALE))
    assert same_word > 0.9 and other_word < 0.5, (same_word, other_word)
    same_word, other_word = similarities(tiny_base.text_encoder(1))
    assert other_word > same_word - 0.1, (same_word, other_word)


def test_tiny_vae_and_text_encoder_files_match_what_the_trainer_used(etc_files, comfy_server):
    from safetensors.torch import load_file
    clip = load_file(f"{comfy_server.base}/models/clip/{etc_files['clip']}")
    assert "text_model.encoder.layers.23.mlp.fc2.weight" in clip
    assert not clip["text_model.encoder.layers.2.self_attn.out_proj.weight"].any()
    vae = load_file(f"{comfy_server.base}/models/vae/{etc_files['vae']}")
    assert "taesd_decoder.1.weight" in vae and torch.isfinite(vae["vae_scale"])


def test_held_out_caption_gives_one_square_moving_its_way(held_out):
    frames, directions, _ = held_out
    assert frames.shape == (SEEDS, demo_model.FRAMES, demo_model.SIZE, demo_model.SIZE, 3)
    assert sum(d == demo_model.HELD_OUT[1] for d in directions) >= 8, directions
    steps = np.abs(np.diff(frames.astype(np.int16), axis=1)).reshape(SEEDS, demo_model.FRAMES - 1, -1).max(-1)
    assert (steps > 10).all()  # no frame is a copy of the one before


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/setup.sh --tests installs it)")
def test_held_out_video_plays_in_the_browser(comfy_server, held_out):
    """The MP4 the demo writes, from the server's /view URL in headless Chromium: it plays, at the demo's
    frame size, for the SEEDS videos' T frames at the demo's fps."""
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (scripts/setup.sh --tests does)")
    (video,) = [r for r in held_out[2] if r["filename"].endswith(".mp4")]
    with frontend_page(playwright.sync_playwright, comfy_server.url) as page:
        page.evaluate(PLAY, view_url(video))
        page.wait_for_function(ADVANCED, timeout=30000)
        width, height, seconds = page.evaluate(
            "() => [window.__played.videoWidth, window.__played.videoHeight, window.__played.duration]")
    assert (width, height) == (demo_model.SIZE * 4, demo_model.SIZE * 4)
    assert seconds == pytest.approx(SEEDS * demo_model.FRAMES / demo_model.FPS, abs=0.05)


@pytest.mark.parametrize("direction", ["left", "right", "down"])
def test_direction_follows_the_caption(comfy_server, etc_files, direction):
    _, directions, _ = _directions(comfy_server, etc_files, synthetic.caption("red", direction))
    # a caption of the training set is not the demo's claim: the captioned direction must lead, in at least
    # half the seeds (the 500-step live weights once gave "red ... left" 5 left, some up; the 200-step EMA with
    # ramp timesteps gives 10 of 10 in bench/demo_held_out.py, fp32 and two threads)
    counts = {d: directions.count(d) for d in synthetic.DIRECTIONS}
    assert max(counts, key=counts.get) == direction and counts[direction] >= 5, directions
