"""API-format test graphs (what scripts queue over POST /prompt), and readers of what they record."""
import json


# The tiny loader and the core conditioning node of each one-token model family.
FAMILIES = {
    "svd": ({"class_type": "ETCVCUTTestTinySVD", "inputs": {"seed": 0}}, "SVD_img2vid_Conditioning",
            {"motion_bucket_id": 127, "fps": 6, "augmentation_level": 0.0}),
    "sv3d_u": ({"class_type": "ETCVCUTTestTinySV3D", "inputs": {"seed": 0, "variant": "u"}}, "SV3D_Conditioning",
               {"elevation": 10.0}),
    "sv3d_p": ({"class_type": "ETCVCUTTestTinySV3D", "inputs": {"seed": 0, "variant": "p"}}, "SV3D_Conditioning",
               {"elevation": 10.0}),
    "zero123": ({"class_type": "ETCVCUTTestTinyZero123", "inputs": {"seed": 0}}, "StableZero123_Conditioning",
                {"elevation": 10.0, "azimuth": 30.0}),
}


def svd_graph(*, color=0x3366CC, frames=4, size=64, steps=6, cfg=2.5, seed=7, vcut=None, cutoff=None,
              count_file=None, prefix="svd", sampler="euler", scheduler="karras", loader=None, low_memory=False,
              guidance="VideoLinearCFGGuidance", cutoff_after_guidance=False, family="svd"):
    """Tiny SVD image-to-video; ``vcut=(sca, tca)`` and ``cutoff=c`` add the VCUT nodes.

    ``low_memory`` makes ComfyUI run cond and uncond as separate UNet calls; ``guidance`` is the
    video CFG node (None: none), placed after the cutoff node unless ``cutoff_after_guidance``.
    ``family`` picks another one-token model of :data:`FAMILIES` with its core conditioning node
    (``frames`` is Zero123's batch of views).

    ``loader`` replaces the tiny-SVD loader node. Its id is derived from its class (and SV3D's variant), since the
    early-2024 executor reuses a cached node output when the id and inputs match.
    """
    family_loader, cond_class, cond_inputs = FAMILIES[family]
    loader = loader or family_loader
    load = "load_" + loader["class_type"] + loader["inputs"].get("variant", "")
    frames_input = "batch_size" if family == "zero123" else "video_frames"
    g = {
        "img": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1,
                                                        "color": color}},
        "cond": {"class_type": cond_class, "inputs": dict(
            cond_inputs, clip_vision=[load, 1], init_image=["img", 0], vae=[load, 2], width=size, height=size,
            **{frames_input: frames})},
        "lincfg": {"class_type": guidance, "inputs": {"model": [load, 0], "min_cfg": 1.0}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["lincfg", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["cond", 0], "negative": ["cond", 1],
            "latent_image": ["cond", 2], "denoise": 1.0}},
        "save": {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": prefix, "latent": ["sample", 0]}},
    }
    g[load] = loader
    model = add_fixture_patches(g, [load, 0], low_memory, count_file)
    if vcut:
        g["vcut"] = {"class_type": "VCUTPatchSVD", "inputs": {"model": model, "sca_mode": vcut[0],
                                                               "tca_mode": vcut[1]}}
        model = ["vcut", 0]
    if cutoff is not None and cutoff_after_guidance:
        g["lincfg"]["inputs"]["model"] = model
        g["cutoff"] = {"class_type": "VCUTGuidanceCutoff", "inputs": {"model": ["lincfg", 0], "cutoff_step": cutoff}}
        g["sample"]["inputs"]["model"] = ["cutoff", 0]
        return g
    if cutoff is not None:
        g["cutoff"] = {"class_type": "VCUTGuidanceCutoff", "inputs": {"model": model, "cutoff_step": cutoff}}
        model = ["cutoff", 0]
    g["lincfg"]["inputs"]["model"] = model
    if guidance is None:
        del g["lincfg"]
        g["sample"]["inputs"]["model"] = model
    return g


def add_fixture_patches(g: dict, model: list, low_memory=False, count_file=None) -> list:
    """Adds the fixture patches to ``g`` in front of ``model``: ``low_memory`` (cond and uncond run apart),
    ``count_file`` (UNet calls recorded there); returns the patched MODEL output."""
    if low_memory:
        g["lowmem"] = {"class_type": "ETCVCUTTestLowFreeMemory", "inputs": {"model": model}}
        model = ["lowmem", 0]
    if count_file:
        g["count"] = {"class_type": "ETCVCUTTestCountPasses", "inputs": {"model": model, "filename": count_file}}
        model = ["count", 0]
    return model


