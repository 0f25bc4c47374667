"""The run folder (``output_dir``): which folders a run may write into, claiming one, the config file a
terminal run continues from, and the checkpoints it holds.

The checks only read: a folder that is refused keeps every file as it was.
"""
import dataclasses
import glob
import hashlib
import json
import os

from ..files.atomic import write_json_atomic, write_text_atomic
from .config import ConfigError, TrainConfig

SKIPPED_FILES = "skipped_files.txt"  # "path<TAB>reason" of each listed file the run left out
CONFIG_FILE = "launch_config.json"  # the run's config: what `python -m etc_core.train --config` reads
RUN_FILES = ("run.json", CONFIG_FILE, SKIPPED_FILES)  # what a run writes before anything is trained


def checkpoints(output_dir: str) -> list:
    found = glob.glob(os.path.join(output_dir, "checkpoint-*"))
    return sorted((p for p in found if not p.endswith(".partial")), key=lambda p: int(p.rsplit("-", 1)[1]))


def _run_json(output_dir: str):
    try:
        with open(os.path.join(output_dir, "run.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def check_output_dir(config: TrainConfig, resume: bool):
    """Refuse an ``output_dir`` this run may not write into; reads only.

    Accepted: a missing or empty folder, a folder of the same run (its ``run.json``), and a folder where a
    launch wrote its run files but nothing was trained. A folder of anything else is never touched.
    """
    folder = config.output_dir
    if not os.path.lexists(folder):
        return
    if not os.path.isdir(folder) or os.path.islink(folder):
        raise ConfigError(f"output_dir {folder} exists and is not a folder; pick a new output_dir")
    entries = set(os.listdir(folder))
    if not entries:
        return
    existing = _run_json(folder)
    if existing is None:
        raise ConfigError(f"output_dir {folder} is not empty and holds no run of this trainer (no run.json); "
                          "pick a new or empty output_dir")
    if existing != config.run_identity():
        if entries <= set(RUN_FILES):  # a launch that was refused before training: nothing to lose
            return
        raise ConfigError(f"output_dir {folder} holds a different run (run.json differs); pick a new output_dir, "
                          "or use the same config to resume")
    if not resume and checkpoints(folder):
        raise ConfigError(f"output_dir {folder} already has checkpoints; turn resume on to continue that run, "
                          "or pick a new output_dir")


def claim_output_dir(config: TrainConfig):
    """Create ``output_dir`` and write its ``run.json`` (after :func:`check_output_dir` passed)."""
    os.makedirs(config.output_dir, exist_ok=True)
    write_json_atomic(os.path.join(config.output_dir, "run.json"), config.run_identity())


def write_run_config(config: TrainConfig):
    """Claim ``output_dir`` and write the run's config into it (after the run's checks passed); returns
    ``(path, sha256 of the file)``: a terminal continues the run from it, refusing a file that changed."""
    claim_output_dir(config)
    text = json.dumps(dataclasses.asdict(config), indent=1)
    path = os.path.join(config.output_dir, CONFIG_FILE)
    write_text_atomic(path, text)
    return path, hashlib.sha256(text.encode()).hexdigest()
