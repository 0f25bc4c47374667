"""Grid packing (ETC eq. 1): the T frames of a clip as one image the UNet's spatial attention sees whole.

Frame ``t`` sits at row ``t // cols``, column ``t % cols`` (reading order).
Packing then unpacking is the identity, for latents and for images.
"""

import torch
from einops import rearrange


class GridLayoutError(ValueError):
    pass


def layouts(frames: int):
    """All (rows, cols) with rows * cols == frames, most square first (rows <= cols preferred)."""
    pairs = [(r, frames // r) for r in range(1, frames + 1) if frames % r == 0]
    return sorted(pairs, key=lambda rc: (max(rc), rc[0] > rc[1]))


def parse_layout(frames: int, layout: str = "auto"):
    """``"auto"`` (the most square layout) or ``"RxC"``; checks rows * cols == frames."""
    if frames < 1:
        raise GridLayoutError(f"frames must be at least 1, got {frames}")
    if layout in ("", "auto", None):
        return layouts(frames)[0]
    try:
        rows, cols = (int(v) for v in str(layout).lower().split("x"))
    except ValueError:
        raise GridLayoutError(f"layout {layout!r} is not 'auto' or 'RxC' (for example '4x4')") from None
    if rows * cols != frames:
        options = ", ".join(f"{r}x{c}" for r, c in layouts(frames))
        raise GridLayoutError(f"layout {layout} holds {rows * cols} frames, not frames={frames}; "
                              f"use one of: {options}, or 'auto'")
    return rows, cols


def pack(frames: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[..., T, C, h, w] -> [..., C, rows*h, cols*w]."""
    if frames.shape[-4] != rows * cols:
        raise GridLayoutError(f"got {frames.shape[-4]} frames for a {rows}x{cols} grid")
    return rearrange(frames, "... (r c) ch h w -> ... ch (r h) (c w)", r=rows, c=cols)


def unpack(grid: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[..., C, rows*h, cols*w] -> [..., T, C, h, w]."""
    height, width = grid.shape[-2:]
    if height % rows or width % cols:
        raise GridLayoutError(f"a grid of {height}x{width} cannot be cut into {rows} rows and {cols} columns; "
                              "check that frames and layout match the ones the grid was made with")
    return rearrange(grid, "... ch (r h) (c w) -> ... (r c) ch h w", r=rows, c=cols)
