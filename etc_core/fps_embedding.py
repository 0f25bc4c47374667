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

FPS_RANGE = (0, 120)
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


def load_fps_module(path: str, expected_base_model: str = None):
    """``(FPSEmbedding, metadata)``; refuses, naming the file, one that is not a readable ETC FPS file, one
    whose weights do not have the width it declares, and one made for a different base model."""
    import os

    from safetensors import safe_open
    name = os.path.basename(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(path)
    except Exception:  # safetensors reports a bad header in many ways; the file is what matters
        raise ValueError(f"fps_weights {name} is not a readable safetensors file; replace it with the "
                         "etc_fps.safetensors a training run exported") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"fps_weights {name} is not an ETC FPS-embedding file (format {metadata.get('format')!r})")
    if expected_base_model and metadata.get("base_model") != expected_base_model:
        raise ValueError(f"fps_weights {name} was trained for base model {metadata.get('base_model')}, but the "
                         f"MODEL is {expected_base_model}; pick the FPS file made with this checkpoint")
    width = metadata.get("width", "")
    module = FPSEmbedding(int(width)) if width.isdigit() and 0 < int(width) <= 65536 else None
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()} if module else None
    declared_for_model = not expected_base_model or expected_base_model.endswith(f"temb={width}")
    if expected != {k: tuple(v.shape) for k, v in tensors.items()} or not declared_for_model:
        raise ValueError(f"fps_weights {name} does not hold the weights of an FPS module of width {width!r} "
                         "(wrong or damaged file); replace it with the etc_fps.safetensors a run exported")
    module.load_state_dict(tensors)
    return module, metadata
