"""A tiny base model of the SD 2.x family for the demo, written for the trainer and for ComfyUI's stock loaders.

What ComfyUI 2024 and 0.3.x accept, and so what is built here:

- UNet: ``UNETLoader`` infers the config from the weights but recognises SD 2.x only at width 320 with a
  1024-d text context and linear attention projections, and reads ``output_blocks.11.1`` to guess eps vs v
  prediction (a missing key is an error in early 2024). So: SD 2.1's block layout (4 levels, 2 ResNets,
  attention in three) at width 320 on every level, 114M parameters instead of 866M.
- Text encoder: ``CLIPLoader`` builds the full SD 2.x text tower (24 layers, 1024 wide, 16 heads) whatever
  the file holds; missing weights stay uninitialised. So the trainer's encoder has that tower's width and
  layer shape but 2 layers (random, frozen), and the ComfyUI file adds 22 layers whose output projections
  are zero: each adds exactly nothing to the residual stream, so ComfyUI's penultimate-layer output is the
  trainer's last hidden state. Only that file is full size (about 0.9 GB: the 2 real layers and the
  embeddings in fp32, the zero layers in fp16).
- VAE: ``VAELoader`` builds the full SD VAE (83M parameters) unless the file is in the TAESD layout (2.4M
  parameters, same 8x downscale and 4 latent channels). The demo's VAE is a TAESD constructed, not trained
  (``pooling_tiny_vae``): 8x8 average pooling in, nearest upsampling out, so frames come back as 8x8-pixel
  blocks of the mean colour and a 10-pixel square as a blob around its centre (fitting TAESD from
  scratch on a 2-core CPU, about 3 s per 16-frame step, was still worse after 300 steps). The trainer
  reads it through diffusers' ``AutoencoderTiny`` (``etc_core.train.vae``).
"""
import os

import torch

from etc_core import sd2
from etc_core.files.atomic import save_file_atomic
from etc_vcut_dev.tiny_diffusers import clip_tokenizer

UNET_CONFIG = dict(sample_size=8, block_out_channels=(320,) * 4, layers_per_block=2,
                   down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                   up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                   cross_attention_dim=1024, attention_head_dim=5, use_linear_projection=True)
# Layouts bench/demo_training.py compares: cross-attention where SD 2.1 has it, or on the first level only
# (the one UNETLoader needs: output_blocks.11.1), with or without the middle block.
_LEVEL0 = dict(UNET_CONFIG, down_block_types=("CrossAttnDownBlock2D",) + ("DownBlock2D",) * 3,
               up_block_types=("UpBlock2D",) * 3 + ("CrossAttnUpBlock2D",))
UNET_LAYOUTS = {"sd21": UNET_CONFIG, "level0": _LEVEL0, "level0_nomid": dict(_LEVEL0, mid_block_type=None),
                "level01": dict(UNET_CONFIG, down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",) * 2,
                                up_block_types=("UpBlock2D",) * 2 + ("CrossAttnUpBlock2D",) * 2)}
TEXT_LAYERS, COMFY_TEXT_LAYERS = 2, 24


def text_encoder(seed: int = 0, word_scale: float = 1.0):
    """SD 2.x's text tower shape (1024 wide, 16 heads, GELU MLP of 4096) with TEXT_LAYERS layers, random and
    frozen, its token embeddings multiplied by ``word_scale``.

    At random initialisation (word_scale 1) the residual stream is mostly what every caption shares (position
    embeddings, the layers' outputs), so the output at a word tells little about the word: for "a green
    square moving up", the output at "up" has cosine 0.92 with "a red square moving up"'s and 0.93 with "a
    green square moving down"'s. At word_scale 30 each output is mostly its own word, as in a trained CLIP:
    0.97 to the other colour's "up", 0.21 to "down". bench/demo_held_out.py measures what that does to the
    held-out caption (docs/demo-timing.md, "Session 11"); the demo uses 30 (demo_model.WORD_SCALE)."""
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(seed)
    encoder = CLIPTextModel(CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=TEXT_LAYERS,
                                           num_attention_heads=16, max_position_embeddings=77, projection_dim=1024,
                                           hidden_act="gelu", vocab_size=49408))
    with torch.no_grad():
        encoder.get_input_embeddings().weight.mul_(word_scale)
    return encoder


