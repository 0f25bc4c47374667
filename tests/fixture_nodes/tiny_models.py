"""Tiny, seeded models built from ComfyUI's own classes (SVD, SV3D, Stable Zero123, SD 2.x, CLIP, CLIP vision,
VAE).

Test-only: real checkpoints cannot be downloaded here, so the tests and the demo
build the real model classes with small configs and random weights.
"""
import inspect
import json
import os
import tempfile

import torch

import comfy.clip_vision
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base
from comfy.ldm.models.autoencoder import AutoencoderKL

try:  # ComfyUI >= 0.3
    from comfy.text_encoders.sd2_clip import SD2Tokenizer
except ImportError:  # early-2024 ComfyUI
    from comfy.sd2_clip import SD2Tokenizer

CONTEXT_DIM = 64
VAE_CONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
              "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}

_UNET_COMMON = dict(use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
                    model_channels=32, channel_mult=[1, 2], num_res_blocks=[1, 1],
                    use_linear_in_transformer=True, context_dim=CONTEXT_DIM,
                    num_heads=-1, num_head_channels=16)

SVD_UNET = dict(_UNET_COMMON, num_classes="sequential", adm_in_channels=768, in_channels=8, out_channels=4,
                transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1,
                extra_ff_mix_layer=True, use_spatial_context=True, merge_strategy="learned_with_images",
                merge_factor=0.0, video_kernel_size=[3, 1, 1], use_temporal_resblock=True,
                use_temporal_attention=True)

# Attention only at the downsampled level keeps 256-frame grids affordable on a CPU.
SD2_UNET = dict(_UNET_COMMON, adm_in_channels=None, in_channels=4, out_channels=4,
                transformer_depth=[0, 1], transformer_depth_output=[0, 0, 1, 1], transformer_depth_middle=1,
                use_temporal_resblock=False, use_temporal_attention=False)

# SV3D: SVD's UNet with other added conditioning (y): the augmentation level (256), SV3D_p also elevation and
# azimuth (2 x 512), as in supported_models.SV3D_u / SV3D_p.
SV3D_ADM = {"u": 256, "p": 1280}
# Stable Zero123: an SD 1.x UNet; its one context token comes from cc_projection (CLIP image embedding + 4
# camera numbers). The model projects only contexts not 768 wide, and the negative is a 768-wide zero, so the
# tiny model keeps the real 768-wide context.
ZERO123_CONTEXT = 768
ZERO123_UNET = dict(_UNET_COMMON, context_dim=ZERO123_CONTEXT, adm_in_channels=None, in_channels=8, out_channels=4,
                    transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1,
                    use_temporal_resblock=False, use_temporal_attention=False)

_cache = {}


