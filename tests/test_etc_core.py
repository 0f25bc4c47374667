"""etc_core without ComfyUI: grid packing, mixed embedding, FPS embedding (diffusers UNet)."""
import math

import pytest
import torch
from diffusers import UNet2DConditionModel

from etc_core import (FPSConditionedTimeEmbedding, FPSEmbedding, GridLayoutError, MixedEmbeddingInput,
                      base_model_fingerprint, layouts, load_fps_module, mixed_embedding, pack, parse_layout,
                      save_fps_module, timestep_embedding, unpack)


@pytest.mark.parametrize("frames,layout,expected", [(16, "auto", (4, 4)), (8, "auto", (2, 4)), (12, "auto", (3, 4)),
                                                    (256, "auto", (16, 16)), (8, "4x2", (4, 2)),
                                                    (7, "auto", (1, 7)), (1, "auto", (1, 1))])
def test_grid_round_trip(frames, layout, expected):
    rows, cols = parse_layout(frames, layout)
    assert (rows, cols) == expected
    video = torch.randn(2, frames, 4, 5, 3)
    grid = pack(video, rows, cols)
    assert grid.shape == (2, 4, rows * 5, cols * 3)
    assert torch.equal(unpack(grid, rows, cols), video)
    # Reading order: frame t at row t // cols, column t % cols.
    t = frames - 1
    r, c = divmod(t, cols)
    assert torch.equal(grid[1, :, r * 5:(r + 1) * 5, c * 3:(c + 1) * 3], video[1, t])


def test_layout_errors_name_the_fix():
    with pytest.raises(GridLayoutError, match="use one of: 3x4, 4x3, 2x6"):
        parse_layout(12, "4x4")
    with pytest.raises(GridLayoutError, match="RxC"):
        parse_layout(12, "four by four")
    with pytest.raises(GridLayoutError, match="not a grid of"):
        unpack(torch.zeros(4, 10, 10), 3, 3)
    assert layouts(16)[0] == (4, 4) and (16, 1) in layouts(16)


