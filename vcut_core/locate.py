"""Find the cross-attentions of a Stable Video Diffusion UNet.

SVD has one spatial cross-attention (SCA) and one temporal cross-attention
(TCA) per spatio-temporal transformer block: 16 of each in the released
models. Both read the single CLIP image token (VCUT, section III).

Module names differ between the two model families we support:

==========================  ==============================  ==========================================
family                      SCA                             TCA
==========================  ==============================  ==========================================
ComfyUI ``VideoUNet``       ``...transformer_blocks.i.attn2``  ``...time_stack.i.attn2``
diffusers (``UNetSpatio``)  ``...transformer_blocks.i.attn2``  ``...temporal_transformer_blocks.i.attn2``
==========================  ==============================  ==========================================
"""
from dataclasses import dataclass

from torch import nn

# Class names of the blocks that hold a spatial and a temporal transformer
# side by side; matching by name keeps this module free of ComfyUI imports.
_VIDEO_TRANSFORMERS = {
    "SpatialVideoTransformer": "time_stack",                            # ComfyUI
    "TransformerSpatioTemporalModel": "temporal_transformer_blocks",    # diffusers
}


class NotSVDModelError(ValueError):
    """The model has no spatio-temporal transformer blocks, so it is not SVD-like."""


@dataclass(frozen=True)
class CrossAttentionSites:
    """Dotted module names (relative to the UNet) of every SCA and TCA."""

    sca: tuple
    tca: tuple


def find_cross_attentions(unet: nn.Module) -> CrossAttentionSites:
    """Return the names of the spatial and temporal cross-attentions of ``unet``.

    Raises :class:`NotSVDModelError` when the UNet has no spatio-temporal
    transformer (an SD 1.x/2.x/XL image UNet, for example).
    """
    sca, tca = [], []
    for name, module in unet.named_modules():
        temporal_attr = _VIDEO_TRANSFORMERS.get(type(module).__name__)
        if temporal_attr is None:
            continue
        prefix = f"{name}." if name else ""
        for i, block in enumerate(module.transformer_blocks):
            if getattr(block, "attn2", None) is not None:
                sca.append(f"{prefix}transformer_blocks.{i}.attn2")
        for i, block in enumerate(getattr(module, temporal_attr)):
            if getattr(block, "attn2", None) is not None:
                tca.append(f"{prefix}{temporal_attr}.{i}.attn2")
    if not sca and not tca:
        raise NotSVDModelError(
            f"{type(unet).__name__} has no spatio-temporal transformer blocks, so it is not a "
            "Stable Video Diffusion UNet. VCUT only applies to SVD, SVD-XT and SVD-XT 1.1 "
            "(load them with ImageOnlyCheckpointLoader)."
        )
    return CrossAttentionSites(sca=tuple(sca), tca=tuple(tca))

