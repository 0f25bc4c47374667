"""FPS embedding (ETC section 4.2).

fps in [0, 120] (0: unrelated frames of one label, 1..60: video rates, 120: one
still image repeated) is embedded with the UNet's own sinusoidal timestep
embedding and its own time-embedding MLP (shared weights), then a new 3-layer
MLP: width -> 4*width -> width -> width, SiLU between, last layer zero at init.
The result is added to the timestep embedding, so an untrained module is an
exact no-op.
"""
import json
import math

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .files.messages import quote

FPS_RANGE = (0, 120)
# Weights this large are a diverged run, not a trained MLP: the sum of a few such products is infinite in fp16.
MAX_WEIGHT = 1e4
FORMAT = "etc-fps-embedding/1"


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """SD's sinusoidal embedding, ``[cos(t f_i), sin(t f_i)]`` with ``f_i = max_period^(-i/half)``:
    ComfyUI's ``timestep_embedding`` and diffusers' ``Timesteps(flip_sin_to_cos=True, shift=0)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class FPSEmbedding(nn.Module):
    """The new MLP of the FPS branch; ``mlp[-1]`` starts at zero."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.SiLU(), nn.Linear(4 * width, width), nn.SiLU(),
                                 nn.Linear(width, width))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, fps_time_embedding: torch.Tensor) -> torch.Tensor:
        return self.mlp(fps_time_embedding)


def check_fps(fps) -> float:
    if not FPS_RANGE[0] <= float(fps) <= FPS_RANGE[1]:
        raise ValueError(f"fps must be in [0, 120] (0: frames of one label, 1-60: video, 120: still image); got {fps}")
    return float(fps)


class FPSConditionedTimeEmbedding(nn.Module):
    """Wraps the UNet's time-embedding MLP: ``emb = time_embed(t_emb) + fps_mlp(time_embed(sin(fps)))``.

    Works for ComfyUI's ``time_embed`` (nn.Sequential) and diffusers' ``time_embedding``.
    ``fps`` is a number or a per-sample tensor.
    """

    def __init__(self, time_embed: nn.Module, fps_module: FPSEmbedding, fps):
        super().__init__()
        self.time_embed, self.fps_module = time_embed, fps_module
        self.fps = fps if torch.is_tensor(fps) else check_fps(fps)

    @property
    def wrapped(self) -> nn.Module:
        """The module this one wraps (every pack wrapper has ``wrapped``: a patch can be undone or replaced)."""
        return self.time_embed

    def forward(self, t_emb: torch.Tensor, *args, **kwargs):
        emb = self.time_embed(t_emb, *args, **kwargs)
        fps = torch.as_tensor(self.fps, device=t_emb.device).float().expand(t_emb.shape[0])
        fps_emb = self.time_embed(timestep_embedding(fps, t_emb.shape[-1]).to(t_emb.dtype))
        module = self.fps_module
        weight = module.mlp[0].weight
        return emb + module(fps_emb.to(device=weight.device, dtype=weight.dtype)).to(emb.dtype)


def base_model_fingerprint(unet: nn.Module) -> str:
    """Shape signature of an SD-style UNet: input channels, model channels, time-embedding width."""
    conv = unet.conv_in if hasattr(unet, "conv_in") else unet.input_blocks[0][0]
    conv = getattr(conv, "wrapped", conv)  # under a MixedEmbeddingInput
    time_embed = unet.time_embedding if hasattr(unet, "time_embedding") else unet.time_embed
    time_embed = getattr(time_embed, "wrapped", time_embed)  # under an FPSConditionedTimeEmbedding
    time_embed = time_embed.linear_2 if hasattr(time_embed, "linear_2") else time_embed[2]
    return f"sd-unet:in={conv.weight.shape[1]},ch={conv.weight.shape[0]},temb={time_embed.out_features}"


def save_fps_module(path: str, module: FPSEmbedding, *, frames: int, layout: str, theta: float,
                    base_model: str, extra: dict = None):
    """Write the module and its metadata to a safetensors file."""
    metadata = {"format": FORMAT, "width": str(module.width), "frames": str(frames), "layout": layout,
                "theta": str(theta), "base_model": base_model, "extra": json.dumps(extra or {})}
    save_file({k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()}, path, metadata)


def fps_module_shapes(width: int) -> dict:
    """``{name: shape}`` of an :class:`FPSEmbedding` of ``width``'s state dict, without building it."""
    shapes = {}
    for index, (fan_in, fan_out) in zip((0, 2, 4), ((width, 4 * width), (4 * width, width), (width, width))):
        shapes[f"mlp.{index}.weight"], shapes[f"mlp.{index}.bias"] = (fan_out, fan_in), (fan_out,)
    return shapes


def _read_header(path: str, name: str):
    """``(metadata, {tensor: shape})`` from the file's header alone: no tensor is read."""
    from safetensors import safe_open
    try:
        with safe_open(path, framework="pt") as f:
            return f.metadata() or {}, {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception:  # safetensors reports a bad header in many ways; the file is what matters
        raise ValueError(f"fps_weights {name} is not a readable safetensors file; replace it with the "
                         "etc_fps.safetensors a training run exported") from None


def load_fps_module(path: str, expected_base_model: str = None):
    """``(FPSEmbedding, metadata)``; refuses, naming the file, one that is not a readable ETC FPS file, one
    whose weights do not have the width it declares, one made for a different base model, and one whose
    weights are not finite.

    Shapes are checked from the header before any tensor is read or module built: a file of a few bytes
    can declare any width, and a module built at width 16384 alone takes gigabytes.
    """
    import os

    name = os.path.basename(path)
    metadata, shapes = _read_header(path, name)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"fps_weights {name} is not an ETC FPS-embedding file (format "
                         f"{quote(metadata.get('format'))})")
    if expected_base_model and metadata.get("base_model") != expected_base_model:
        raise ValueError(f"fps_weights {name} was trained for base model {quote(metadata.get('base_model'))}, but "
                         f"the MODEL is {expected_base_model}; pick the FPS file made with this checkpoint")
    width = metadata.get("width", "")
    expected = fps_module_shapes(int(width)) if width.isdigit() and 0 < int(width) <= 65536 else None
    declared_for_model = not expected_base_model or expected_base_model.endswith(f"temb={width}")
    if expected != shapes or not declared_for_model:
        raise ValueError(f"fps_weights {name} does not hold the weights of an FPS module of width {quote(width)} "
                         "(wrong or damaged file); replace it with the etc_fps.safetensors a run exported")
    tensors = load_file(path)
    if not all(bool(torch.isfinite(t).all()) and float(t.abs().max()) < MAX_WEIGHT for t in tensors.values()):
        raise ValueError(f"fps_weights {name} holds NaN, infinite or huge (>= {MAX_WEIGHT:g}) weights (a diverged "
                         "or damaged run); use the file of an earlier checkpoint or retrain")
    module = FPSEmbedding(int(width))
    module.load_state_dict(tensors)
    return module, metadata
