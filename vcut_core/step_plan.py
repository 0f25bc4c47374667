"""Which sampler step each model evaluation belongs to (for the guidance cutoff, VCUT eq. 4).

A step is one iteration of the sampler's loop over the schedule. Two-stage
samplers evaluate the model more than once per step (Heun's corrector sits
exactly on the next step's sigma; DPM-2 and DPM++ 2S/SDE add a midpoint, and an
ancestral midpoint may lie below the next sigma), so a noise level alone does
not tell the step. The sampler's own progress callback does: k-diffusion
samplers (and ComfyUI's UniPC and DPM-fast) call it once per step, right after
the step's first evaluation.

The plan is read from a dry run: the sampler function is run on the real
schedule with a stand-in model that returns zeros, and the calls and callbacks
are recorded in order. A sampler whose structure depends on the model's output
(DPM-adaptive accepts or rejects steps by an error estimate) gives different
events for a second stand-in output; its steps are then unknown, and callers
keep guidance on (the safe side).
"""
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Evaluation:
    sigma: float
    step: int


def steps_from_events(events) -> list:
    """``[Evaluation]`` from a recorded sequence of ``("call", sigma)`` and ``("callback", i)``.

    A call directly followed by callback ``i`` is the first evaluation of step
    ``i``; any other call belongs to the step of the last callback before it.
    Where a sampler reported a step only after all its evaluations, that rule
    gives earlier steps, never later ones: guidance then lasts longer, not shorter.
    """
    plan, last_step = [], 0
    for k, (kind, value) in enumerate(events):
        if kind == "callback":
            last_step = int(value)
        else:
            following = events[k + 1] if k + 1 < len(events) else None
            step = int(following[1]) if following and following[0] == "callback" else last_step
            plan.append(Evaluation(float(value), step))
    return plan


class _StandInModel:
    """Records each call and returns ``fill(x)``; other attributes come from the real model
    (samplers read ``inner_model.model_sampling`` and the like)."""

    def __init__(self, events, fill, inner_model, model_options):
        self.events, self.fill, self.inner_model = events, fill, inner_model
        self.model_options = model_options

    def __call__(self, x, sigma, **extra_args):
        self.events.append(("call", float(sigma.flatten()[0])))
        out = self.fill(x)
        # CFG++ samplers add a post-CFG function to capture the uncond prediction: feed it.
        added = [f for f in (extra_args.get("model_options") or {}).get("sampler_post_cfg_function", [])
                 if f not in self.model_options.get("sampler_post_cfg_function", [])]
        for function in added:
            function({"denoised": out, "cond_denoised": out, "uncond_denoised": out, "sigma": sigma, "input": x,
                      "model": self.inner_model, "model_options": extra_args.get("model_options"), "cond": None,
                      "uncond": None})
        return out


def _record(sampler_function, extra_options, inner_model, noise, sigmas, extra_args, fill):
    events = []
    model = _StandInModel(events, fill, inner_model, extra_args.get("model_options") or {})
    args = dict(extra_args, model_options=dict(extra_args.get("model_options") or {}))
    with torch.random.fork_rng(devices=[noise.device] if noise.device.type == "cuda" else []):
        sampler_function(model, noise.clone(), sigmas.clone(), extra_args=args,
                         callback=lambda d: events.append(("callback", d["i"])), disable=True, **extra_options)
    return events


def dry_run_plan(sampler_function, extra_options, inner_model, noise, sigmas, extra_args):
    """The step of every evaluation of ``sampler_function`` on ``sigmas``, or ``None`` when the
    sampler's structure depends on the model's output or it reports no steps.

    The global RNG is forked, so the real run draws the same noise as without the dry run.
    """
    events = _record(sampler_function, extra_options, inner_model, noise, sigmas, extra_args, torch.zeros_like)
    again = _record(sampler_function, extra_options, inner_model, noise, sigmas, extra_args, lambda x: x * 0.5)
    if events != again or not any(kind == "callback" for kind, _ in events):
        return None
    return steps_from_events(events)