def _me_direct(x, y, c, C, rows, cols, h, w, theta):
    """Direct transcription of eqs. 18, 19 and 25 at grid pixel (x along width, y along height)."""
    xl, yl = x % w, y % h
    t = (y // h) * cols + (x // w)
    if c < C // 2:
        s = theta ** (c / C)
        return math.sin(xl / s) + math.cos(yl / s)
    s = theta ** ((c - C // 2) / C)
    return math.sin(t / s) + math.cos(t / s)


@pytest.mark.parametrize("C,rows,cols,h,w,theta", [(4, 4, 4, 8, 8, 10000.0), (8, 2, 4, 5, 7, 10000.0),
                                                   (4, 16, 16, 2, 3, 500.0)])
def test_mixed_embedding_matches_equations(C, rows, cols, h, w, theta):
    me = mixed_embedding(C, rows, cols, h, w, theta, dtype=torch.float64)
    assert me.shape == (C, rows * h, cols * w)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        c = int(torch.randint(C, (1,), generator=g))
        y = int(torch.randint(rows * h, (1,), generator=g))
        x = int(torch.randint(cols * w, (1,), generator=g))
        assert me[c, y, x].item() == pytest.approx(_me_direct(x, y, c, C, rows, cols, h, w, theta), abs=1e-12)
    # Spatial half repeats in every frame; temporal half is constant inside a frame and differs between frames.
    assert torch.equal(me[:C // 2, :h, :w], me[:C // 2, -h:, -w:])
    assert torch.equal(me[C // 2:, :h, :w], me[C // 2:, :1, :1].expand(-1, h, w))
    assert not torch.equal(me[C // 2:, 0, 0], me[C // 2:, 0, w])


def test_mixed_embedding_is_cached_per_shape_device_dtype():
    a = mixed_embedding(4, 2, 2, 4, 4, 10000.0, None, torch.float32)
    assert a is mixed_embedding(4, 2, 2, 4, 4, 10000.0, None, torch.float32)
    assert a is not mixed_embedding(4, 2, 2, 4, 4, 10000.0, None, torch.float16)


def _tiny_unet():
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32).eval()


def test_embedding_reaches_unet_input_exactly_once_per_call():
    unet = _tiny_unet()
    seen = []
    unet.conv_in = MixedEmbeddingInput(unet.conv_in, rows=2, cols=2, theta=10000.0)
    unet.conv_in.conv.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    x, ctx = torch.randn(1, 4, 16, 16), torch.randn(1, 3, 32)
    x_before = x.clone()
    with torch.no_grad():
        for t in (999, 500):
            unet(x, t, ctx)
    me = mixed_embedding(4, 2, 2, 8, 8, 10000.0, None, torch.float32)
    assert len(seen) == 2
    for s in seen:
        assert torch.equal(s, x + me)            # added once, not accumulated across calls
    assert torch.equal(x, x_before)              # the caller's latent is untouched


def test_fps_module_untrained_is_bit_exact_noop_and_trained_changes_output(tmp_path):
    unet = _tiny_unet()
    x, ctx = torch.randn(2, 4, 16, 16), torch.randn(2, 3, 32)
    with torch.no_grad():
        reference = unet(x, 300, ctx).sample
        width = unet.time_embedding.linear_2.out_features
        module = FPSEmbedding(width)
        original = unet.time_embedding
        unet.time_embedding = FPSConditionedTimeEmbedding(original, module, fps=8)
        assert torch.equal(unet(x, 300, ctx).sample, reference)
        torch.nn.init.normal_(module.mlp[-1].weight, std=0.5)
        trained = unet(x, 300, ctx).sample
        assert not torch.allclose(trained, reference)
        unet.time_embedding = FPSConditionedTimeEmbedding(original, module, fps=30)
        assert not torch.allclose(unet(x, 300, ctx).sample, trained)  # fps is a real input

    base = base_model_fingerprint(unet)
    path = str(tmp_path / "fps.safetensors")
    save_fps_module(path, module, frames=16, layout="4x4", theta=10000.0, base_model=base)
    loaded, meta = load_fps_module(path, expected_base_model=base)
    assert meta["frames"] == "16" and meta["layout"] == "4x4" and meta["base_model"] == base
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), module.state_dict().values()))
    with pytest.raises(ValueError, match="pick the FPS file made with this checkpoint"):
        load_fps_module(path, expected_base_model="sd-unet:in=4,ch=320,temb=1280")


def test_timestep_embedding_matches_diffusers():
    from diffusers.models.embeddings import Timesteps
    t = torch.tensor([0.0, 1.0, 8.0, 120.0, 999.0])
    assert torch.allclose(timestep_embedding(t, 32), Timesteps(32, True, 0)(t), atol=1e-6)


def _smooth_frames(frames, h, w, seed):
    """Frames of smooth content, each a different colour field: alike inside, unlike across frames."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    out = []
    for _ in range(frames):
        a, b, c = torch.rand(3, 3, generator=g)
        out.append(a.view(3, 1, 1) + 0.2 * b.view(3, 1, 1) * x + 0.2 * c.view(3, 1, 1) * y)
    return torch.stack(out)


def test_boundary_error_metric():
    from etc_core import boundary_error_rate, boundary_ok
    good = [pack(_smooth_frames(8, 16, 12, s), 2, 4) for s in range(5)]
    assert boundary_error_rate(good, 2, 4) == 0.0
    # Frames generated at the wrong size (14 px wide instead of 12): seams fall in the wrong places.
    shifted = pack(_smooth_frames(8, 16, 14, 0), 2, 4)[:, :, :48]
    assert not boundary_ok(shifted, 2, 4)
    # One picture across the whole grid: no seams at all, so the strongest "seams" are noise.
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 48), indexing="ij")
    whole = torch.stack([x, y, x * y]) + 0.01 * torch.rand(3, 32, 48, generator=torch.Generator().manual_seed(1))
    assert not boundary_ok(whole, 2, 4)
    assert boundary_error_rate(good[:3] + [shifted], 2, 4) == 0.25


class Downsample(torch.nn.Module):  # named as LDM's, which etc_core.memory reads by class name
    def __init__(self, channels):
        super().__init__()
        self.out_channels = channels


class Upsample(Downsample):
    pass


class Attention(torch.nn.Module):
    def __init__(self, heads):
        super().__init__()
        self.transformer_blocks = torch.nn.ModuleList([torch.nn.Module()])
        self.transformer_blocks[0].attn1 = torch.nn.Module()
        self.transformer_blocks[0].attn1.heads = heads


def _tiny_ldm_unet():
    """The layout etc_core.memory reads: a conv (32) and a downsample (32, level 1) with attention (2 heads),
    a middle block, an output block that upsamples back."""
    unet = torch.nn.Module()
    unet.input_blocks = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Conv2d(4, 32, 3)),
                                             torch.nn.Sequential(Downsample(32), Attention(2))])
    unet.middle_block = torch.nn.Sequential(Attention(2))
    unet.output_blocks = torch.nn.ModuleList([torch.nn.Sequential(Upsample(32))])
    return unet


def test_sampling_memory_counts_skips_working_tensors_and_attention():
    from etc_core.memory import (ATTENTION_TENSORS, FEED_FORWARD_TENSORS, SAMPLER_LATENTS, WORKING_TENSORS,
                                 sampling_bytes, unet_activations)
    unet = _tiny_ldm_unet()
    skips, blocks = unet_activations(unet)
    assert [(a.channels, a.level) for a in skips] == [(32, 0), (32, 1)]
    assert [(a.level, a.heads) for a in blocks] == [(0, 0), (1, 0), (1, 2), (1, 2), (0, 0)]
    h, w, tokens = 64, 32, 64 * 32
    latents = SAMPLER_LATENTS * 4 * tokens * 4
    held = 32 * tokens + 32 * tokens // 4 + WORKING_TENSORS * 32 * tokens
    attention_block = 32 * tokens // 4 * 2  # one tensor of the attention level, 2 bytes an element
    efficient = sampling_bytes(unet, 1, 4, h, w, 2)
    assert efficient == latents + held * 2 + FEED_FORWARD_TENSORS * attention_block
    quadratic = sampling_bytes(unet, 1, 4, h, w, 2, "quadratic")
    scores = 2 * (tokens // 4) ** 2 * 4  # 2 heads, float32
    assert quadratic == latents + held * 2 + ATTENTION_TENSORS * attention_block + scores
    assert sampling_bytes(unet, 3, 4, h, w, 2) == 3 * efficient


def test_a_grid_that_does_not_fit_is_refused_with_sizes_that_fit():
    from etc_core.memory import GridMemoryError, check_grid_fits

    def needed(frames, width, height):
        return frames * width * height  # one byte per pixel
    assert check_grid_fits("N", needed, 16, 64, 32, free=16 * 64 * 32) == 16 * 64 * 32
    with pytest.raises(GridMemoryError) as refused:
        check_grid_fits("ETCSampler", needed, 64, 512, 512, free=2**20, batch=2)
    assert str(refused.value) == ("ETCSampler: 64 frames of 512x512 (batch 2) need about 16 MiB to sample (latents, "
                                  "UNet activations, attention), and 1 MiB is free; sizes that fit: frames=4 at "
                                  "512x512 or frame size 128x128 with frames=64")
    with pytest.raises(GridMemoryError, match="no size fits in the memory free now"):
        check_grid_fits("N", needed, 1, 8, 8, free=10)
