"""A run's ``checkpoint-N`` folders: each written whole or not at all (a ``.partial`` folder, renamed once
every rank wrote its share) after a free-disk check, older ones rotated out (``checkpoint_rotation.py``),
the newest read back on resume. The files are ``checkpoint.py``'s (safetensors and JSON); DeepSpeed runs
(terminal only) keep DeepSpeed's format."""
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from . import checkpoint
from .checkpoint_rotation import check_free_disk, rotated_out, tensors_bytes
from .config import ConfigError
from .run_folder import checkpoints

STATE_FILE, EMA_FILE = "trainer_state.json", "ema.safetensors"


class RunCheckpoints:
    """Saves and restores ``parts`` (the unwrapped model, optimizer, scheduler, scaler and process index, as
    :func:`.checkpoint.save_state` takes them) and the EMA tensors of one run under ``accelerator``."""

    def __init__(self, config, accelerator):
        self.config, self.accelerator = config, accelerator
        self.deepspeed = accelerator.state.deepspeed_plugin is not None

    def paths(self) -> list:
        return checkpoints(self.config.output_dir)

    def _bytes(self, model, optimizer, ema) -> int:
        """The tensors a checkpoint holds: the model, the optimizer state and the EMA copy."""
        weights = tensors_bytes(model.state_dict().values())
        if self.deepspeed:
            # ZeRO's optimizer state_dict has not torch's layout: count AdamW's two moments per weight.
            moments = 2 * weights
        else:
            moments = tensors_bytes(t for state in optimizer.state_dict()["state"].values()
                                    for t in state.values() if torch.is_tensor(t))
        return weights + moments + tensors_bytes(ema or [])

    def save(self, step: int, parts, ema, state: dict) -> str:
        """Write ``checkpoint-<step>`` with ``state`` (JSON: what the run adds, e.g. its losses) in its
        trainer_state.json; returns the folder."""
        final = os.path.join(self.config.output_dir, f"checkpoint-{step}")
        partial = final + ".partial"
        is_main = self.accelerator.is_main_process
        existing = self.paths()
        # every rank checks (the same disk), so all stop at once instead of waiting for a rank that stopped
        check_free_disk(self.config.output_dir, self._bytes(parts[0], parts[1], ema), step,
                        existing[-1] if existing else None)
        if is_main:
            shutil.rmtree(partial, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        if self.deepspeed:
            self.accelerator.save_state(partial)
            written = {}
        else:
            written = checkpoint.save_state(partial, *parts, is_main)
        self.accelerator.wait_for_everyone()  # every rank's RNG state is in before the folder is renamed
        if is_main:
            written.update(state, step=step, num_processes=self.accelerator.num_processes, deepspeed=self.deepspeed)
            with open(os.path.join(partial, STATE_FILE), "w") as f:
                json.dump(written, f)
            if ema is not None:
                save_file({str(i): t.detach().cpu().contiguous() for i, t in enumerate(ema)},
                          os.path.join(partial, EMA_FILE))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
            for old in rotated_out(self.paths(), self.config.keep_checkpoints, self.config.keep_every):
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return final

    def load_latest(self, parts, ema):
        """Restore the newest checkpoint into ``parts`` and ``ema``; returns its trainer_state.json, or
        ``None`` when the run has none."""
        paths = self.paths()
        if not paths:
            return None
        latest = paths[-1]
        try:
            with open(os.path.join(latest, STATE_FILE)) as f:
                state = json.load(f)
        except (OSError, ValueError):
            raise checkpoint.damaged(latest, STATE_FILE) from None
        processes = state.get("num_processes", 1)
        if processes != self.accelerator.num_processes:  # the data order and RNG states are per process
            raise ConfigError(f"{os.path.basename(latest)} was written by {processes} processes and this launch has "
                              f"{self.accelerator.num_processes}; resume with the run's own launch "
                              f"(num_processes {processes})")
        if bool(state.get("deepspeed")) != self.deepspeed:
            raise ConfigError(f"{os.path.basename(latest)} was written " + (
                "by a DeepSpeed run; resume it from a terminal with the run's own accelerate launch line"
                if state.get("deepspeed") else "without DeepSpeed; resume it without DeepSpeed"))
        if self.deepspeed:
            self.accelerator.load_state(latest)
        else:
            checkpoint.load_state(latest, state, *parts, self.accelerator.device)
        if ema is not None:
            saved = checkpoint.read_file(latest, EMA_FILE, load_file)
            for i, tensor in enumerate(ema):
                tensor.copy_(saved[str(i)])
        return state
