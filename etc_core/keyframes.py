"""Frames of a grid as keyframes and as conditioning regions (image-to-video, interpolation, per-frame prompts).

ETC samples every frame of a clip as one cell of a grid image (eq. 1), so giving some frames is inpainting
the grid: the given frames' cells are kept, the rest generated, and the UNet's attention over the whole grid
makes the generated cells follow the kept ones. A prompt for some frames is a conditioning restricted to
their cells. Both are masks over the grid latent at its own resolution (one value per latent pixel), so a
host that resizes masks to the latent leaves their cell edges exact:

- ComfyUI's ``noise_mask``: 1 where the sampler generates, 0 where it keeps the latent it was given;
- a conditioning ``mask``: 1 on the cells the conditioning applies to.
"""
import math

import torch

from .files.messages import cut, quote
from .grid import pack


class FrameSelectionError(ValueError):
    pass


def _number(token: str, name: str, frames: int) -> int:
    try:
        value = int(token)
    except ValueError:
        raise FrameSelectionError(f"{name}: {quote(token)} is not a frame number; write frame numbers from 0 to "
                                  f"{frames - 1} separated by commas, e.g. '0, {frames - 1}'") from None
    if not 0 <= value < frames:
        raise FrameSelectionError(f"{name}: frame {value} is out of range for frames={frames}; use 0 to {frames - 1}")
    return value


def parse_frame_numbers(text: str, frames: int, name: str = "frame_numbers") -> list:
    """Frame numbers from ``"0, 7"`` in the order written; refuses none, repeats and numbers outside
    ``0 .. frames-1``."""
    tokens = [t.strip() for t in str(text).split(",") if t.strip()]
    if not tokens:
        raise FrameSelectionError(f"{name} names no frame; write frame numbers from 0 to {frames - 1}, e.g. '0'")
    numbers = [_number(t, name, frames) for t in tokens]
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        raise FrameSelectionError(f"{name}: frame {repeated[0]} is given more than once; name each frame once")
    return numbers


def parse_frame_ranges(text: str, frames: int, name: str = "frame_ranges") -> list:
    """Sorted frame numbers from ranges and single frames, e.g. ``"0-3"`` or ``"0-1, 6-7"`` (ends included);
    refuses empty or reversed ranges, overlaps and frames outside ``0 .. frames-1``."""
    chosen = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        first, _, last = part.partition("-")
        start, end = _number(first.strip(), name, frames), _number((last or first).strip(), name, frames)
        if end < start:
            raise FrameSelectionError(f"{name}: the range {cut(part)} leaves no frame; write it first-last, e.g. "
                                      f"'{end}-{start}'")
        overlap = sorted(set(range(start, end + 1)) & set(chosen))
        if overlap:
            raise FrameSelectionError(f"{name}: frame {overlap[0]} is in two ranges; give each frame one range")
        chosen += range(start, end + 1)
    if not chosen:
        raise FrameSelectionError(f"{name} names no frame; write ranges of frames 0 to {frames - 1}, e.g. '0-3'")
    return sorted(chosen)


def cell_mask(chosen, rows: int, cols: int, height: int, width: int) -> torch.Tensor:
    """``[rows*height, cols*width]`` float mask, 1 on the cells of the ``chosen`` frames (reading order)."""
    cells = torch.zeros(rows * cols, 1, height, width)
    cells[list(chosen)] = 1.0
    return pack(cells, rows, cols)[0]


def place_frames(grid: torch.Tensor, frame_latents: torch.Tensor, numbers, rows: int, cols: int) -> torch.Tensor:
    """A copy of ``grid`` [B, C, rows*h, cols*w] with ``frame_latents[k]`` [C, h, w] in the cell of frame
    ``numbers[k]``, in every batch item."""
    grid = grid.clone()
    height, width = grid.shape[-2] // rows, grid.shape[-1] // cols
    for latent, number in zip(frame_latents, numbers):
        top, left = number // cols * height, number % cols * width
        grid[:, :, top:top + height, left:left + width] = latent.to(grid)
    return grid


def check_denoise(denoise: float, name: str = "denoise"):
    """Refuse a denoise outside (0, 1]: 0 would sample nothing, above 1 is no amount of the schedule."""
    if not (isinstance(denoise, (int, float)) and math.isfinite(denoise) and 0.0 < denoise <= 1.0):
        raise ValueError(f"{name} is {quote(denoise)}; set it in (0, 1]: 1 generates from noise, lower keeps more "
                         "of the latent given")
