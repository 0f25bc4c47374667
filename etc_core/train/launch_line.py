"""Training on several GPUs, several machines or with DeepSpeed is started from a terminal, never by the
server: this checks a config as a launch would, writes it into the run folder and gives the
``accelerate launch`` line that trains it. Nothing here starts a process."""
import os
import shlex

from .. import sd2
from .config import TrainConfig
from .preflight import check_run
from .run_folder import write_run_config

PACK_ROOT = os.path.dirname(os.path.dirname(sd2.CONFIG_DIR))
DEEPSPEED_CONFIG = os.path.relpath(os.path.join(sd2.CONFIG_DIR, "accelerate_deepspeed_zero2.yaml"), PACK_ROOT)


def write_launch_config(values: dict, resume: bool = False, roots=None):
    """Check ``values`` (TrainConfig fields, absolute paths), claim the run folder and write the run's config
    into it; returns ``(path, sha256 of the file)``. A refused config writes nothing."""
    config = TrainConfig.from_dict(values)
    check_run(config, resume, roots)
    return write_run_config(config)


def launch_arguments(config_path: str, sha256: str, num_processes: int = 1, mixed_precision: str = "no",
                     deepspeed: bool = False, resume: bool = False) -> list:
    """What follows ``accelerate launch``, run in PACK_ROOT: ``num_processes`` data-parallel processes on
    this machine, or the shipped DeepSpeed ZeRO-2 CPU-offload config (precision: the training config's)."""
    machine = ["--num_processes", str(num_processes), "--num_machines", "1"]
    if deepspeed:
        arguments = ["--config_file", DEEPSPEED_CONFIG] + machine
    else:
        arguments = machine + ["--mixed_precision", mixed_precision, "--dynamo_backend", "no"]
        arguments += ["--multi_gpu"] if num_processes > 1 else []
    arguments += ["-m", "etc_core.train", "--config", config_path, "--config-sha256", sha256]
    return arguments + (["--resume"] if resume else [])


def launch_line(config_path: str, sha256: str, **options) -> str:
    """The shell line a user pastes into a terminal on the machine that holds the run folder."""
    arguments = shlex.join(launch_arguments(config_path, sha256, **options))
    return f"cd {shlex.quote(PACK_ROOT)} && accelerate launch {arguments}"
