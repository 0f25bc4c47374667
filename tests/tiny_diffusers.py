"""Tiny diffusers/transformers models written to disk, for the trainer and filter tests."""
import os

import numpy as np
import torch

from comfy_host import comfyui_path


def clip_tokenizer():
    from transformers import CLIPTokenizer
    vocab = os.path.join(comfyui_path(), "comfy", "sd1_tokenizer")  # ComfyUI ships CLIP's BPE vocabulary
    return CLIPTokenizer(os.path.join(vocab, "vocab.json"), os.path.join(vocab, "merges.txt"), model_max_length=77)


def write_tiny_sd(path: str, prediction_type: str = "epsilon", sd_layout: bool = False) -> str:
    """A Stable-Diffusion-layout folder (unet, vae, text_encoder, tokenizer, scheduler) with random weights.

    ``sd_layout``: a UNet with SD 2.x's block layout, width 320 and 1024-d text context (what ComfyUI's
    model detection recognises as SD 2.x), at one width throughout so a CPU trains it in seconds.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    if sd_layout:
        unet = UNet2DConditionModel(sample_size=8, block_out_channels=(320,) * 4, layers_per_block=2,
                                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                                    cross_attention_dim=1024, attention_head_dim=5, use_linear_projection=True)
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
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  prediction_type=prediction_type).save_pretrained(os.path.join(path, "scheduler"))
    return path


def write_synthetic_data(folder: str, frames: int = 4):
    """Moving-shape videos with captions, captioned images, labelled image folders."""
    import cv2

    from etc_core.video_io import write_video
    os.makedirs(folder, exist_ok=True)
    colors = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    videos, images = [], []
    for name, color in colors.items():
        video = np.zeros((24, 32, 32, 3), np.uint8)
        for t in range(24):
            video[t, 8:20, t:t + 12] = color
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
