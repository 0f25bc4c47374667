"""Run ``etc_core.train`` as a separate process through ``accelerate launch`` and follow it.

The process reports ``step s/n loss x`` lines on stderr; :class:`TrainingProcess` parses them, and
``stop()`` sends SIGTERM to the training processes, on which they write a checkpoint and exit (resumable).
"""
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np

from .train import check_launch
from .train_config import TrainConfig, claim_output_dir, write_json_atomic

STEP_LINE = re.compile(r"^step (\d+)/(\d+) loss ([-+0-9.eE]+|nan|inf)$")
PATH_FIELDS = ("pretrained", "output_dir", "video_manifest", "image_manifest", "label_folder")
PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TrainingError(RuntimeError):
    pass


def check_accelerate_config(path: str):
    """Refuse a missing file, or one that is not a YAML mapping of accelerate settings (no content shown)."""
    import yaml
    hint = ("give the path of an accelerate config YAML (e.g. etc_core/configs/accelerate_deepspeed_zero2.yaml) "
            "or leave it empty")
    if not os.path.isfile(path):
        raise TrainingError(f"accelerate_config {path!r} is not a file; {hint}")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            settings = yaml.safe_load(f)
    except yaml.YAMLError:
        settings = None
    if not isinstance(settings, dict) or not {"distributed_type", "num_processes"} & set(settings):
        raise TrainingError(f"accelerate_config {path!r} is not an accelerate config (a YAML mapping with "
                            f"distributed_type, num_processes, ...); {hint}")


def launch_command(config_path: str, mixed_precision: str = "no", resume: bool = False, num_processes: int = 1,
                   accelerate_config: str = None) -> list:
    """``accelerate launch`` of ``etc_core.train``: with an accelerate config file (DeepSpeed, multi-node:
    the file decides everything), else ``num_processes`` data-parallel processes on this machine."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        check_accelerate_config(accelerate_config)
        command += ["--config_file", accelerate_config]
    else:
        command += ["--num_processes", str(num_processes), "--num_machines", "1",
                    "--mixed_precision", mixed_precision, "--dynamo_backend", "no"]
        if num_processes > 1:
            command.append("--multi_gpu")
    command += ["-m", "etc_core.train", "--config", config_path]
    return command + (["--resume"] if resume else [])


def launch_env() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACK_ROOT, os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")
    import torch
    if not torch.cuda.is_available():  # accelerate runs several processes on a CPU-only machine over gloo
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def absolute_paths(config: dict) -> dict:
    """Path fields made absolute here: the training process runs in the pack's folder, not the caller's."""
    return {k: os.path.abspath(v) if k in PATH_FIELDS and isinstance(v, str) and v else v for k, v in config.items()}


class TrainingProcess:
    """A launch checks the config, the base model, the data lists, the accelerate config and the run folder
    first; only then does it write ``run.json`` and ``launch_config.json`` and start the processes, so a
    refused launch leaves every file as it was. ``roots`` confines the files the data lists name."""

    def __init__(self, config: dict, resume: bool = False, num_processes: int = 1, accelerate_config: str = None,
                 roots=None):
        config = absolute_paths(config)
        checked = TrainConfig.from_dict(config)
        self.config_path = os.path.join(checked.output_dir, "launch_config.json")
        command = launch_command(self.config_path, checked.mixed_precision, resume, num_processes, accelerate_config)
        check_launch(checked, resume, roots)
        claim_output_dir(checked)
        write_json_atomic(self.config_path, config)
        env = launch_env()
        self.process = subprocess.Popen(command, cwd=PACK_ROOT, env=env, stdout=subprocess.PIPE,
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
        """SIGTERM the training processes (the launcher's children): they finish their step, agree on the
        step to stop at, write one checkpoint and exit. The launcher itself is not signalled, since
        torchrun would give its workers only 30 s before killing them. Returns once all are gone."""
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


def loss_curve_figure(losses, first_step: int = 1, width: int = 640, height: int = 320, dpi: int = 100):
    """A matplotlib Figure of the training loss against the step (``first_step`` is the step of
    ``losses[0]``), with labelled axes, ticks and the last value written on the plot."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    axes = figure.add_subplot()
    values = np.asarray(losses, np.float64)
    steps = first_step + np.arange(len(values))
    finite = np.isfinite(values)
    axes.plot(steps[finite], values[finite], color="#1f4fc8", linewidth=1.5, marker="." if len(values) < 50 else None)
    if finite.any():
        last = np.flatnonzero(finite)[-1]
        axes.annotate(f"step {steps[last]}: {values[last]:.4g}", (steps[last], values[last]),
                      textcoords="offset points", xytext=(-6, 8), ha="right", fontsize=9,
                      bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(f"training loss ({int(finite.sum())} steps)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    return figure


def loss_curve_image(losses, first_step: int = 1) -> np.ndarray:
    """:func:`loss_curve_figure` as RGB uint8 [320, 640, 3]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(loss_curve_figure(losses, first_step))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
