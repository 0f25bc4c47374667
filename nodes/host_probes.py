"""What the pack reads from the host about a loaded model and the machine, on every ComfyUI it runs on:
latent channels, the compute dtype, the attention kind, a VAE's decoding memory and free memory
(etc_core.memory's inputs)."""
import torch


# ComfyUI's VAE decodes a frame that does not fit in tiles of 64x64 latents (``VAE.decode_tiled_``, every version).
DECODE_TILE = 64


def decode_bytes(vae, frame_width: int, frame_height: int) -> int:
    """The least working memory ComfyUI's VAE needs to decode: its own estimate (``memory_used_decode``, the
    same on every version) for one frame, or for one tile where a frame is larger. ``VAE.decode`` decodes as
    many frames at once as fit in what is free, at least one, and falls back to tiles when one does not fit."""
    shape = (1, 4, min(frame_height // 8, DECODE_TILE), min(frame_width // 8, DECODE_TILE))
    return int(vae.memory_used_decode(shape, vae.vae_dtype))


def latent_channels(patcher) -> int:
    """Channels of the model's latent; early-2024 latent formats do not say (all their SD models have 4)."""
    return getattr(patcher.model.latent_format, "latent_channels", 4)


# ComfyUI's attention functions by name (comfy.ldm.modules.attention.optimized_attention), as
# etc_core.memory counts them; any other name (sub-quadratic, PyTorch SDPA, xformers, flash, sage)
# chunks its scores to fit free memory.
_ATTENTION_KINDS = {"attention_basic": "quadratic", "attention_split": "split"}


def attention_kind() -> str:
    """How the attention ComfyUI picked at start-up (from its flags and device) holds its scores."""
    from comfy.ldm.modules import attention
    return _ATTENTION_KINDS.get(getattr(attention.optimized_attention, "__name__", ""), "memory-efficient")


def compute_element_bytes(patcher) -> int:
    """Bytes per activation of the UNet: its manual-cast dtype where ComfyUI computes in another dtype
    than the weights are stored in, else the weights' dtype."""
    model = patcher.model
    dtype = getattr(model, "manual_cast_dtype", None) or model.get_dtype()
    return torch.empty((), dtype=dtype).element_size()


def free_memory(device=None) -> int:
    """Free memory ComfyUI counts on ``device`` (the CPU's when ``None``): RAM or the GPU's."""
    import comfy.model_management
    return int(comfy.model_management.get_free_memory(device or torch.device("cpu")))
