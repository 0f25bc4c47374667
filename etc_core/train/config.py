"""The training config, checked field by field (the run folder's rules are ``run_folder.py``)."""
import dataclasses
import hashlib
import json
import math

from ..files.media_header import MAX_FRAME_PIXELS
from ..grid import parse_layout
from .timesteps import TIMESTEP_SAMPLING

MIXED_PRECISION = ("no", "fp16", "bf16")


class ConfigError(ValueError):
    pass


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


LR_SCHEDULES = ("constant", "cosine")


def lr_factor(config, steps_per_step: int = 1):
    """The learning-rate multiplier as a function of the scheduler's step count: a linear warm-up over
    ``lr_warmup_steps``, then 1 (constant) or a half cosine down to 0 at ``max_steps`` (cosine, as in
    diffusers' ``get_cosine_schedule_with_warmup``). ``steps_per_step``: scheduler steps per optimizer step
    (accelerate steps a prepared scheduler once per process)."""
    warmup, total = config.lr_warmup_steps * steps_per_step, config.max_steps * steps_per_step

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.lr_schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return factor


# field: (test, what the value must be)
_RULES = {
    "pretrained": (lambda v: isinstance(v, str) and v != "", "a non-empty path"),
    "output_dir": (lambda v: isinstance(v, str) and v != "", "a non-empty path"),
    "video_manifest": (lambda v: v is None or isinstance(v, str), "a path or null"),
    "image_manifest": (lambda v: v is None or isinstance(v, str), "a path or null"),
    "label_folder": (lambda v: v is None or isinstance(v, str), "a path or null"),
    "ratios": (lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(_number(r) and r >= 0 for r in v),
               "three numbers >= 0 (video, image, label)"),
    "frames": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "layout": (lambda v: isinstance(v, str), "'auto' or 'RxC'"),
    "resolution": (lambda v: _integer(v) and v >= 8 and v % 8 == 0, "an integer >= 8, a multiple of 8"),
    "theta": (lambda v: _number(v) and v > 0, "a number > 0"),
    "me_strength": (lambda v: _number(v) and v >= 0, "a number >= 0 (0: no mixed embedding)"),
    "caption_dropout": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "lr_schedule": (lambda v: v in LR_SCHEDULES, f"one of {list(LR_SCHEDULES)}"),
    "lr_warmup_steps": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "timestep_sampling": (lambda v: v in TIMESTEP_SAMPLING, f"one of {list(TIMESTEP_SAMPLING)}"),
    "betas": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v),
              "two numbers in [0, 1)"),
    "weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "batch_size": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "gradient_accumulation_steps": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "max_steps": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "checkpoint_every": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "checkpoint_minutes": (lambda v: _number(v) and 0 <= v < float("inf"), "a number of minutes >= 0 (0: off)"),
    "keep_checkpoints": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "keep_every": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (0: off)"),
    "mixed_precision": (lambda v: v in MIXED_PRECISION, f"one of {list(MIXED_PRECISION)}"),
    "gradient_checkpointing": (lambda v: isinstance(v, bool), "true or false"),
    "cache_latents": (lambda v: isinstance(v, bool), "true or false"),
    "ema_decay": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1) (0: off)"),
    "seed": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "skip_unreadable": (lambda v: isinstance(v, bool), "true or false"),
    "max_frame_pixels": (lambda v: _integer(v) and v >= 64, "an integer >= 64"),
    "lora_rank": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (0: full fine-tune)"),
    "lora_alpha": (lambda v: _number(v) and v >= 0, "a number >= 0 (0: the rank)"),
}


def _shown(value) -> str:
    """A wrong value as errors show it: numbers and booleans, never text (it may come from any file)."""
    return repr(value) if isinstance(value, (bool, int, float)) or value is None else f"a {type(value).__name__}"


