"""What a run checks before it starts, without the models and without decoding; reads only."""
import importlib.util

from ..data.sources import missing, read_sources, usable_sources
from .config import TrainConfig
from .pretrained import check_pretrained
from .run_folder import check_output_dir

# Installed for training only (README, docs/training.md): their newest releases need a newer torch than many
# ComfyUI installs run, and pip would replace that torch to install them with the pack.
TRAINING_PACKAGES = ("accelerate", "peft")


def check_training_packages():
    absent = [name for name in TRAINING_PACKAGES if importlib.util.find_spec(name) is None]
    if absent:
        names = " ".join(absent)
        raise ModuleNotFoundError(f"training needs {names}, which the pack does not install: run `pip install "
                                  f"{names}` with the Python that runs ComfyUI, adding torch==<its torch version> "
                                  "to keep that torch (docs/training.md)")


def check_run(config: TrainConfig, resume: bool = False, roots=None):
    """Everything a run (in process or from a terminal) can check before it starts: the training packages,
    the run folder, the base model, the data lists (each line parsed, each field typed, each file present).
    ``roots`` confines the files the data lists name."""
    check_training_packages()
    check_output_dir(config, resume)
    check_pretrained(config.pretrained)
    sources = read_sources(config.video_manifest, config.image_manifest, config.label_folder, roots)
    usable_sources(config.frames, sources, config.ratios, config.skip_unreadable, missing, missing)
