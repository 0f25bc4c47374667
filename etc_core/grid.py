"""Grid packing (ETC eq. 1): the T frames of a clip as one image the UNet's spatial attention sees whole.

Frame ``t`` sits at row ``t // cols``, column ``t % cols`` (reading order).
Packing then unpacking is the identity, for latents and for images.
"""

import torch
from einops import rearrange

from .files.messages import cut, quote


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
        raise GridLayoutError(f"layout {quote(layout)} is not 'auto' or 'RxC' (for example '4x4')") from None
    if rows < 1 or cols < 1 or rows * cols != frames:
        options = ", ".join(f"{r}x{c}" for r, c in layouts(frames))
        held = f"holds {cut(str(rows * cols))} frames, not frames={frames}" if rows >= 1 and cols >= 1 \
            else "is not positive"
        raise GridLayoutError(f"layout {cut(str(layout))} {held}; use one of: {options}, or 'auto'")
    return rows, cols


def check_grid_latent(latent: dict, rows: int, cols: int):
    """Refuse a latent made as another grid: its ``etc_grid`` metadata (set by the ETC latent nodes) must
    name ``rows x cols``, and its height and width must split into that many frames."""
    meta = latent.get("etc_grid")
    if meta and (meta["rows"], meta["cols"]) != (rows, cols):
        raise GridLayoutError(f"the latent was made as a {meta['rows']}x{meta['cols']} grid of {meta['frames']} "
                              f"frames; set frames={meta['frames']} and layout={meta['rows']}x{meta['cols']}")
    check_grid_shape(latent["samples"].shape[-2:], rows, cols)


def check_grid_shape(size, rows: int, cols: int):
    """Refuse a grid of ``size`` = (height, width) that does not split into ``rows x cols`` equal frames."""
    height, width = size
    if height % rows or width % cols:
        raise GridLayoutError(f"the latent is {height}x{width}, which is not a grid of {rows}x{cols} frames; set "
                              "frames and layout to the ones the grid latent was made with")


def pack(frames: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[..., T, C, h, w] -> [..., C, rows*h, cols*w]."""
    if frames.shape[-4] != rows * cols:
        raise GridLayoutError(f"got {frames.shape[-4]} frames for a {rows}x{cols} grid")
    return rearrange(frames, "... (r c) ch h w -> ... ch (r h) (c w)", r=rows, c=cols)


def unpack(grid: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[..., C, rows*h, cols*w] -> [..., T, C, h, w]."""
    check_grid_shape(grid.shape[-2:], rows, cols)
    return rearrange(grid, "... ch (r h) (c w) -> ... (r c) ch h w", r=rows, c=cols)


def check_frame_size(frame_width: int, frame_height: int, scale: int = 8):
    """Refuse frame sizes the VAE cannot map to whole latent pixels (one latent pixel is ``scale`` x ``scale``
    frame pixels); rounding them down would give smaller frames than asked without a word."""
    for name, value in (("frame_width", frame_width), ("frame_height", frame_height)):
        if value < scale or value % scale:
            low = max(scale, value // scale * scale)
            raise GridLayoutError(f"{name} {value} is not a multiple of {scale} (one latent pixel is {scale}x{scale} "
                                  f"frame pixels); use {low} or {low + scale}")
