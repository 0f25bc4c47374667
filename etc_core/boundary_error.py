"""Frame-boundary error (ETC Table 2, "Err."): a generated grid whose frames are cut in the wrong places.

Inside a frame, neighbouring pixels are alike; across a frame boundary they are not. For each axis we
take the mean absolute difference between neighbouring pixel columns (rows) over the whole grid, and
call the grid well cut when the ``cols - 1`` (``rows - 1``) strongest discontinuities are exactly at the
frame boundaries ``x = k*w`` (``y = k*h``). The error rate of a set of grids is the share not well cut.
"""
import torch


def _axis_ok(profile: torch.Tensor, cells: int) -> bool:
    if cells == 1:
        return True
    size = (profile.numel() + 1) // cells
    expected = {k * size - 1 for k in range(1, cells)}  # difference between pixel k*size-1 and k*size
    strongest = set(torch.topk(profile, cells - 1).indices.tolist())
    return strongest == expected


def boundary_ok(grid: torch.Tensor, rows: int, cols: int) -> bool:
    """``grid`` [C, rows*h, cols*w]: True when its strongest seams are the frame boundaries."""
    grid = grid.float()
    column_profile = (grid[:, :, 1:] - grid[:, :, :-1]).abs().mean(dim=(0, 1))
    row_profile = (grid[:, 1:, :] - grid[:, :-1, :]).abs().mean(dim=(0, 2))
    return _axis_ok(column_profile, cols) and _axis_ok(row_profile, rows)


def boundary_error_rate(grids, rows: int, cols: int) -> float:
    """Share of ``grids`` (iterable of [C, rows*h, cols*w]) that are not well cut."""
    results = [boundary_ok(g, rows, cols) for g in grids]
    return 1.0 - sum(results) / len(results)
