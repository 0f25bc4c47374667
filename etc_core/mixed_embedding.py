"""Spatial-temporal mixed embedding (ETC eqs. 18, 19, 25; Algorithm 1).

For a grid of ``rows x cols`` frames of ``h x w`` and C channels, at grid pixel
(Y, X) with in-frame coordinates ``xl = X mod w``, ``yl = Y mod h`` and frame
index ``t = (Y // h) * cols + X // w`` (reading order):

    c <  C//2:  ME = sin(xl / Theta^(c/C))  + cos(yl / Theta^(c/C))        (eq. 18, spatial)
    c >= C//2:  ME = sin(t  / Theta^(c'/C)) + cos(t  / Theta^(c'/C)),  c' = c - C//2   (eq. 19, temporal)

Eq. 25 puts the two terms in separate channel halves so they never alias.
``x`` runs along the width and ``y`` along the height. Theta should be much
larger than the grid (10000 by default).
"""
from functools import lru_cache

import torch

from .grid import GridLayoutError, check_grid_shape


def _mixed_embedding_f64(channels: int, rows: int, cols: int, h: int, w: int, theta: float) -> torch.Tensor:
    c = torch.arange(channels, dtype=torch.float64)
    half = channels // 2
    Y = torch.arange(rows * h, dtype=torch.float64).view(-1, 1)
    X = torch.arange(cols * w, dtype=torch.float64).view(1, -1)
    xl, yl = X % w, Y % h
    t = torch.div(Y, h, rounding_mode="floor") * cols + torch.div(X, w, rounding_mode="floor")
    spatial_scale = theta ** (c[:half] / channels)
    temporal_scale = theta ** ((c[half:] - half) / channels)
    spatial = torch.sin(xl / spatial_scale.view(-1, 1, 1)) + torch.cos(yl / spatial_scale.view(-1, 1, 1))
    temporal = torch.sin(t / temporal_scale.view(-1, 1, 1)) + torch.cos(t / temporal_scale.view(-1, 1, 1))
    return torch.cat([spatial, temporal], dim=0)


@lru_cache(maxsize=16)
def mixed_embedding(channels: int, rows: int, cols: int, h: int, w: int, theta: float = 10000.0,
                    device=None, dtype=torch.float32) -> torch.Tensor:
    """ME as a [C, rows*h, cols*w] tensor; computed in float64, cached per shape, device and dtype."""
    return _mixed_embedding_f64(channels, rows, cols, h, w, float(theta)).to(device=device, dtype=dtype)


GRID_SIZE_FIX = "set the embedding up for the latent the sampler gets, with the frames and layout it was made with"


class MixedEmbeddingInput(torch.nn.Module):
    """Wraps the UNet's first convolution so every call sees ``x + strength * ME``.

    The sampler's latent is never touched: ME is added to the conv's input (the
    noisy latent after the model's input scaling), once per UNet call. Extra
    input channels beyond the latent's (inpainting concat) get no embedding.
    ``grid_size`` (height, width), when given, is the only latent size accepted: a latent of another size
    is another grid (a 4x4 grid of the same frames is twice as high and wide as a 2x2 one), and its
    embedding would silently be the wrong layout's; ``fix`` ends that refusal (a host names its own node).
    """

    def __init__(self, conv: torch.nn.Module, rows: int, cols: int, theta: float = 10000.0,
                 strength: float = 1.0, latent_channels: int = 4, grid_size=None, fix: str = GRID_SIZE_FIX):
        super().__init__()
        self.conv, self.rows, self.cols = conv, rows, cols
        self.theta, self.strength, self.latent_channels = float(theta), float(strength), latent_channels
        self.grid_size = tuple(grid_size) if grid_size is not None else None
        self.fix = fix

    @property
    def wrapped(self) -> torch.nn.Module:
        """The module this one wraps (every pack wrapper has ``wrapped``: a patch can be undone or replaced)."""
        return self.conv

    def check_grid_size(self, size):
        """Refuse a latent of another size than the one this embedding was set up for, naming both layouts."""
        if self.grid_size is None or tuple(size) == self.grid_size:
            return
        height, width = self.grid_size
        h, w = height // self.rows, width // self.cols
        got = f"a {size[0]}x{size[1]} latent"
        if size[0] % h == 0 and size[1] % w == 0:
            got += f" (a {size[0] // h}x{size[1] // w} grid, {size[0] // h * size[1] // w} frames of that size)"
        raise GridLayoutError(f"the mixed embedding was set up for a {self.rows}x{self.cols} grid of "
                              f"{self.rows * self.cols} frames of {h}x{w} latent pixels ({height}x{width}), and "
                              f"the sampler gives it {got}; {self.fix}")

    def embedding_for(self, x: torch.Tensor) -> torch.Tensor:
        self.check_grid_size(x.shape[-2:])
        check_grid_shape(x.shape[-2:], self.rows, self.cols)
        height, width = x.shape[-2:]
        me = mixed_embedding(self.latent_channels, self.rows, self.cols, height // self.rows,
                             width // self.cols, self.theta, x.device, x.dtype)
        return me * self.strength if self.strength != 1.0 else me

    def forward(self, x, *args, **kwargs):
        me = self.embedding_for(x)
        if x.shape[1] == self.latent_channels:
            x = x + me
        else:
            x = torch.cat([x[:, :self.latent_channels] + me, x[:, self.latent_channels:]], dim=1)
        return self.conv(x, *args, **kwargs)
