"""Stable Diffusion 2.x facts ETC builds on, in one place."""
import os

# SD 2.x's training schedule (the scheduler config of stabilityai/stable-diffusion-2-1 and -2-1-base).
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                clip_sample=False, steps_offset=1)
LATENT_SCALE = 0.18215  # SD's VAE latents times this have about unit variance (ComfyUI's SD 1.x/2.x latent format)
HEAD_CHANNELS = 64
# The SD 2.1 UNet (diffusers' UNet2DConditionModel config, 865M parameters; 96 = 768 / 8)
UNET_SD21 = dict(sample_size=96, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
                 use_linear_projection=True, block_out_channels=[320, 640, 1280, 1280], layers_per_block=2,
                 upcast_attention=True)
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")  # files that ship with the pack
