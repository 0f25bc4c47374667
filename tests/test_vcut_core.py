"""vcut_core without ComfyUI: diffusers SVD UNet and pipeline, cache rules, step mapping."""
import pytest
import torch
from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline,
                       UNet2DConditionModel, UNetSpatioTemporalConditionModel)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

import vcut_core
from vcut_core import NotSVDModelError, run_length_rows, steps_from_events
from etc_vcut_dev.pack import pack_submodule


def tiny_svd_unet(seed=0):
    torch.manual_seed(seed)
    return UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24, cross_attention_dim=32, num_attention_heads=(2, 4),
        num_frames=3).eval()


def test_finds_all_cross_attentions_and_refuses_image_unets():
    sites = vcut_core.find_cross_attentions(tiny_svd_unet())
    assert len(sites.sca) == len(sites.tca) == 4
    assert all(n.endswith("transformer_blocks.0.attn2") for n in sites.sca)
    assert all(".temporal_transformer_blocks." in n for n in sites.tca)
    image_unet = UNet2DConditionModel(block_out_channels=(32, 64), cross_attention_dim=32, norm_num_groups=32,
                                      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                      up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    with pytest.raises(NotSVDModelError, match="not a Stable Video Diffusion UNet"):
        vcut_core.find_cross_attentions(image_unet)


def test_linear_modes_match_attention_and_drop_matches_zeroed_tca():
    unet = tiny_svd_unet()
    x, t, ctx, ids = torch.randn(2, 3, 8, 8, 8), torch.tensor([10.0]), torch.randn(2, 1, 32), torch.randn(2, 3)
    with torch.no_grad():
        reference = unet(x, t, ctx, ids).sample
        names = vcut_core.apply_vcut(unet, "linear", "linear")
        assert all(type(unet.get_submodule(n)).__name__ == "Attention" for n in names)  # a processor, no module swap
        assert torch.allclose(unet(x, t, ctx, ids).sample, reference, atol=1e-5, rtol=0)
        vcut_core.apply_vcut(unet, "keep", "drop")
        dropped = unet(x, t, ctx, ids).sample
        vcut_core.remove_vcut(unet)
        assert torch.equal(unet(x, t, ctx, ids).sample, reference)
        for name in vcut_core.find_cross_attentions(unet).tca:
            out = unet.get_submodule(name).to_out[0]
            out.weight.zero_()
            out.bias.zero_()
        assert torch.allclose(unet(x, t, ctx, ids).sample, dropped, atol=1e-6, rtol=0)


def test_cache_is_reused_only_for_equal_context_and_weights():
    unet = tiny_svd_unet()
    vcut_core.apply_vcut(unet, "linear", "keep")
    attention = unet.get_submodule(vcut_core.find_cross_attentions(unet).sca[0])
    processor = attention.processor
    processor.shortcut.max_entries = 2
    x = torch.randn(4, 16, 32)
    a, b = torch.randn(1, 1, 32).expand(4, 1, 32), torch.randn(1, 1, 32).expand(4, 1, 32)
    with torch.no_grad():
        out_a = attention(x, encoder_hidden_states=a.clone())
        attention(x, encoder_hidden_states=a.clone())
        assert processor.shortcut.stats == {"hits": 1, "misses": 1, "fallbacks": 0}
        out_b = attention(x, encoder_hidden_states=b.clone())
        assert not torch.allclose(out_a, out_b) and processor.shortcut.stats["misses"] == 2
        attention.to_v.weight.mul_(2.0)  # in-place weight change invalidates entries
        out_a2 = attention(x, encoder_hidden_states=a.clone())
        assert processor.shortcut.stats["misses"] == 3 and not torch.allclose(out_a, out_a2)
        for ctx in (torch.randn(4, 1, 32), torch.randn(4, 1, 32), torch.randn(4, 1, 32)):
            attention(x, encoder_hidden_states=ctx)
        assert len(processor.shortcut._cache) == 2  # bounded
        two_tokens = torch.randn(4, 2, 32)
        out = attention(x, encoder_hidden_states=two_tokens)  # two tokens: real attention
        assert processor.shortcut.stats["fallbacks"] == 1
        assert torch.equal(out, processor.wrapped(attention, x, two_tokens))


def test_run_length_rows():
    ctx = torch.cat([torch.ones(3, 1, 4), torch.zeros(2, 1, 4), torch.ones(1, 1, 4)])
    rows, counts = run_length_rows(ctx)
    assert counts.tolist() == [3, 2, 1]
    assert torch.equal(rows.repeat_interleave(counts, 0), ctx)


def test_steps_from_events_follow_the_callback_after_each_first_call():
    # Heun on 4 steps: first call, callback, corrector on the next step's sigma; the last step has no corrector.
    events = [("call", 9.0), ("callback", 0), ("call", 4.0), ("call", 4.0), ("callback", 1), ("call", 2.0),
              ("call", 2.0), ("callback", 2), ("call", 1.0), ("call", 1.0), ("callback", 3)]
    plan = steps_from_events(events)
    assert [(e.sigma, e.step) for e in plan] == [(9.0, 0), (4.0, 0), (4.0, 1), (2.0, 1), (2.0, 2), (1.0, 2),
                                                 (1.0, 3)]


def test_dry_run_plan_heun_and_adaptive_structures():
    """nodes/sampler_dry_run.py (ComfyUI's sampler protocol) with vcut_core.step_plan, on two sampler shapes."""
    sigmas = torch.tensor([9.0, 4.0, 2.0, 1.0, 0.0])

    def heun_like(model, x, sigmas, extra_args=None, callback=None, disable=None):
        for i in range(len(sigmas) - 1):
            denoised = model(x, sigmas[i] * torch.ones(1), **extra_args)
            callback({"i": i, "x": x, "denoised": denoised})
            if sigmas[i + 1] > 0:
                model(x, sigmas[i + 1] * torch.ones(1), **extra_args)
        return x

    def adaptive_like(model, x, sigmas, extra_args=None, callback=None, disable=None):
        sigma, i = sigmas[0], 0
        while sigma > 1.0:  # the accepted step size depends on the output
            out = model(x, sigma * torch.ones(1), **extra_args)
            callback({"i": i})
            sigma, i = sigma / (2.0 + float(out.abs().mean())), i + 1
        return x

    noise = torch.ones(1, 4, 2, 2)
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    dry_run_plan = pack_submodule("nodes.sampler_dry_run").dry_run_plan
    plan = dry_run_plan(heun_like, {}, None, noise, sigmas, {"model_options": {}})
    assert torch.equal(torch.random.get_rng_state(), before)
    assert [e.step for e in plan] == [0, 0, 1, 1, 2, 2, 3]
    assert dry_run_plan(adaptive_like, {}, None, noise, sigmas, {"model_options": {}}) is None


def _tiny_pipeline():
    unet = tiny_svd_unet()
    unet.register_to_config(addition_time_embed_dim=8)
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                                       latent_channels=4, layers_per_block=1)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        intermediate_size=37, patch_size=4))
    processor = CLIPImageProcessor(crop_size=32, size=32)
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       prediction_type="v_prediction", use_karras_sigmas=True,
                                       timestep_spacing="leading")
    return StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler,
                                        feature_extractor=processor).to("cpu")


