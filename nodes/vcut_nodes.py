"""ComfyUI nodes for VCUT (category video/VCUT): thin adapters over vcut_core."""
import logging

from ..vcut_core import SCA_MODES, TCA_MODES, describe_plan, find_cross_attentions, kept_sites, plan_replacements
from ..vcut_core.locate import one_token_reason
from .comfy_versions import install_guidance_cutoff, module_to_patch

CATEGORY = "video/VCUT"
STEPS_TOOLTIP = ("steps 0..c-1 use guidance; from step c on, one UNet pass per model call. A step is one "
                 "iteration of the sampler (its progress bar), found by a dry run of the sampler on the schedule. "
                 "Where the steps cannot be known (dpm_adaptive, whose steps depend on the model's output, and "
                 "samplers from other packs that are not ComfyUI KSAMPLERs) guidance stays on for every step.")


class VCUTPatchSVD:
    """Exact cached linear projection for SVD's one-token cross-attentions; optional TCA drop."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "sca_mode": (list(SCA_MODES), {"default": "linear",
                                           "tooltip": "linear: exact cached projection; keep: unchanged"}),
            "tca_mode": (list(TCA_MODES), {"default": "drop",
                                           "tooltip": "drop: the paper (adds nothing); linear: exact; keep"}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY
    DESCRIPTION = "VCUT: replace SVD's spatial/temporal cross-attention by a cached projection of the CLIP token."

    def patch(self, model, sca_mode, tca_mode):
        patched = model.clone()
        unet = patched.model.diffusion_model
        plan = plan_replacements(unet, sca_mode, tca_mode, owner=patched.model,
                                 get_module=lambda name: module_to_patch(patched, f"diffusion_model.{name}"))
        for name, module in plan.items():
            patched.add_object_patch(f"diffusion_model.{name}", module)
        for name in kept_sites(unet, sca_mode, tca_mode, patched.model):
            # keep = the original attention, also where a VCUT node earlier in the graph replaced it
            key = f"diffusion_model.{name}"
            if key in patched.object_patches:
                patched.add_object_patch(key, module_to_patch(patched, key))
        logging.info("VCUT: %s", describe_plan(find_cross_attentions(unet, patched.model), plan))
        return (patched,)


class VCUTGuidanceCutoff:
    """Classifier-free guidance only in the first c sampler steps (VCUT eq. 4)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "cutoff_step": ("INT", {"default": 17, "min": 0, "max": 10000, "tooltip": STEPS_TOOLTIP}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY
    DESCRIPTION = ("VCUT guidance cutoff: one UNet pass per step from step c on. One-token models (SVD family, "
                   "SV3D, Stable Zero123): the pass reads the mean of the cond and uncond contexts (exact, eq. 4); "
                   "text models (SD 2.x, ETC): the pass is the conditional branch alone.")

    def patch(self, model, cutoff_step):
        one_token = one_token_reason(model.model.diffusion_model, model.model) is not None
        return (install_guidance_cutoff(model.clone(), cutoff_step, average_context=one_token),)


NODE_CLASS_MAPPINGS = {"VCUTPatchSVD": VCUTPatchSVD, "VCUTGuidanceCutoff": VCUTGuidanceCutoff}
NODE_DISPLAY_NAME_MAPPINGS = {"VCUTPatchSVD": "VCUT Patch SVD (cached cross-attention)",
                              "VCUTGuidanceCutoff": "VCUT Guidance Cutoff"}
