"""VCUT: training-free speed-up of Stable Video Diffusion (pure PyTorch, no ComfyUI import)."""
from .cached_projection import CachedProjection, CachedProjectionCrossAttention, run_length_rows
from .diffusers_svd import CachedProjectionProcessor, GuidanceCutoff, apply_vcut, disable_guidance_cutoff, enable_guidance_cutoff, remove_vcut
from .locate import CrossAttentionSites, NotSVDModelError, find_cross_attentions
from .patch_plan import SCA_MODES, TCA_MODES, describe_plan, kept_sites, plan_replacements, unused_parameters
from .step_plan import Evaluation, steps_from_events

__all__ = [
    "CachedProjection", "CachedProjectionCrossAttention", "CachedProjectionProcessor", "GuidanceCutoff",
    "run_length_rows", "apply_vcut", "remove_vcut", "enable_guidance_cutoff",
    "disable_guidance_cutoff", "Evaluation", "steps_from_events", "CrossAttentionSites",
    "NotSVDModelError", "find_cross_attentions", "SCA_MODES", "TCA_MODES", "kept_sites", "plan_replacements",
    "unused_parameters", "describe_plan",
]
