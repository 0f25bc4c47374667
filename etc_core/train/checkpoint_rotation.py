"""Which checkpoints a run keeps, and whether the disk holds the next one.

A run keeps its ``keep_checkpoints`` newest checkpoints, plus (``keep_every`` > 0) every checkpoint whose step
is a multiple of ``keep_every``; older ones are deleted once a newer one is complete, so the run folder
always holds at least one whole checkpoint. Before each write the free space on the run folder's disk is
compared with the checkpoint's size: a write that would not fit stops the run with the checkpoints already
there untouched, instead of leaving a half-written one (or filling the server's disk).
"""
import os
import shutil

from .config import ConfigError

MARGIN = 1.05  # safetensors headers, JSON and file system blocks on top of the tensors' bytes
MARGIN_BYTES = 16 * 2**20


class DiskSpaceError(ConfigError):
    pass


def step_of(path: str) -> int:
    return int(path.rsplit("-", 1)[1])


def rotated_out(checkpoints: list, keep_last: int, keep_every: int = 0) -> list:
    """The checkpoints (paths, oldest first, as run_folder.checkpoints lists them) to delete."""
    older = checkpoints[:-keep_last] if keep_last > 0 else list(checkpoints)
    return [path for path in older if not (keep_every and step_of(path) % keep_every == 0)]


def tensors_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def check_free_disk(folder: str, needed: int, step: int, newest: str = None):
    """Refuse to write a checkpoint of about ``needed`` bytes into ``folder`` when its disk has less free."""
    free = shutil.disk_usage(folder).free
    wanted = int(needed * MARGIN) + MARGIN_BYTES
    if free >= wanted:
        return
    kept = (f"checkpoint {os.path.basename(newest)} is kept" if newest else
            "no checkpoint was written yet")
    raise DiskSpaceError(f"training stopped at step {step}: the disk of output_dir has {free / 2**20:.0f} MiB free "
                         f"and a checkpoint needs about {wanted / 2**20:.0f} MiB; {kept}. Free disk space (or lower "
                         "keep_checkpoints) and run again with resume on")
