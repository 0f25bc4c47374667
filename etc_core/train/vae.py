"""The VAEs the trainer reads from ``pretrained/vae``: diffusers' ``AutoencoderKL`` (Stable Diffusion's), or an
``AutoencoderTiny`` (the TAESD layout, which ComfyUI's stock VAE loader also reads)."""
import json
import os

import torch

from ..files.safe_load import SAFE_LOAD


class TinyVAEPosterior(torch.nn.Module):
    """``AutoencoderTiny`` behind the ``AutoencoderKL`` interface the trainer uses: ``encode(x).latent_dist``
    (a point mass: TAESD is deterministic) and ``config.scaling_factor``."""

    def __init__(self, vae):
        super().__init__()
        self.vae, self.config = vae, vae.config

    def encode(self, pixels):
        from types import SimpleNamespace

        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
        mean = self.vae.encode(pixels).latents
        return SimpleNamespace(latent_dist=DiagonalGaussianDistribution(
            torch.cat([mean, torch.full_like(mean, -30.0)], 1)))  # log-variance -30: std 3e-7


def load_vae(folder: str):
    from diffusers import AutoencoderKL, AutoencoderTiny
    with open(os.path.join(folder, "config.json")) as f:
        kind = json.load(f).get("_class_name")
    if kind == "AutoencoderTiny":
        return TinyVAEPosterior(AutoencoderTiny.from_pretrained(folder, **SAFE_LOAD))
    return AutoencoderKL.from_pretrained(folder, **SAFE_LOAD)
