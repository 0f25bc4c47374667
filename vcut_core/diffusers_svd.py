"""VCUT for diffusers' ``StableVideoDiffusionPipeline`` / ``UNetSpatioTemporalConditionModel`` (and image UNets
with a one-token context, Stable Zero123), through diffusers' and PyTorch's own extension points.

Usage::

    pipe = StableVideoDiffusionPipeline.from_pretrained(...)
    vcut_core.apply_vcut(pipe.unet, sca_mode="linear", tca_mode="drop")
    vcut_core.enable_guidance_cutoff(pipe, cutoff_step=17)
    frames = pipe(image, num_inference_steps=25).frames
    vcut_core.remove_vcut(pipe.unet); vcut_core.disable_guidance_cutoff(pipe)

The cross-attentions get an attention processor (``Attention.set_processor``); ``unet.set_attn_processor``
replaces it as any other. The guidance cutoff is a forward pre-hook and hook on the UNet: a pipeline
callback (diffusers' ``SDCFGCutoffCallback`` idea) cannot do it for SVD, whose callback may change only
``latents`` while the step past the cutoff needs the mean image context (eq. 4) and a batch of one.
"""
import inspect

import torch

from .cached_projection import CachedProjection, mean_context
from .patch_plan import planned_modes


class CachedProjectionProcessor:
    """A diffusers attention processor: :class:`~.cached_projection.CachedProjection` where it is exact, the
    processor it replaces (``wrapped``) otherwise."""

    def __init__(self, mode: str, wrapped, max_entries: int = 4):
        self.shortcut = CachedProjection(mode, max_entries)
        self.wrapped = wrapped

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        out = self.shortcut.output(attn, hidden_states, encoder_hidden_states, mask=attention_mask)
        if out is None:
            return self.wrapped(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        return out


def apply_vcut(unet, sca_mode: str = "linear", tca_mode: str = "drop", owner=None) -> list:
    """Give the SCA/TCA sites of a diffusers UNet VCUT's processor; returns the names of the sites.
    ``owner``: what builds the UNet's context (for an image UNet with a one-token projection, Zero123)."""
    remove_vcut(unet)
    modes = planned_modes(unet, sca_mode, tca_mode, owner=owner)
    for name, mode in modes.items():
        attention = unet.get_submodule(name)
        attention.set_processor(CachedProjectionProcessor(mode, attention.processor))
    return list(modes)


def remove_vcut(unet):
    """Put the processors back that :func:`apply_vcut` replaced."""
    for module in unet.modules():
        processor = getattr(module, "processor", None)
        if isinstance(processor, CachedProjectionProcessor):
            module.set_processor(processor.wrapped)


class GuidanceCutoff:
    """VCUT eq. 4 on a diffusers pipeline's UNet: the pipeline concatenates ``[uncond, cond]`` along the
    batch; from step c on, the pre-hook hands the UNet the cond half with the mean context, and the hook
    returns its output for both halves. ``passes`` counts UNet calls."""

    def __init__(self, pipe, cutoff_step: int):
        self.pipe, self.cutoff_step, self.passes = pipe, int(cutoff_step), 0
        self._signature = inspect.signature(pipe.unet.forward)
        self._halved = False
        self.handles = [pipe.unet.register_forward_pre_hook(self._before, with_kwargs=True),
                        pipe.unet.register_forward_hook(self._after)]

    def step(self, timestep) -> int:
        timesteps = self.pipe.scheduler.timesteps
        t = torch.as_tensor(timestep, device=timesteps.device, dtype=timesteps.dtype).flatten()[0]
        return int((timesteps - t).abs().argmin())

    def _before(self, unet, args, kwargs):
        self.passes += 1
        call = self._signature.bind(*args, **kwargs)
        sample = call.arguments["sample"]
        guided = getattr(self.pipe, "do_classifier_free_guidance", False) and sample.shape[0] % 2 == 0
        self._halved = guided and self.step(call.arguments["timestep"]) >= self.cutoff_step
        if not self._halved:
            return None
        half = sample.shape[0] // 2
        uncond_ctx, cond_ctx = call.arguments["encoder_hidden_states"].chunk(2)
        call.arguments.update(sample=sample[half:], encoder_hidden_states=mean_context(cond_ctx, uncond_ctx),
                              added_time_ids=call.arguments["added_time_ids"][half:])
        return call.args, call.kwargs

    def _after(self, unet, args, output):
        if not self._halved:
            return None
        if isinstance(output, tuple):
            return (torch.cat([output[0], output[0]]),) + output[1:]
        output.sample = torch.cat([output.sample, output.sample])
        return output

    def remove(self):
        for handle in self.handles:
            handle.remove()


def enable_guidance_cutoff(pipe, cutoff_step: int) -> GuidanceCutoff:
    """Guidance only in steps ``0 .. cutoff_step-1`` of ``pipe`` (VCUT eq. 4)."""
    disable_guidance_cutoff(pipe)
    pipe._vcut_guidance_cutoff = GuidanceCutoff(pipe, cutoff_step)
    return pipe._vcut_guidance_cutoff


def disable_guidance_cutoff(pipe):
    cutoff = pipe.__dict__.pop("_vcut_guidance_cutoff", None)
    if cutoff is not None:
        cutoff.remove()
