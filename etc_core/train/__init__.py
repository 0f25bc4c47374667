"""ETC fine-tuning: the trainer (one process or ``accelerate launch``), its config and run folder, loading a
base model, checkpoints, the export for ComfyUI's loaders and the terminal launch line."""
from .config import ConfigError, TrainConfig
from .command import main
from .preflight import check_run
from .trainer import Trainer

__all__ = ["ConfigError", "TrainConfig", "Trainer", "check_run", "main"]
