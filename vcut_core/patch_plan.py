"""Which cross-attentions VCUT replaces, and with what."""
from torch import nn

from .cached_projection import CachedProjectionCrossAttention
from .locate import find_cross_attentions

SCA_MODES = ("linear", "keep")
TCA_MODES = ("drop", "linear", "keep")


def planned_modes(unet: nn.Module, sca_mode: str = "linear", tca_mode: str = "drop", owner=None) -> dict:
    """``{name: mode}`` for every SCA/TCA of ``unet`` that the modes change.

    ``owner`` is what conditions the UNet (see :func:`.locate.find_cross_attentions`).
    Raises ``ValueError`` for an unknown mode and ``NotSVDModelError`` for a
    model whose context is not one token.
    """
    if sca_mode not in SCA_MODES:
        raise ValueError(f"sca_mode must be one of {SCA_MODES}, got {sca_mode!r}")
    if tca_mode not in TCA_MODES:
        raise ValueError(f"tca_mode must be one of {TCA_MODES}, got {tca_mode!r}")
    sites = find_cross_attentions(unet, owner)
    return {name: mode for names, mode in ((sites.sca, sca_mode), (sites.tca, tca_mode)) if mode != "keep"
            for name in names}


def plan_replacements(unet: nn.Module, sca_mode: str = "linear", tca_mode: str = "drop", get_module=None,
                      owner=None):
    """``{name: replacement module}`` for every site :func:`planned_modes` changes (the ComfyUI path's
    object patches). ``get_module(name)`` returns the module currently in use at ``name`` (ComfyUI
    patches objects without touching the model; default: the model's own)."""
    get_module = get_module or unet.get_submodule
    return {name: CachedProjectionCrossAttention(get_module(name), mode)
            for name, mode in planned_modes(unet, sca_mode, tca_mode, owner).items()}


def kept_sites(unet: nn.Module, sca_mode: str, tca_mode: str, owner=None):
    """Names of the SCA/TCA sites the modes leave as they are (``keep``)."""
    sites = find_cross_attentions(unet, owner)
    return [name for names, mode in ((sites.sca, sca_mode), (sites.tca, tca_mode)) if mode == "keep"
            for name in names]


def describe_plan(sites, plan: dict) -> str:
    """One line saying how many cross-attentions ``plan`` serves from the cached projection, drops and
    keeps, and why the model qualifies (what the patch node logs)."""
    counts = []
    for label, names in (("spatial", sites.sca), ("temporal", sites.tca)):
        linear = sum(1 for n in names if n in plan and plan[n].mode == "linear")
        dropped = sum(1 for n in names if n in plan and plan[n].mode == "drop")
        counts.append(f"{linear} of {len(names)} {label} cross-attentions from the cached projection, "
                      f"{dropped} dropped")
    return "; ".join(counts) + f" ({sites.reason}; a context of more than one token runs real attention)"


def unused_parameters(unet: nn.Module, sca_mode: str = "linear", tca_mode: str = "drop", owner=None) -> int:
    """Parameters the modes make unused: ``to_q``/``to_k`` of linear sites, all of dropped ones."""
    sites = find_cross_attentions(unet, owner)
    total = 0
    for names, mode in ((sites.sca, sca_mode), (sites.tca, tca_mode)):
        for name in names:
            attention = unet.get_submodule(name)
            if mode == "drop":
                total += sum(p.numel() for p in attention.parameters())
            elif mode == "linear":
                total += sum(p.numel() for m in (attention.to_q, attention.to_k) for p in m.parameters())
    return total
