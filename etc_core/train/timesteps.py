"""The training timesteps: which noise levels the diffusion loss is taken at.

``uniform``: t ~ U{0, ..., T-1}, as SD and ETC train (the paper's recipe, the default).

``ramp``: P(t) = (2t + 1) / T^2, a density rising linearly from almost 0 at the cleanest step to twice the
uniform one at the noisiest, drawn as t = floor(T * sqrt(u)) with u ~ U[0, 1) (the inverse of the CDF
(t + 1)^2 / T^2). Three quarters of the samples fall in the noisier half, where a v- or eps-prediction model
lays out what is where and how it moves; the clean end, which only sharpens, gets few. On the demo's synthetic
motion this reaches with 200 steps what uniform timesteps reach with 300 (docs/demo-timing.md, session 13).
"""
import torch

TIMESTEP_SAMPLING = ("uniform", "ramp")


def sample_timesteps(kind: str, batch: int, num_train_timesteps: int, generator: torch.Generator,
                     device) -> torch.Tensor:
    """``batch`` timesteps in [0, num_train_timesteps) drawn as ``kind`` (one of TIMESTEP_SAMPLING) says."""
    if kind == "uniform":
        return torch.randint(0, num_train_timesteps, (batch,), generator=generator, device=device)
    if kind == "ramp":
        u = torch.rand((batch,), generator=generator, device=device)
        return (u.sqrt() * num_train_timesteps).long().clamp_(max=num_train_timesteps - 1)
    raise ValueError(f"timestep sampling {kind!r} is not one of {list(TIMESTEP_SAMPLING)}")
