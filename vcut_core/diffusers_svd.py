"""VCUT for diffusers' ``StableVideoDiffusionPipeline`` / ``UNetSpatioTemporalConditionModel``.

Usage::

    pipe = StableVideoDiffusionPipeline.from_pretrained(...)
    vcut_core.apply_vcut(pipe.unet, sca_mode="linear", tca_mode="drop")
    vcut_core.enable_guidance_cutoff(pipe, cutoff_step=17)
    frames = pipe(image, num_inference_steps=25).frames
    vcut_core.remove_vcut(pipe.unet); vcut_core.disable_guidance_cutoff(pipe)
"""
import torch
from torch import nn

from .cached_projection import CachedProjectionCrossAttention, mean_context
from .patch_plan import plan_replacements


def _set_submodule(root: nn.Module, name: str, module: nn.Module):
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def apply_vcut(unet: nn.Module, sca_mode: str = "linear", tca_mode: str = "drop", owner=None) -> list:
    """Replace the SCA/TCA modules of a diffusers SVD UNet in place; returns the names replaced.
    ``owner``: what builds the UNet's context (for an image UNet with a one-token projection, Zero123)."""
    remove_vcut(unet)
    plan = plan_replacements(unet, sca_mode, tca_mode, owner=owner)
    for name, module in plan.items():
        _set_submodule(unet, name, module)
    return list(plan)


def remove_vcut(unet: nn.Module):
    """Put the original attention modules back."""
    for name, module in list(unet.named_modules()):
        if isinstance(module, CachedProjectionCrossAttention):
            _set_submodule(unet, name, module.wrapped)


class _CutoffUNetForward:
    """Replaces ``unet.forward`` on the pipeline's UNet while the cutoff is enabled.

    The pipeline concatenates ``[uncond, cond]`` along the batch; from step c on
    the UNet runs once on the cond half with the mean CLIP context, and the
    result is returned for both halves.
    """

    def __init__(self, pipe, cutoff_step: int, forward):
        self.pipe, self.cutoff_step, self.forward = pipe, int(cutoff_step), forward
        self.passes = 0

    def step(self, timestep) -> int:
        timesteps = self.pipe.scheduler.timesteps
        t = torch.as_tensor(timestep, device=timesteps.device, dtype=timesteps.dtype).flatten()[0]
        return int((timesteps - t).abs().argmin())

    def __call__(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict=True, **kwargs):
        guided = getattr(self.pipe, "do_classifier_free_guidance", False) and sample.shape[0] % 2 == 0
        if not guided or self.step(timestep) < self.cutoff_step:
            self.passes += 1
            return self.forward(sample, timestep, encoder_hidden_states, added_time_ids,
                                return_dict=return_dict, **kwargs)
        half = sample.shape[0] // 2
        uncond_ctx, cond_ctx = encoder_hidden_states.chunk(2)
        self.passes += 1
        out = self.forward(sample[half:], timestep, mean_context(cond_ctx, uncond_ctx), added_time_ids[half:],
                           return_dict=False, **kwargs)[0]
        out = torch.cat([out, out])
        if return_dict:
            from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput
            return UNetSpatioTemporalConditionOutput(sample=out)
        return (out,)


def enable_guidance_cutoff(pipe, cutoff_step: int):
    """Guidance only in steps ``0 .. cutoff_step-1`` of ``pipe`` (VCUT eq. 4)."""
    disable_guidance_cutoff(pipe)
    pipe.unet.forward = _CutoffUNetForward(pipe, cutoff_step, pipe.unet.forward)
    return pipe.unet.forward


def disable_guidance_cutoff(pipe):
    forward = pipe.unet.__dict__.get("forward")
    if isinstance(forward, _CutoffUNetForward):
        del pipe.unet.forward
