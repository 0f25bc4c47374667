"""Run ``etc_core.train`` as a separate process through ``accelerate launch`` and follow it.

The process reports ``step s/n loss x`` lines on stderr; :class:`TrainingProcess` parses them, and
``stop()`` sends SIGTERM, on which the trainer writes a checkpoint and exits (resumable).
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np

STEP_LINE = re.compile(r"^step (\d+)/(\d+) loss ([-+0-9.eE]+|nan|inf)$")
PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TrainingError(RuntimeError):
    pass


class TrainingProcess:
    def __init__(self, config: dict, resume: bool = False, num_processes: int = 1):
        os.makedirs(config["output_dir"], exist_ok=True)
        self.config_path = os.path.join(config["output_dir"], "launch_config.json")
        partial = self.config_path + ".partial"
        with open(partial, "w") as f:
            json.dump(config, f, indent=1)
        os.replace(partial, self.config_path)
        command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
                   "--num_machines", "1", "--mixed_precision", config.get("mixed_precision", "no"),
                   "--dynamo_backend", "no", "-m", "etc_core.train", "--config", self.config_path]
        if resume:
            command.append("--resume")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACK_ROOT, os.environ.get("PYTHONPATH", "")]),
                   PYTHONUNBUFFERED="1")
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
        """SIGTERM the whole process group (launcher and workers); return once every worker has written
        its checkpoint and exited."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.process.poll()
            if not _group_alive(self.process.pid):
                return
            time.sleep(0.2)
        os.killpg(self.process.pid, signal.SIGKILL)

    def wait(self) -> str:
        """The exported folder; raises TrainingError with the trainer's own message on failure."""
        code = self.process.wait()
        self._reader.join()
        if code != 0:
            errors = [line for line in self.log if line.startswith("error:")] or self.log[-20:]
            raise TrainingError("training failed: " + "\n".join(errors))
        lines = [line.strip() for line in self._stdout if line.strip()]
        return lines[-1] if lines else ""


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in process group ``pgid`` (orphans may stay unreaped)."""
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def loss_curve_image(losses, width: int = 640, height: int = 320) -> np.ndarray:
    """RGB uint8 [height, width, 3] plot of the loss per step (white background, dark line)."""
    import cv2
    image = np.full((height, width, 3), 255, np.uint8)
    margin = 24
    cv2.rectangle(image, (margin, margin), (width - margin, height - margin), (200, 200, 200), 1)
    values = np.asarray([v for v in losses if np.isfinite(v)], np.float64)
    if len(values) >= 2:
        lo, hi = values.min(), values.max()
        span = hi - lo or 1.0
        xs = margin + np.linspace(0, width - 2 * margin, len(values))
        ys = height - margin - (values - lo) / span * (height - 2 * margin)
        cv2.polylines(image, [np.stack([xs, ys], 1).round().astype(np.int32)], False, (30, 60, 200), 2)
        cv2.putText(image, f"loss {values[0]:.4f} -> {values[-1]:.4f} ({len(values)} steps)", (margin, 18),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return image
