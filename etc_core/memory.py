"""What sampling one ETC grid needs in memory, estimated from the UNet's layout before anything is allocated.

A grid of T frames is one image of T times a frame's pixels, so every UNet activation grows with T: 1024
frames of 4096x4096 is a 16384x16384 latent, hundreds of gigabytes of activations, which a server would
try to allocate and be killed for. :func:`sampling_bytes` adds up what a sampling run must hold at once,
counted low on purpose (refusing a run that would fit is worse than letting a borderline one try):

- the sampler's latents (noisy latent, noise, denoised, the step's derivative), float32;
- one UNet pass at batch 1 (ComfyUI splits cond and uncond when the batch does not fit): the skip
  connections every input block keeps for the output blocks, plus the widest block's working tensors;
- the largest transformer block: its GEGLU feed-forward holds a projection 8x the block's width and the
  gated 4x product at once; its attention holds q, k, v and output, plus the scores when the attention
  implementation holds them whole (``quadratic``: ComfyUI's basic attention; ``split``: the same in at most
  64 slices; the memory-efficient ones, sub-quadratic, PyTorch SDPA, xformers, chunk the scores to fit
  free memory).

:func:`frames_bytes` is the decoded IMAGE batch (float32, on the CPU).
"""
from dataclasses import dataclass

import torch

ATTENTION_KINDS = ("quadratic", "split", "memory-efficient")
SAMPLER_LATENTS = 4
WORKING_TENSORS = 3
SPLIT_SLICES = 64
ATTENTION_TENSORS = 4  # q, k, v, output
FEED_FORWARD_TENSORS = 12  # GEGLU: the 8x projection and the 4x gated product


@dataclass(frozen=True)
class Activation:
    channels: int
    level: int  # downsampled 2**level times
    heads: int = 0  # > 0 for an attention block


def unet_activations(unet: torch.nn.Module):
    """``(skips, blocks)``: the input blocks' outputs (kept for the output blocks) and every block's output
    and attention, read from an LDM ``UNetModel``'s ``input_blocks``, ``middle_block``, ``output_blocks``."""
    skips, blocks, level, channels = [], [], 0, None
    for group in ("input_blocks", "middle_block", "output_blocks"):
        sequence = getattr(unet, group)
        for block in (sequence if group != "middle_block" else [sequence]):
            for layer in block:
                kind = type(layer).__name__
                if kind == "Upsample":
                    level -= 1
                channels = getattr(layer, "out_channels", channels)
                if kind == "Downsample":
                    level += 1
                heads = _heads(layer)
                blocks.append(Activation(channels or 0, level, heads))
            if group == "input_blocks":
                skips.append(Activation(channels or 0, level))
    return skips, blocks


def _heads(layer) -> int:
    blocks = getattr(layer, "transformer_blocks", None)
    return getattr(getattr(blocks[0], "attn1", None), "heads", 0) if blocks else 0


def sampling_bytes(unet: torch.nn.Module, batch: int, latent_channels: int, height: int, width: int,
                   element_bytes: int, attention: str = "memory-efficient") -> int:
    """Estimate (a floor) of the memory sampling a ``batch x latent_channels x height x width`` grid latent
    needs with ``unet``, whose activations take ``element_bytes`` each."""
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
    tokens = height * width
    latents = SAMPLER_LATENTS * batch * latent_channels * tokens * 4
    skips, blocks = unet_activations(unet)

    def size(a):
        return a.channels * (tokens // 4 ** a.level)

    held = sum(size(a) for a in skips) + WORKING_TENSORS * max(size(a) for a in blocks)
    attention_bytes = 0
    for a in blocks:
        if a.heads:
            a_tokens = tokens // 4 ** a.level
            scores = a.heads * a_tokens * a_tokens * 4  # softmax in float32
            scores = {"quadratic": scores, "split": scores // SPLIT_SLICES, "memory-efficient": 0}[attention]
            qkv = ATTENTION_TENSORS * size(a) * element_bytes + scores
            attention_bytes = max(attention_bytes, qkv, FEED_FORWARD_TENSORS * size(a) * element_bytes)
    return latents + batch * (held * element_bytes + attention_bytes)


def frames_bytes(frames: int, batch: int, frame_height: int, frame_width: int) -> int:
    """The decoded IMAGE batch, float32 RGB."""
    return frames * batch * frame_height * frame_width * 3 * 4


def size_text(n: int) -> str:
    """Bytes as GiB (one decimal), or as whole MiB below 1 GiB."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{round(n / 2**20)} MiB"


class GridMemoryError(MemoryError):
    pass


def _largest(fits, high: int) -> int:
    """The largest ``n`` in ``1..high`` with ``fits(n)`` (``fits`` is monotone), or 0."""
    low = 0
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


SAMPLING = "to sample (latents, UNet activations, attention)"


def check_grid_fits(node: str, needed, frames: int, frame_width: int, frame_height: int, free: int,
                    what: str = SAMPLING, batch: int = 1):
    """Refuse a grid whose ``needed(frames, frame_width, frame_height)`` bytes exceed ``free``, naming the
    size asked, the memory it needs, the memory free, and sizes that fit (fewer frames, or smaller frames)."""
    asked = needed(frames, frame_width, frame_height)
    if asked <= free:
        return asked
    fewer = _largest(lambda f: needed(f, frame_width, frame_height) <= free, frames - 1)

    def scaled(k):  # frame size k*8 wide, same aspect ratio
        return k * 8, max(1, round(k * frame_height / frame_width)) * 8

    smaller = _largest(lambda k: needed(frames, *scaled(k)) <= free, frame_width // 8 - 1)
    options = ([f"frames={fewer} at {frame_width}x{frame_height}"] if fewer else []) + \
              (["frame size {}x{} with frames={}".format(*scaled(smaller), frames)] if smaller else [])
    fits = f"; sizes that fit: {' or '.join(options)}" if options else "; no size fits in the memory free now"
    batched = f" (batch {batch})" if batch > 1 else ""
    raise GridMemoryError(f"{node}: {frames} frames of {frame_width}x{frame_height}{batched} need about {size_text(asked)} "
                          f"{what}, and {size_text(free)} is free{fits}")