def etc_graph(*, frames=4, layout="2x2", size=64, steps=3, seed=1, fps=8, fps_weights="none", prefix="etc",
              video=True, text="a red ball bouncing", theta=10000.0):
    """Tiny SD 2.x text-to-video through ETCSampler; saves frames as tensors and as an MP4."""
    g = {
        "load": {"class_type": "ETCVCUTTestTinySD2", "inputs": {"seed": 0}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["load", 1], "text": text}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["load", 1], "text": ""}},
        "etc": {"class_type": "ETCSampler", "inputs": {
            "model": ["load", 0], "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["load", 2],
            "frames": frames, "layout": layout, "frame_width": size, "frame_height": size, "batch_size": 1,
            "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "theta": theta, "me_strength": 1.0, "fps": fps, "fps_weights": fps_weights}},
        "save": {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": prefix, "image": ["etc", 0],
                                                                     "latent": ["etc", 1]}},
    }
    if video:
        g["video"] = {"class_type": "ETCSaveVideo", "inputs": {"images": ["etc", 0], "filename_prefix": prefix,
                                                                "frame_rate": 8.0}}
    return g


def etc_patch_graph(*, me=None, fps=None, frames=4, layout="2x2", size=64, steps=3, seed=1, prefix="etc_patch"):
    """Tiny SD 2.x grid latent sampled by the stock KSampler through ETCMixedEmbedding ``me=(strength, theta)``
    and ETCFPSConditioning ``fps=(fps, fps_weights)``."""
    g = {
        "load": {"class_type": "ETCVCUTTestTinySD2", "inputs": {"seed": 0}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["load", 1], "text": "a red ball bouncing"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["load", 1], "text": ""}},
        "grid": {"class_type": "ETCEmptyGridLatent", "inputs": {"frames": frames, "frame_width": size,
                                                                "frame_height": size, "layout": layout,
                                                                "batch_size": 1}},
        "save": {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": prefix, "latent": ["sample", 0]}},
    }
    model = ["load", 0]
    if me is not None:
        g["me"] = {"class_type": "ETCMixedEmbedding", "inputs": {"model": model, "frames": frames, "layout": layout,
                                                                 "theta": me[1], "strength": me[0],
                                                                 "latent": ["grid", 0]}}
        model = ["me", 0]
    if fps is not None:
        g["fps"] = {"class_type": "ETCFPSConditioning", "inputs": {"model": model, "fps": fps[0],
                                                                   "fps_weights": fps[1]}}
        model = ["fps", 0]
    g["sample"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["grid", 0], "denoise": 1.0}}
    return g


def sd2_through(class_type: str, inputs: dict, prefix: str) -> dict:
    """The tiny SD 2.x model through one MODEL -> MODEL node (``inputs`` besides the model), one KSampler step."""
    return {"load": {"class_type": "ETCVCUTTestTinySD2", "inputs": {"seed": 0}},
            "node": {"class_type": class_type, "inputs": {"model": ["load", 0], **inputs}},
            "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "enc": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["load", 1], "text": "x"}},
            "sample": {"class_type": "KSampler", "inputs": {
                "model": ["node", 0], "seed": 0, "steps": 1, "cfg": 1.0, "sampler_name": "euler",
                "scheduler": "normal", "positive": ["enc", 0], "negative": ["enc", 0],
                "latent_image": ["empty", 0], "denoise": 1.0}},
            "save": {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": prefix, "latent": ["sample", 0]}}}


def recorded_events(server, filename):
    """What ETCVCUTTestCountPasses wrote: UNet calls and sampler progress steps, in order."""
    with open(server.output_path(filename)) as f:
        return json.load(f)


def unet_calls(server, filename):
    return [event for event in recorded_events(server, filename) if "batch" in event]


def calls_with_forwards(server, filename):
    """The recorded UNet calls, each with ``ran``: the batches of the UNet forwards that ran inside it
    (logged by ETCVCUTTestCountForwards; empty where a cache answered the call)."""
    calls, ran = [], []
    for event in recorded_events(server, filename):
        if "forward_batch" in event:
            ran.append(event["forward_batch"])
        elif "batch" in event:
            calls.append(dict(event, ran=ran))
            ran = []
    return calls
