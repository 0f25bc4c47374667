"""A dry run of a ComfyUI sampler function (k-diffusion's protocol: ``model(x, sigma, **extra_args)``, a
``callback`` per step, ``model_options`` with post-CFG functions) that records its model calls and progress
callbacks, for ``vcut_core.step_plan``.

The sampler function runs on the real schedule with a stand-in model that returns zeros. A sampler whose
structure depends on the model's output (DPM-adaptive accepts or rejects steps by an error estimate) gives
different events for a second stand-in output; its steps are then unknown, and callers keep guidance on
(the safe side).
"""
import torch

from ..vcut_core import steps_from_events


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
