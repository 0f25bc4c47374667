"""Which UNets ETC can drive: SD 2.x-like image UNets (SD 1.x/2.x layout, the LDM ``UNetModel``), with
``input_blocks[0][0]`` as the first convolution and ``time_embed`` as the timestep MLP. Video UNets (SVD's
temporal layers) and class-conditioned ones (SDXL, unCLIP, SVD) are refused."""
import torch


def unsupported_reason(unet: torch.nn.Module, get_module=None):
    """None for an SD 2.x-like image UNet, else what is different.

    ``get_module(name)`` returns the module at ``name`` as the model was built, without patches a host
    may have left applied (default: the model's own submodule).
    """
    get_module = get_module or unet.get_submodule
    try:
        first, time_embed = get_module("input_blocks.0.0"), get_module("time_embed")
    except AttributeError:
        return "it is not a UNet of the Stable Diffusion family"
    if not isinstance(time_embed, torch.nn.Sequential) or len(time_embed) < 3:
        return "it is not a UNet of the Stable Diffusion family"
    if not isinstance(first, torch.nn.Conv2d):
        return "its first block is not a convolution"
    if any("time_stack" in name or "time_mixer" in name for name, _ in unet.named_modules()):
        return "it is a video UNet with temporal layers (like SVD)"
    if getattr(unet, "num_classes", None) is not None:
        return "it is class-conditioned (like SDXL, SD 2.x unCLIP or SVD)"
    return None