@dataclasses.dataclass
class TrainConfig:
    pretrained: str                      # SD 2.x single .safetensors file, or a diffusers folder
    output_dir: str
    video_manifest: str = None           # JSONL of {"video", "caption"}, or a folder of videos + same-name .txt
    image_manifest: str = None           # JSONL of {"image", "caption"}, or a folder of images + same-name .txt
    label_folder: str = None             # <label>/<images>
    ratios: tuple = (1.0, 1.0, 1.0)      # video, image, label
    frames: int = 16
    layout: str = "auto"
    resolution: int = 256
    theta: float = 10000.0
    me_strength: float = 1.0             # mixed-embedding scale; 0 switches ME off (the paper's ablation)
    caption_dropout: float = 0.0         # share of samples trained with the empty caption (what CFG's negative uses)
    lr: float = 1e-4
    lr_schedule: str = "constant"        # constant | cosine (to 0 at max_steps), after lr_warmup_steps
    lr_warmup_steps: int = 0             # linear warm-up from 0
    timestep_sampling: str = "uniform"   # uniform | ramp (more samples at high noise: timesteps.py)
    betas: tuple = (0.9, 0.9)
    weight_decay: float = 0.03
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_steps: int = 15000
    checkpoint_every: int = 500
    checkpoint_minutes: float = 5.0      # also a checkpoint once this long passed since the last one (0: off)
    keep_checkpoints: int = 3            # the newest checkpoints kept; older ones are deleted after each write
    keep_every: int = 0                  # > 0: also keep every checkpoint whose step is a multiple of this
    mixed_precision: str = "no"          # no | fp16 | bf16
    gradient_checkpointing: bool = False
    cache_latents: bool = False          # keep each frame's VAE posterior on disk (output_dir/latent_cache)
    ema_decay: float = 0.0               # 0: off; else the exported weights are the EMA
    seed: int = 0
    skip_unreadable: bool = True         # False: refuse the run when a listed video or image cannot be read
    max_frame_pixels: int = MAX_FRAME_PIXELS  # larger images and video frames (by their header) are unreadable
    lora_rank: int = 0                   # > 0: train LoRA adapters of this rank (and the FPS module), not the UNet
    lora_alpha: float = 0.0              # LoRA scale alpha / rank; 0: alpha = rank

    def __post_init__(self):
        for field in dataclasses.fields(self):
            test, expected = _RULES[field.name]
            value = getattr(self, field.name)
            if not test(value):
                raise ConfigError(f"config field {field.name!r} must be {expected}; got {_shown(value)}")
        self.ratios, self.betas = tuple(self.ratios), tuple(self.betas)
        if not any(getattr(self, k) for k in ("video_manifest", "image_manifest", "label_folder")):
            raise ConfigError("no training data: set video_manifest, image_manifest or label_folder")
        try:
            parse_layout(self.frames, self.layout)
        except ValueError as e:
            raise ConfigError(f"config field 'layout': {e}") from None

    @classmethod
    def from_dict(cls, values, source: str = "config") -> "TrainConfig":
        if not isinstance(values, dict):
            raise ConfigError(f"{source} must hold a JSON object of TrainConfig fields")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ConfigError(f"{source}: unknown fields {unknown[:5]}")
        missing = [name for name in ("pretrained", "output_dir") if name not in values]
        if missing:
            raise ConfigError(f"{source}: missing fields {missing}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str, sha256: str = None) -> "TrainConfig":
        """The config in ``path``; with ``sha256``, only if the file still has that digest (the file lies
        under output/, which others may write to between the node writing it and a terminal reading it)."""
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise ConfigError(f"cannot read the config {path}: {e.strerror}") from None
        if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256.lower():
            raise ConfigError(f"the config {path} changed since its launch line was made (sha256 differs); make "
                              "the line again and check the file")
        try:
            values = json.loads(raw.decode("utf-8", errors="replace"))
        except ValueError as e:  # the position, never the text
            raise ConfigError(f"{path} is not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return cls.from_dict(values, path)

    def run_identity(self) -> dict:
        """What makes two runs the same run (the step budget and checkpoint cadence may change on resume)."""
        values = dataclasses.asdict(self)
        for key in ("max_steps", "checkpoint_every", "output_dir", "skip_unreadable", "checkpoint_minutes",
                    "keep_checkpoints", "keep_every", "max_frame_pixels"):
            values.pop(key)
        return json.loads(json.dumps(values))