def pooling_tiny_vae(background, scale: float = 0.3, seed: int = 0, luma: bool = False):
    """An ``AutoencoderTiny`` (TAESD layout) built to be 8x8 average pooling and nearest upsampling.

    Every residual block's last convolution is zero (the block passes its non-negative input through),
    the strided convolutions average 2x2, the up-path convolutions copy; channels 0-2 carry RGB in
    [0, 1]. Latent channels 0-2 are ``scale * (cell mean - background)`` (0 on the background, small enough
    for the decoder's tanh clamp to be nearly linear); channel 3 stays 0, or with ``luma`` is the mean of
    channels 0-2 (the decoder does not read it; bench/etc_boundary_error.py measures seams on latents, in
    every channel). The other channels keep their random initialisation; they do not reach the output."""
    from diffusers import AutoencoderTiny
    from diffusers.models.autoencoders.vae import AutoencoderTinyBlock
    torch.manual_seed(seed)
    vae = AutoencoderTiny()
    background = torch.tensor(background, dtype=torch.float32) / 255.0
    rgb = torch.arange(3)
    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, AutoencoderTinyBlock):
                module.conv[-1].weight.zero_()
                module.conv[-1].bias.zero_()
        encoder, decoder = vae.encoder.layers, vae.decoder.layers
        encoder[0].weight[:3].zero_()
        encoder[0].weight[rgb, rgb, 1, 1] = 1.0
        encoder[0].bias[:3].zero_()
        for layer in list(encoder) + list(decoder):
            if isinstance(layer, torch.nn.Conv2d) and layer.bias is None:  # the down and up convolutions
                layer.weight.zero_()
                channels = torch.arange(layer.out_channels)
                if layer.stride[0] == 2:
                    layer.weight[channels, channels, 1:3, 1:3] = 0.25
                else:
                    layer.weight[channels, channels, 1, 1] = 1.0
        encoder[-1].weight.zero_()
        encoder[-1].weight[rgb, rgb, 1, 1] = scale
        encoder[-1].bias.zero_()
        encoder[-1].bias[:3] = -scale * background
        if luma:
            encoder[-1].weight[3, rgb, 1, 1] = scale / 3
            encoder[-1].bias[3] = -scale * background.mean()
        decoder[0].weight[:, :].zero_()
        decoder[0].weight[rgb, rgb, 1, 1] = 1.0 / scale
        decoder[0].bias[:3] = background
        decoder[-1].weight.zero_()
        decoder[-1].weight[rgb, rgb, 1, 1] = 1.0
        decoder[-1].bias.zero_()
    return vae


def set_latent_scale(vae, frames: torch.Tensor) -> float:
    """Set ``vae``'s ``scaling_factor`` so that the scaled latents of ``frames`` [N, 3, H, W] in [-1, 1] have
    unit variance (what SD's 0.18215 does for its own VAE); returns it."""
    with torch.no_grad():
        std = torch.cat([vae.encode(frames[i:i + 64]).latents for i in range(0, len(frames), 64)]).std()
    vae.register_to_config(scaling_factor=float(1.0 / std))
    return vae.config.scaling_factor


def zero_residual_init(unet):
    """LDM's initialisation, which SD was trained from (``zero_module`` in ``openaimodel.py``): the last
    convolution of every ResNet block, every transformer's output projection and the UNet's output
    convolution start at zero, so each block starts as the identity and the first prediction is 0."""
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.transformers.transformer_2d import Transformer2DModel
    with torch.no_grad():
        for module in unet.modules():
            last = (module.conv2 if isinstance(module, ResnetBlock2D) else
                    module.proj_out if isinstance(module, Transformer2DModel) else None)
            if last is not None:
                last.weight.zero_()
                last.bias.zero_()
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.zero_()
    return unet


def write_pretrained(folder: str, vae, seed: int = 0, unet_config: dict = None, word_scale: float = 1.0) -> str:
    """The diffusers folder the trainer reads (unet, vae, text_encoder, tokenizer, scheduler); ``unet_config``
    replaces UNET_CONFIG (bench/demo_training.py compares layouts), ``word_scale`` the text encoder's
    (bench/demo_held_out.py)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    torch.manual_seed(seed)
    unet = zero_residual_init(UNet2DConditionModel(**(unet_config or UNET_CONFIG)))
    unet.save_pretrained(os.path.join(folder, "unet"))
    vae.save_pretrained(os.path.join(folder, "vae"))
    text_encoder(seed + 1, word_scale).save_pretrained(os.path.join(folder, "text_encoder"))
    clip_tokenizer(pad_token="!").save_pretrained(os.path.join(folder, "tokenizer"))
    DDPMScheduler(prediction_type="v_prediction", **sd2.SCHEDULE).save_pretrained(os.path.join(folder, "scheduler"))
    return folder


def save_comfyui_text_encoder(path: str, encoder) -> str:
    """``encoder`` (transformers ``CLIPTextModel`` of SD 2.x width) as the 24-layer file ``CLIPLoader`` reads:
    its own layers first, then zero layers (zero attention and MLP outputs: exact identities)."""
    # transformers 4 names the weights "text_model.encoder...", transformers 5 "encoder..."
    state = {"text_model." + k.removeprefix("text_model."): v.detach().float().contiguous()
             for k, v in encoder.state_dict().items() if not k.endswith("position_ids")}
    layers = encoder.config.num_hidden_layers
    first = "text_model.encoder.layers.0."
    for i in range(layers, COMFY_TEXT_LAYERS):
        for key, value in list(state.items()):
            if key.startswith(first):
                state[f"text_model.encoder.layers.{i}.{key[len(first):]}"] = torch.zeros_like(value, dtype=torch.float16)
    state["text_projection.weight"] = torch.eye(encoder.config.hidden_size)  # pooled output, unused by SD 2.x
    return save_file_atomic(state, path)  # a loader never lists a half-written file


def save_comfyui_vae(path: str, vae) -> str:
    """``AutoencoderTiny`` in the TAESD layout ``VAELoader`` recognises, scaled to SD's latent format:
    ComfyUI's latent is ``encoder(x) / vae_scale`` and the UNet sees it times 0.18215."""
    state = {}
    for key, value in vae.state_dict().items():
        part, _, index, rest = key.split(".", 3)  # "encoder.layers.3.conv.0.weight"
        # ComfyUI's decoder starts with its clamp module; diffusers applies the clamp in forward().
        index = int(index) + (part == "decoder")
        state[f"taesd_{part}.{index}.{rest}"] = value.detach().float().contiguous()
    state["vae_scale"] = torch.tensor(sd2.LATENT_SCALE / vae.config.scaling_factor)
    state["vae_shift"] = torch.tensor(0.0)
    return save_file_atomic(state, path)  # a loader never lists a half-written file

