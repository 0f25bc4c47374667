"""A run's export folder (``final/``), and the key layouts it writes: diffusers ``UNet2DConditionModel`` ->
the original (LDM) key layout that ComfyUI's stock "Load Diffusion Model" (UNETLoader) node reads from
``ComfyUI/models/unet``, and LoRA adapters under the names ComfyUI's LoRA loader reads.

The key table is the Stable Diffusion one (4 levels, 2 ResNets per level), with attention in the levels
that have it (SD 2.x: the first three down and the last three up levels). In an LDM output block the
upsampler follows the ResNet and, where the level has one, the transformer: ``output_blocks.N.2`` after
attention, ``output_blocks.N.1`` without.
"""
import os

import torch
from safetensors.torch import save_file

from ..fps_embedding import save_fps_module

_TOP = [("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."), ("out.2.", "conv_out.")]
_RESNET = [("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"),
           ("out_layers.3", "conv2"), ("emb_layers.1", "time_emb_proj"), ("skip_connection", "conv_shortcut")]


def _layer_prefixes(up_attention):
    """(LDM prefix, diffusers prefix) pairs; ``up_attention(i)``: whether up level ``i`` has attention."""
    pairs = []
    for i in range(4):
        for j in range(2):
            pairs.append((f"input_blocks.{3 * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if i < 3:
                pairs.append((f"input_blocks.{3 * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(3):
            pairs.append((f"output_blocks.{3 * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if i > 0:
                pairs.append((f"output_blocks.{3 * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < 3:
            pairs.append((f"input_blocks.{3 * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
            pairs.append((f"output_blocks.{3 * i + 2}.{2 if up_attention(i) else 1}.", f"up_blocks.{i}.upsamplers.0."))
    pairs.append(("middle_block.1.", "mid_block.attentions.0."))
    pairs += [(f"middle_block.{2 * j}.", f"mid_block.resnets.{j}.") for j in range(2)]
    return pairs


def unet_to_ldm(state_dict: dict) -> dict:
    """Rename a diffusers UNet state dict to LDM keys (``input_blocks...``, no prefix)."""
    layers = _layer_prefixes(lambda i: any(k.startswith(f"up_blocks.{i}.attentions.") for k in state_dict))
    out = {}
    for key, value in state_dict.items():
        new = key
        for ldm, hf in _TOP:
            if new.startswith(hf):
                new = ldm + new[len(hf):]
        if "resnets" in new:
            for ldm, hf in _RESNET:
                new = new.replace(hf, ldm)
        for ldm, hf in layers:
            if new.startswith(hf):
                new = ldm + new[len(hf):]
        out[new] = value
    unmapped = [k for k in out if k.startswith(("down_blocks", "up_blocks", "mid_block"))]
    if unmapped:
        raise ValueError(f"this UNet does not have the Stable Diffusion layout (unmapped: {unmapped[:3]})")
    return out


def save_comfyui_unet(path: str, unet) -> str:
    """Write ``unet`` (diffusers, unwrapped) as an LDM-layout safetensors for ComfyUI's models/unet."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in unet_to_ldm(unet.state_dict()).items()}
    save_file(tensors, path)
    return path


def lora_modules(unet) -> dict:
    """{module name: (down [rank, in], up [out, rank])} of the peft LoRA adapters in ``unet``."""
    return {name: (module.lora_A["default"].weight, module.lora_B["default"].weight)
            for name, module in unet.named_modules() if "default" in getattr(module, "lora_A", {})}


def comfyui_lora(unet, alpha: float) -> dict:
    """The LoRA of ``unet`` under ComfyUI's names for the LDM UNet (``lora_unet_<ldm key with _>``), read by the
    stock LoraLoaderModelOnly as ``weight += alpha / rank * up @ down``."""
    tensors = {}
    for name, (down, up) in lora_modules(unet).items():
        (ldm,) = unet_to_ldm({name + ".weight": None})
        key = "lora_unet_" + ldm[:-len(".weight")].replace(".", "_")
        tensors[key + ".lora_down.weight"] = down.detach().float().contiguous().cpu()
        tensors[key + ".lora_up.weight"] = up.detach().float().contiguous().cpu()
        tensors[key + ".alpha"] = torch.tensor(float(alpha))
    return tensors


def write_final(folder: str, unet, fps_module, config, layout: str, base_model: str) -> str:
    """``final/unet`` (diffusers), ``final/etc_unet_comfyui.safetensors`` (for ComfyUI's models/unet, when the
    UNet has the SD layout) and ``final/etc_fps.safetensors``; returns the folder. A LoRA run
    (``config.lora_rank``) writes ``final/etc_lora_diffusers.safetensors`` (peft names) and, for the SD layout,
    ``final/etc_lora_comfyui.safetensors`` (ComfyUI's models/loras) instead of the UNet. ``unet``: the
    unwrapped diffusers UNet, without the pack's input and time-embedding wrappers."""
    sd_layout = len(unet.config.block_out_channels) == 4 and unet.config.layers_per_block == 2
    if config.lora_rank:
        from peft.utils import get_peft_model_state_dict
        os.makedirs(folder, exist_ok=True)
        lora = {k: v.detach().float().contiguous().cpu() for k, v in get_peft_model_state_dict(unet).items()}
        save_file(lora, os.path.join(folder, "etc_lora_diffusers.safetensors"))
        if sd_layout:
            save_file(comfyui_lora(unet, config.lora_alpha or config.lora_rank),
                      os.path.join(folder, "etc_lora_comfyui.safetensors"))
    else:
        unet.save_pretrained(os.path.join(folder, "unet"))
        if sd_layout:
            save_comfyui_unet(os.path.join(folder, "etc_unet_comfyui.safetensors"), unet)
    save_fps_module(os.path.join(folder, "etc_fps.safetensors"), fps_module, frames=config.frames, layout=layout,
                    theta=config.theta, base_model=base_model)
    return folder