def seeded_init_(module: torch.nn.Module, seed: int, std: float = 0.02):
    """Deterministic random weights: normal for matrices, ones for norm scales, zeros for biases."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=generator) * std)
            elif name.endswith("bias"):
                p.zero_()
            elif name.endswith("weight"):  # norm scales
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * std)
    return module


def _patcher(model):
    return comfy.model_patcher.ModelPatcher(model, comfy.model_management.get_torch_device(),
                                            comfy.model_management.unet_offload_device())


def _diffusion_model(config_cls, unet_config, model_cls, seed, **model_kwargs):
    model_config = config_cls(dict(unet_config))
    model_config.unet_config.update(num_heads=-1, num_head_channels=16)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_cls(model_config, **model_kwargs)
    seeded_init_(model.diffusion_model, seed)
    return _patcher(model)


def tiny_vae(seed: int):
    autoencoder = seeded_init_(AutoencoderKL(ddconfig=VAE_CONFIG, embed_dim=4), seed)
    vae = comfy.sd.VAE(sd=autoencoder.state_dict(), config={"params": {"ddconfig": VAE_CONFIG, "embed_dim": 4}})
    # Random weights give a wide posterior; encode to its mean so runs are reproducible bit for bit.
    vae.first_stage_model.regularization.sample = False
    return vae


def _json_config(base: str, **overrides) -> str:
    with open(base) as f:
        config = json.load(f)
    config.update(overrides)
    path = os.path.join(tempfile.gettempdir(), f"etcvcut-{os.path.basename(base)}")
    with open(path, "w") as f:
        json.dump(config, f)
    return path


def tiny_clip_vision(seed: int, projection_dim: int = CONTEXT_DIM):
    key = ("clip_vision", seed, projection_dim)
    if key not in _cache:
        base = os.path.join(os.path.dirname(comfy.clip_vision.__file__), "clip_vision_config_h.json")
        config = _json_config(base, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                              num_hidden_layers=2, patch_size=32, projection_dim=projection_dim)
        clip_vision = comfy.clip_vision.ClipVisionModel(config)
        seeded_init_(clip_vision.model, seed)
        _cache[key] = clip_vision
    return _cache[key]


def _text_config() -> str:
    here = os.path.dirname(inspect.getfile(SD2Tokenizer))
    return _json_config(os.path.join(here, "sd2_clip_config.json"), hidden_size=CONTEXT_DIM,
                        intermediate_size=128, num_attention_heads=2, num_hidden_layers=3,
                        projection_dim=CONTEXT_DIM)


class TinyClipH(comfy.sd1_clip.SDClipModel):
    def __init__(self, device="cpu", dtype=None, **kwargs):
        accepted = inspect.signature(comfy.sd1_clip.SDClipModel.__init__).parameters
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        super().__init__(device=device, layer="hidden", layer_idx=-2, textmodel_json_config=_text_config(),
                         dtype=dtype, special_tokens={"start": 49406, "end": 49407, "pad": 0}, **kwargs)


class TinySD2Clip(comfy.sd1_clip.SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, **kwargs):
        super().__init__(device=device, dtype=dtype, clip_name="h", clip_model=TinyClipH, **kwargs)


def tiny_clip(seed: int):
    clip = comfy.sd.CLIP(target=comfy.supported_models_base.ClipTarget(SD2Tokenizer, TinySD2Clip))
    seeded_init_(clip.cond_stage_model, seed)
    return clip


def tiny_svd(seed: int = 0):
    """(MODEL, CLIP_VISION, VAE) of a tiny SVD built from ComfyUI's SVD classes; cached per seed."""
    key = ("svd", seed)
    if key not in _cache:
        model = _diffusion_model(comfy.supported_models.SVD_img2vid, SVD_UNET, comfy.model_base.SVD_img2vid, seed)
        _cache[key] = (model, tiny_clip_vision(seed + 1), tiny_vae(seed + 2))
    return _cache[key]


def tiny_svd_zero_tca(seed: int = 0):
    """``tiny_svd(seed)`` with every TCA output projection zeroed: a TCA that adds exactly nothing."""
    key = ("svd-zero-tca", seed)
    if key not in _cache:
        model = _diffusion_model(comfy.supported_models.SVD_img2vid, SVD_UNET, comfy.model_base.SVD_img2vid, seed)
        with torch.no_grad():
            for name, module in model.model.diffusion_model.named_modules():
                if name.endswith("attn2") and ".time_stack." in name:
                    module.to_out[0].weight.zero_()
                    module.to_out[0].bias.zero_()
        _cache[key] = (model,) + tiny_svd(seed)[1:]
    return _cache[key]


def tiny_sv3d(seed: int = 0, variant: str = "u"):
    """(MODEL, CLIP_VISION, VAE) of a tiny SV3D_u or SV3D_p from ComfyUI's SV3D classes; cached."""
    key = ("sv3d", variant, seed)
    if key not in _cache:
        name = f"SV3D_{variant}"
        model = _diffusion_model(getattr(comfy.supported_models, name), dict(SVD_UNET, adm_in_channels=SV3D_ADM[variant]),
                                 getattr(comfy.model_base, name), seed)
        _cache[key] = (model, tiny_clip_vision(seed + 1), tiny_vae(seed + 2))
    return _cache[key]


