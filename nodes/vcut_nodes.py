"""ComfyUI nodes for VCUT (category video/VCUT): thin adapters over vcut_core."""
import logging

from ..vcut_core import SCA_MODES, TCA_MODES, describe_plan, find_cross_attentions, kept_sites, plan_replacements
from ..vcut_core.locate import one_token_reason
from .cutoff_hooks import install_guidance_cutoff
from .patch_lookup import module_to_patch
from .node_spec import Input, NodeSpec, Output, mappings, node

CATEGORY = "video/VCUT"
STEPS_TOOLTIP = ("c: steps 0..c-1 use guidance (0: none; the step count or more: all); from step c on, one UNet "
                 "pass per model call. A step is one iteration of the sampler (its progress bar), found by a "
                 "dry run of the sampler on the schedule. Where the steps cannot be known (dpm_adaptive, whose "
                 "steps depend on the model's output, and samplers from other packs that are not ComfyUI "
                 "KSAMPLERs) guidance stays on for every step.")


MODEL = Input("model", "MODEL", "SVD, SVD-XT, SV3D or Stable Zero123 (e.g. from Image Only Checkpoint Loader): "
              "models whose cross-attention sees one CLIP image token; others are refused")


@node(NodeSpec(
    "VCUTPatchSVD", "VCUT Patch SVD (cached cross-attention)", CATEGORY,
    "VCUT: SVD's cross-attentions attend to one CLIP image token, so each is a linear map of that token: "
    "computed once per run and cached (exact), or dropped (temporal, as in the paper; not exact).",
    "patch",
    inputs=(MODEL,
            Input("sca_mode", lambda: list(SCA_MODES), "spatial cross-attention: linear = exact cached "
                  "projection (the paper); keep = unchanged", {"default": "linear"}),
            Input("tca_mode", lambda: list(TCA_MODES), "temporal cross-attention: drop = removed, as in the paper "
                  "(not exact: the video can differ); linear = exact cached projection; keep = unchanged",
                  {"default": "drop"})),
    outputs=(Output("MODEL", "a clone of the model with the cross-attentions replaced; the input model is "
                    "unchanged"),)))
class VCUTPatchSVD:
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


@node(NodeSpec(
    "VCUTGuidanceCutoff", "VCUT Guidance Cutoff", CATEGORY,
    "VCUT eq. 4: classifier-free guidance only in the first c sampler steps; from step c on, each model call "
    "is one UNet pass instead of two (cond and uncond). One-token models (SVD family, SV3D, Stable Zero123): the "
    "pass reads the mean of the cond and uncond contexts (exact, eq. 4); text models (SD 2.x, ETC): the pass is "
    "the conditional branch alone.",
    "patch",
    inputs=(Input("model", "MODEL", "any ComfyUI diffusion model sampled with CFG: SVD family, SV3D and Stable "
                  "Zero123 (mean context) or SD 2.x / ETC text models (conditional branch alone)"),
            Input("cutoff_step", "INT", STEPS_TOOLTIP, {"default": 17, "min": 0, "max": 10000})),
    outputs=(Output("MODEL", "a clone of the model that samples with the cutoff; the input model is "
                    "unchanged"),)))
class VCUTGuidanceCutoff:
    def patch(self, model, cutoff_step):
        one_token = one_token_reason(model.model.diffusion_model, model.model) is not None
        return (install_guidance_cutoff(model.clone(), cutoff_step, average_context=one_token),)


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings(VCUTPatchSVD, VCUTGuidanceCutoff)
