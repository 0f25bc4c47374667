"""Tiny diffusers/transformers models written to disk, for the trainer and filter tests."""
import os

import numpy as np
import torch

from etc_core import sd2
from etc_vcut_dev.comfy_host import comfyui_path
from etc_vcut_dev.synthetic import moving_square


def clip_tokenizer(pad_token: str = None):
    """CLIP's BPE tokenizer from the vocabulary ComfyUI ships; ``pad_token="!"`` (id 0) pads as SD 2.x's
    tokenizer and ComfyUI's SD2Tokenizer do."""
    from transformers import CLIPTokenizer
    vocab = os.path.join(comfyui_path(), "comfy", "sd1_tokenizer")
    padding = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer(os.path.join(vocab, "vocab.json"), os.path.join(vocab, "merges.txt"), model_max_length=77,
                         **padding)


def write_tiny_sd(path: str, prediction_type: str = "epsilon", sd_layout: bool = False) -> str:
    """A Stable-Diffusion-layout folder (unet, vae, text_encoder, tokenizer, scheduler) with random weights.

    ``sd_layout``: a UNet with SD 2.x's block layout, width 320 and 1024-d text context (what ComfyUI's
    model detection recognises as SD 2.x), at one width throughout so a CPU trains it in seconds.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    if sd_layout:
        from etc_vcut_dev.tiny_base import UNET_CONFIG
        unet = UNet2DConditionModel(**UNET_CONFIG)
    else:
        unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                    block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                    attention_head_dim=8, norm_num_groups=32)
    unet.save_pretrained(os.path.join(path, "unet"))
    hidden = 1024 if sd_layout else 32
    AutoencoderKL(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=1,
                  norm_num_groups=32).save_pretrained(os.path.join(path, "vae"))
    CLIPTextModel(CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
                                 num_attention_heads=2, max_position_embeddings=77)).save_pretrained(os.path.join(path, "text_encoder"))
    clip_tokenizer().save_pretrained(os.path.join(path, "tokenizer"))
    DDPMScheduler(prediction_type=prediction_type, **sd2.SCHEDULE).save_pretrained(os.path.join(path, "scheduler"))
    return path


def write_synthetic_data(folder: str, frames: int = 4):
    """Moving-shape videos with captions, captioned images, labelled image folders."""
    import cv2

    from etc_core.files.video_io import write_video
    os.makedirs(folder, exist_ok=True)
    colors = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    videos, images = [], []
    for name, color in colors.items():
        video = moving_square([(t, 8) for t in range(24)], 12, color, 32, background=0)
        write_video(os.path.join(folder, f"{name}.mp4"), video, 24.0)
        videos.append(f'{{"video": "{name}.mp4", "caption": "a {name} square moving right"}}\n')
        still = np.zeros((40, 48, 3), np.uint8)
        still[10:30, 14:34] = color
        cv2.imwrite(os.path.join(folder, f"{name}.png"), cv2.cvtColor(still, cv2.COLOR_RGB2BGR))
        images.append(f'{{"image": "{name}.png", "caption": "a {name} square"}}\n')
        label_dir = os.path.join(folder, "labels", f"{name}_circle")
        os.makedirs(label_dir, exist_ok=True)
        for i in range(frames + 1):
            img = np.zeros((32, 32, 3), np.uint8)
            cv2.circle(img, (8 + 3 * i, 16), 6, color[::-1], -1)
            cv2.imwrite(os.path.join(label_dir, f"{i}.png"), img)
    with open(os.path.join(folder, "videos.jsonl"), "w") as f:
        f.writelines(videos)
    with open(os.path.join(folder, "images.jsonl"), "w") as f:
        f.writelines(images)
    return {"video_manifest": os.path.join(folder, "videos.jsonl"),
            "image_manifest": os.path.join(folder, "images.jsonl"), "label_folder": os.path.join(folder, "labels")}


def _vae_to_ldm(state_dict: dict, levels: int) -> dict:
    """diffusers AutoencoderKL keys -> the LDM ``first_stage_model`` layout of an SD checkpoint (test-only)."""
    import re
    out = {}
    for key, value in state_dict.items():
        new = re.sub(r"(en|de)coder\.mid_block\.resnets\.(\d)", lambda m: f"{m[1]}coder.mid.block_{int(m[2]) + 1}", key)
        new = re.sub(r"decoder\.up_blocks\.(\d+)", lambda m: f"decoder.up.{levels - 1 - int(m[1])}", new)
        for hf, ldm in (("down_blocks.", "down."), ("resnets.", "block."), ("downsamplers.0.", "downsample."),
                        ("upsamplers.0.", "upsample."), ("conv_shortcut", "nin_shortcut"),
                        ("conv_norm_out", "norm_out"),
                        ("mid_block.attentions.0.", "mid.attn_1."), ("attn_1.group_norm", "attn_1.norm"),
                        ("attn_1.to_q", "attn_1.q"), ("attn_1.to_k", "attn_1.k"), ("attn_1.to_v", "attn_1.v"),
                        ("attn_1.to_out.0", "attn_1.proj_out")):
            new = new.replace(hf, ldm)
        if ".attn_1." in new and new.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        out["first_stage_model." + new] = value
    return out


def _text_to_open_clip(text_encoder) -> dict:
    """CLIPTextModel -> SD 2.x's ``cond_stage_model.model`` (OpenCLIP) layout, plus the last layer that SD 2.x
    skips (random), as a real file holds it (test-only)."""
    prefix, sd = "cond_stage_model.model.", {}
    config = text_encoder.config
    text_model = getattr(text_encoder, "text_model", text_encoder)  # transformers 5 dropped the wrapper
    layers = text_model.encoder.layers
    generator = torch.Generator().manual_seed(5)
    for i in range(len(layers) + 1):
        block = f"{prefix}transformer.resblocks.{i}."
        if i < len(layers):
            layer = layers[i]
            attn = layer.self_attn
            weights = {"attn.in_proj_weight": torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
                       "attn.in_proj_bias": torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]),
                       "attn.out_proj.weight": attn.out_proj.weight, "attn.out_proj.bias": attn.out_proj.bias,
                       "ln_1.weight": layer.layer_norm1.weight, "ln_1.bias": layer.layer_norm1.bias,
                       "ln_2.weight": layer.layer_norm2.weight, "ln_2.bias": layer.layer_norm2.bias,
                       "mlp.c_fc.weight": layer.mlp.fc1.weight, "mlp.c_fc.bias": layer.mlp.fc1.bias,
                       "mlp.c_proj.weight": layer.mlp.fc2.weight, "mlp.c_proj.bias": layer.mlp.fc2.bias}
        else:
            weights = {k: torch.randn(v.shape, generator=generator) * 0.02 for k, v in previous.items()}
        previous = weights
        sd.update({block + k: v for k, v in weights.items()})
    embeddings = text_model.embeddings
    sd.update({prefix + "token_embedding.weight": embeddings.token_embedding.weight,
               prefix + "positional_embedding": embeddings.position_embedding.weight,
               prefix + "ln_final.weight": text_model.final_layer_norm.weight,
               prefix + "ln_final.bias": text_model.final_layer_norm.bias,
               prefix + "text_projection": torch.randn(config.hidden_size, config.hidden_size, generator=generator)})
    return sd


def write_tiny_sd2_checkpoint(path: str, folder: str, v_prediction: bool = False) -> str:
    """One SD 2.x ``.safetensors`` file (LDM keys, fp16, as ComfyUI's models/checkpoints holds them) made from
    the tiny diffusers SD with SD 2.x's layout written to ``folder``. ``v_prediction`` spreads the norm bias
    ComfyUI (and etc_core.train.pretrained) read the prediction type from."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    from etc_core.train.export import unet_to_ldm
    write_tiny_sd(folder, sd_layout=True)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet"))
    vae = AutoencoderKL.from_pretrained(os.path.join(folder, "vae"))
    text_encoder = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"))
    sd = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(unet.state_dict()).items()}
    sd.update(_vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels)))
    sd.update(_text_to_open_clip(text_encoder))
    if v_prediction:
        probe = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
        sd[probe] = torch.randn(sd[probe].shape, generator=torch.Generator().manual_seed(1)) * 0.2
    save_file({k: v.detach().half().contiguous() for k, v in sd.items()}, path)
    return path


def write_tiny_clip(path: str) -> str:
    """A tiny CLIP saved in transformers format (BPE vocabulary: the one ComfyUI ships), for the video filter."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor
    torch.manual_seed(0)
    config = CLIPConfig(text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                                     "num_attention_heads": 2, "max_position_embeddings": 77},
                        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32),
                  tokenizer=clip_tokenizer()).save_pretrained(path)
    return path


def write_moving_square(path: str, color, frames: int = 6) -> str:
    """A 48x48 clip of a 16-pixel square of ``color`` moving right, 8 fps."""
    from etc_core.files.video_io import write_video
    return write_video(path, moving_square([(4 + 4 * t, 10) for t in range(frames)], 16, color, 48, background=0), 8.0)