def tiny_zero123(seed: int = 0):
    """(MODEL, CLIP_VISION, VAE) of a tiny Stable Zero123 from ComfyUI's classes, with a seeded cc_projection."""
    key = ("zero123", seed)
    if key not in _cache:
        projection = seeded_init_(torch.nn.Linear(ZERO123_CONTEXT + 4, ZERO123_CONTEXT), seed + 3, std=0.05)
        with torch.no_grad():
            projection.bias.normal_(generator=torch.Generator().manual_seed(seed + 4))
        with torch.no_grad():  # Stable_Zero123 copies the weights into its own cc_projection
            model = _diffusion_model(comfy.supported_models.Stable_Zero123, ZERO123_UNET,
                                     comfy.model_base.Stable_Zero123, seed, cc_projection_weight=projection.weight,
                                     cc_projection_bias=projection.bias)
        _cache[key] = (model, tiny_clip_vision(seed + 1, ZERO123_CONTEXT), tiny_vae(seed + 2))
    return _cache[key]


def tiny_sd2(seed: int = 0):
    """(MODEL, CLIP, VAE) of a tiny SD 2.x built from ComfyUI's classes; cached per seed."""
    key = ("sd2", seed)
    if key not in _cache:
        model = _diffusion_model(comfy.supported_models.SD20, SD2_UNET, comfy.model_base.BaseModel, seed,
                                 model_type=comfy.model_base.ModelType.EPS)
        _cache[key] = (model, tiny_clip(seed + 1), tiny_vae(seed + 2))
    return _cache[key]


# Stock-loader checkpoints: real SGM key layout, sizes ComfyUI's detection accepts (model_channels 320,
# context 1024), depth reduced so a CPU writes, loads and samples them in seconds.
SVD_CHECKPOINT_UNET = dict(SVD_UNET, model_channels=320, context_dim=1024, channel_mult=[1, 1, 1, 1],
                           num_res_blocks=[2, 2, 2, 2], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                           transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=-1)
SD2_CHECKPOINT_UNET = dict(SD2_UNET, model_channels=320, context_dim=1024, channel_mult=[1, 1, 1, 1],
                           num_res_blocks=[2, 2, 2, 2], transformer_depth=[1, 1, 0, 0, 0, 0, 0, 0],
                           transformer_depth_output=[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], transformer_depth_middle=-1)
SD_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


# SD 2.1's own UNet layout (865.9M parameters), for memory estimates: built on the meta device, it holds no
# weights, so a test can hand ETC nodes the real model's shape without loading 3.5 GB.
SD21_UNET = dict(use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, model_channels=320,
                 num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4], num_head_channels=64, num_heads=-1,
                 use_spatial_transformer=True, use_linear_in_transformer=True, transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                 transformer_depth_middle=1, transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                 context_dim=1024, legacy=False, adm_in_channels=None, use_temporal_resblock=False,
                 use_temporal_attention=False)


def meta_sd21():
    """MODEL with SD 2.1's UNet on the meta device (shapes only, fp32)."""
    model_config = comfy.supported_models.SD20(dict(SD21_UNET))
    model_config.set_inference_dtype(torch.float32, None)
    with torch.device("meta"):
        model = comfy.model_base.BaseModel(model_config, model_type=comfy.model_base.ModelType.EPS)
    return _patcher(model)


def write_checkpoint(path: str, kind: str, seed: int = 0):
    """Write a detectable 'svd' or 'sd2' checkpoint (fp16 safetensors) to ``path``, atomically."""
    from safetensors.torch import save_file
    if kind == "svd":
        model = _diffusion_model(comfy.supported_models.SVD_img2vid, SVD_CHECKPOINT_UNET,
                                 comfy.model_base.SVD_img2vid, seed)
    else:
        model = _diffusion_model(comfy.supported_models.SD20, SD2_CHECKPOINT_UNET, comfy.model_base.BaseModel, seed,
                                 model_type=comfy.model_base.ModelType.EPS)
    for module in model.model.diffusion_model.modules():  # ComfyUI reads use_linear etc. from key shapes
        module.to(torch.float16)
    sd = {f"model.diffusion_model.{k}": v for k, v in model.model.diffusion_model.state_dict().items()}
    vae = seeded_init_(AutoencoderKL(ddconfig=SD_VAE, embed_dim=4), seed + 2).half()
    sd.update({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    partial = path + ".partial"
    save_file({k: v.contiguous() for k, v in sd.items()}, partial)
    os.replace(partial, path)
    return path