@pytest.mark.parametrize("cutoff", [2, 4])
def test_diffusers_pipeline_cutoff_counts_passes(cutoff):
    pipe = _tiny_pipeline()
    image = torch.rand(1, 3, 32, 32)
    kwargs = dict(height=32, width=32, num_frames=3, num_inference_steps=4, min_guidance_scale=1.0,
                  max_guidance_scale=3.0, decode_chunk_size=3, output_type="pt")
    baseline = pipe(image, generator=torch.Generator().manual_seed(0), **kwargs).frames
    vcut_core.apply_vcut(pipe.unet, "linear", "linear")
    cutoff_hooks = vcut_core.enable_guidance_cutoff(pipe, cutoff)
    batches = []
    hook = pipe.unet.conv_in.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0] // 3))
    frames = pipe(image, generator=torch.Generator().manual_seed(0), **kwargs).frames
    hook.remove()
    vcut_core.disable_guidance_cutoff(pipe)
    vcut_core.remove_vcut(pipe.unet)
    assert cutoff_hooks.passes == 4 and batches == [2] * cutoff + [1] * (4 - cutoff)
    assert not pipe.unet._forward_hooks and not pipe.unet._forward_pre_hooks  # disabled: the hooks are gone
    if cutoff == 4:
        assert torch.allclose(frames, baseline, atol=1e-5)
    else:
        assert frames.shape == baseline.shape and not torch.allclose(frames, baseline, atol=1e-4)


@pytest.mark.parametrize("return_dict", [True, False])
def test_cutoff_hooks_return_the_cond_output_for_both_halves_in_either_output_form(return_dict):
    """Past the cutoff a direct UNet call (as other pipelines make it) gets its [uncond, cond] batch back whole:
    the cond half run once with the mean context, in the output form asked for."""
    pipe = _tiny_pipeline()
    pipe._guidance_scale = 3.0  # what the pipeline sets while it runs: guidance on
    pipe.scheduler.set_timesteps(4)
    x, ctx, ids = torch.randn(2, 3, 8, 8, 8), torch.randn(2, 1, 32), torch.randn(2, 3)
    t = pipe.scheduler.timesteps[2]
    with torch.no_grad():
        alone = pipe.unet(x[1:], t, (ctx[:1] + ctx[1:]) * 0.5, ids[1:]).sample
        cutoff = vcut_core.enable_guidance_cutoff(pipe, 2)
        out = pipe.unet(x, t, encoder_hidden_states=ctx, added_time_ids=ids, return_dict=return_dict)
        vcut_core.disable_guidance_cutoff(pipe)
    sample = out.sample if return_dict else out[0]
    assert cutoff.passes == 1 and sample.shape == (2, 3, 4, 8, 8)
    assert torch.equal(sample[0], sample[1]) and torch.allclose(sample[1:], alone, atol=1e-6, rtol=0)
