"""Run ``etc_core.train`` as a separate process through ``accelerate launch`` and follow it.

The process reports ``step s/n loss x`` lines on stderr; :class:`TrainingProcess` parses them, and
``stop()`` sends SIGTERM to the training processes, on which they write a checkpoint and exit (resumable).
"""
import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np

STEP_LINE = re.compile(r"^step (\d+)/(\d+) loss ([-+0-9.eE]+|nan|inf)$")
PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TrainingError(RuntimeError):
    pass


def launch_command(config_path: str, mixed_precision: str = "no", resume: bool = False, num_processes: int = 1,
                   accelerate_config: str = None) -> list:
    """``accelerate launch`` of ``etc_core.train``: with an accelerate config file (DeepSpeed, multi-node:
    the file decides everything), else ``num_processes`` data-parallel processes on this machine."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        if not os.path.isfile(accelerate_config):
            raise TrainingError(f"accelerate_config {accelerate_config!r} is not a file; give the path of an "
                                "accelerate config YAML (e.g. etc_core/configs/accelerate_deepspeed_zero2.yaml) "
                                "or leave it empty")
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


class TrainingProcess:
    def __init__(self, config: dict, resume: bool = False, num_processes: int = 1, accelerate_config: str = None):
        self.config_path = os.path.join(config["output_dir"], "launch_config.json")
        command = launch_command(self.config_path, config.get("mixed_precision", "no"), resume, num_processes,
                                 accelerate_config)
        os.makedirs(config["output_dir"], exist_ok=True)
        partial = self.config_path + ".partial"
        with open(partial, "w") as f:
            json.dump(config, f, indent=1)
        os.replace(partial, self.config_path)
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
            errors = [line for line in self.log if line.startswith("error:")] or self.log[-20:]
            raise TrainingError("training failed: " + "\n".join(errors))
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
