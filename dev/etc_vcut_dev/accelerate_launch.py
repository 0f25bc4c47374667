"""``accelerate launch`` of ``etc_core.train`` in child processes, as a user runs it from a terminal with
the line ETCTrainCommand gives (the tests of multi-process, two-machine and DeepSpeed runs).

The run reports ``step s/n loss x`` lines on stderr; :class:`TrainingProcess` parses them, and ``stop()``
sends SIGTERM to the training processes, on which they write a checkpoint and exit (resumable).
"""
import os
import re
import subprocess
import sys
import threading
import time

import torch

from etc_core.train.launch_line import PACK_ROOT, launch_arguments, write_launch_config

STEP_LINE = re.compile(r"^step (\d+)/(\d+) loss ([-+0-9.eE]+|nan|inf)$")
PATH_FIELDS = ("pretrained", "output_dir", "video_manifest", "image_manifest", "label_folder")


class TrainingError(RuntimeError):
    pass


def absolute_paths(config: dict) -> dict:
    """Path fields made absolute here: the training processes run in the pack's folder, not the caller's."""
    return {k: os.path.abspath(v) if k in PATH_FIELDS and isinstance(v, str) and v else v for k, v in config.items()}


def launch_env(deepspeed: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=PACK_ROOT, PYTHONUNBUFFERED="1")
    if not torch.cuda.is_available() and not deepspeed:  # data parallel over gloo; CPU mode switches DeepSpeed off
        env["ACCELERATE_USE_CPU"] = "true"
    return env


class TrainingProcess:
    """The config is checked and written as ETCTrainCommand writes it (a refused one writes nothing), then
    launched with the line it returns, or with ``accelerate_config`` (a multi-machine file) instead."""

    def __init__(self, config: dict, resume: bool = False, num_processes: int = 1, deepspeed: bool = False,
                 accelerate_config: str = None):
        config = absolute_paths(config)
        path, digest = write_launch_config(config, resume)
        arguments = launch_arguments(path, digest, num_processes, config.get("mixed_precision", "no"), deepspeed,
                                     resume)
        if accelerate_config:
            arguments = ["--config_file", accelerate_config] + arguments[arguments.index("-m"):]
        command = [sys.executable, "-m", "accelerate.commands.launch"] + arguments
        self.process = subprocess.Popen(command, cwd=PACK_ROOT, env=launch_env(deepspeed), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.losses, self.log, self.step, self.total = [], [], 0, int(config.get("max_steps", 0))
        self._stdout = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        threading.Thread(target=lambda: self._stdout.extend(self.process.stdout), daemon=True).start()

    def _read(self):
        for line in self.process.stderr:
            line = line.rstrip("\n")
            self.log.append(line)
            match = STEP_LINE.match(line)
            if match:
                self.step, self.total = int(match[1]), int(match[2])
                self.losses.append(float(match[3]))

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 600):
        """SIGTERM the training processes (the launcher's children), as Ctrl-C in a terminal reaches them:
        they finish their step, agree on the step to stop at, write one checkpoint and exit. The launcher
        itself is not signalled, since torchrun would give its workers only 30 s before killing them."""
        import psutil
        try:
            workers = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return
        if not workers:  # still starting: nothing to checkpoint yet
            self.process.terminate()
        for worker in workers:
            try:
                worker.terminate()
            except psutil.NoSuchProcess:
                pass
        deadline = time.time() + timeout
        _, alive = psutil.wait_procs(workers, timeout=timeout)
        for worker in alive:
            worker.kill()
        try:
            self.process.wait(max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def wait(self) -> str:
        """The exported folder; raises TrainingError with the trainer's own message on failure."""
        code = self.process.wait()
        self._reader.join()
        if code != 0:
            errors = [line for line in self.log if line.startswith("error:")]  # the trainer's own, from each rank
            last = [line for line in self.log if line.strip()][-1:]
            raise TrainingError("training failed: " + (errors[0] if errors else " ".join(last)))
        folders = [line.strip() for line in self._stdout if os.path.isdir(line.strip())]  # libraries print too
        return folders[-1] if folders else ""


def final_weights(out):
    """The weights of the newest checkpoint in the run folder ``out`` (a Path)."""
    from safetensors.torch import load_file
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return load_file(str(checkpoints[-1] / "model.safetensors"))


def assert_same_run(reference, losses, out):
    """Same losses step by step (as printed, 6 decimals) and bit-equal final weights: every process runs one
    thread, like the reference, and averaging two gradients is one addition and one exact halving."""
    import pytest
    assert losses == pytest.approx(reference[0], abs=1e-6)
    expected, got = reference[1], final_weights(out)
    assert expected.keys() == got.keys()
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []
