"""Find the one-token cross-attentions of a UNet (SVD family, SV3D, Stable Zero123).

VCUT's shortcut is exact when a cross-attention reads a single context token. Which
models give their UNet a one-token context is read from the model itself:

- a UNet with spatio-temporal transformer blocks (SVD, SVD-XT, SVD-XT 1.1, SV3D_u,
  SV3D_p): these UNets are conditioned on the one CLIP image token; each block has a
  spatial (SCA) and a temporal (TCA) cross-attention, 16 of each in the released models;
- an image UNet whose owner projects its context from one image embedding with a
  linear layer as wide as the UNet's context (Stable Zero123's ``cc_projection``:
  CLIP image embedding and camera in, one token out); spatial cross-attentions only.

Anything else (SD 1.x/2.x and SDXL read 77 text tokens) is refused. The check at run
time stays (:class:`~.cached_projection.CachedProjection` falls back to
real attention for a context of more than one token).

Module names differ between the two implementations we support:

==========================  ==============================  ==========================================
family                      SCA                             TCA
==========================  ==============================  ==========================================
ComfyUI ``VideoUNet``       ``...transformer_blocks.i.attn2``  ``...time_stack.i.attn2``
ComfyUI ``UNetModel``       ``...transformer_blocks.i.attn2``  (none)
diffusers (``UNetSpatio``)  ``...transformer_blocks.i.attn2``  ``...temporal_transformer_blocks.i.attn2``
==========================  ==============================  ==========================================
"""
from dataclasses import dataclass

from torch import nn

from .cached_projection import CachedProjectionCrossAttention

# Class names of the blocks that hold a spatial and a temporal transformer side by side, and of plain
# spatial transformers; matching by class name keeps this module free of ComfyUI imports.
_VIDEO_TRANSFORMERS = {
    "SpatialVideoTransformer": "time_stack",                            # ComfyUI
    "TransformerSpatioTemporalModel": "temporal_transformer_blocks",    # diffusers
}
_IMAGE_TRANSFORMERS = ("SpatialTransformer", "Transformer2DModel")      # ComfyUI, diffusers
SUPPORTED = "SVD, SVD-XT, SVD-XT 1.1, SV3D_u, SV3D_p and Stable Zero123"


class NotSVDModelError(ValueError):
    """Nothing in the model says its cross-attention context is one token (a text model, for example)."""


@dataclass(frozen=True)
class CrossAttentionSites:
    """Dotted module names (relative to the UNet) of every SCA and TCA, and why the context is one token."""

    sca: tuple
    tca: tuple
    reason: str = ""


def _context_width(unet: nn.Module):
    """Input width of the first cross-attention's key projection, or ``None`` without one."""
    for name, module in unet.named_modules():
        if isinstance(module, CachedProjectionCrossAttention):  # a host may leave a patch applied between runs
            module = module.attention
        # Read the width, not the class: hosts swap in their own linear layers.
        width = getattr(getattr(module, "to_k", None), "in_features", None) if name.endswith("attn2") else None
        if width is not None:
            return width
    return None


def one_token_reason(unet: nn.Module, owner=None):
    """Why ``unet``'s cross-attention context is one token (a sentence), or ``None`` when nothing in
    ``unet`` or ``owner`` (the object that conditions it, e.g. ComfyUI's ``BaseModel``) says so."""
    if any(type(m).__name__ in _VIDEO_TRANSFORMERS for m in unet.modules()):
        return "spatio-temporal UNet conditioned on one CLIP image token (SVD family, SV3D)"
    projection = getattr(owner, "cc_projection", None)
    width = _context_width(unet)
    if width is not None and getattr(projection, "out_features", None) == width:
        return "context projected to one token from an image embedding and the camera (Stable Zero123)"
    return None


def _sites(unet: nn.Module):
    sca, tca = [], []
    for name, module in unet.named_modules():
        kind = type(module).__name__
        if kind not in _VIDEO_TRANSFORMERS and kind not in _IMAGE_TRANSFORMERS:
            continue
        prefix = f"{name}." if name else ""
        for i, block in enumerate(module.transformer_blocks):
            if getattr(block, "attn2", None) is not None:
                sca.append(f"{prefix}transformer_blocks.{i}.attn2")
        temporal_attr = _VIDEO_TRANSFORMERS.get(kind)
        for i, block in enumerate(getattr(module, temporal_attr) if temporal_attr else ()):
            if getattr(block, "attn2", None) is not None:
                tca.append(f"{prefix}{temporal_attr}.{i}.attn2")
    return sca, tca


def find_cross_attentions(unet: nn.Module, owner=None) -> CrossAttentionSites:
    """Return the names of the spatial and temporal cross-attentions of ``unet``.

    ``owner`` is the object that builds the UNet's context (ComfyUI's ``BaseModel``), looked at for a
    one-token context projection. Raises :class:`NotSVDModelError` when nothing says the context is one
    token, or the UNet has no cross-attention.
    """
    reason = one_token_reason(unet, owner)
    sca, tca = _sites(unet)
    if reason is None or not (sca or tca):
        raise NotSVDModelError(
            f"{type(unet).__name__} is not a Stable Video Diffusion UNet or another model whose cross-attention "
            f"reads one token: VCUT applies to {SUPPORTED} (load them with ImageOnlyCheckpointLoader); text models such as SD 1.x/2.x and SDXL attend to many tokens."
        )
    return CrossAttentionSites(sca=tuple(sca), tca=tuple(tca), reason=reason)
