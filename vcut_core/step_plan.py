"""Which sampler step each model evaluation belongs to (for the guidance cutoff, VCUT eq. 4), from the
order of a sampler's model calls and progress callbacks.

A step is one iteration of the sampler's loop over the schedule. Two-stage
samplers evaluate the model more than once per step (Heun's corrector sits
exactly on the next step's sigma; DPM-2 and DPM++ 2S/SDE add a midpoint, and an
ancestral midpoint may lie below the next sigma), so a noise level alone does
not tell the step. The sampler's own progress callback does: k-diffusion
samplers (and ComfyUI's UniPC and DPM-fast) call it once per step, right after
the step's first evaluation.

A host records that order in a dry run of its sampler (ComfyUI: the pack's
``nodes/sampler_dry_run.py``); this module turns it into a plan.
"""
from dataclasses import dataclass


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
