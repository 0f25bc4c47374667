"""ComfyUI nodes for ETC (category video/ETC): thin adapters over etc_core."""
import dataclasses
import os

import torch

from ..etc_core import (FPSConditionedTimeEmbedding, FPSEmbedding, MixedEmbeddingInput, base_model_fingerprint,
                        load_fps_module, pack, parse_layout, unpack)
from ..etc_core.grid import check_frame_size, check_grid_latent
from ..etc_core.keyframes import check_denoise
from ..etc_core.files.messages import quote
from ..etc_core.memory import SAMPLING, check_grid_fits, frames_bytes, sampling_bytes
from ..etc_core.unet_check import unsupported_reason
from .host_probes import attention_kind, compute_element_bytes, decode_bytes, free_memory, latent_channels
from .patch_lookup import module_to_patch
from .node_spec import Input, NodeSpec, Output, mappings, node
from .shared_inputs import (BATCH_SIZE, ETC_CATEGORY as CATEGORY, FPS, FRAME_HEIGHT, FRAME_WIDTH, FRAMES, LAYOUT, MODEL,
                            STRENGTH, THETA)

UNTRAINED = "untrained (zero init, no-op)"
NONE = "none"


def _register_etc_folder():
    """models/etc holds FPS-embedding files; extra_model_paths.yaml may add more folders under 'etc'."""
    import folder_paths
    default = os.path.join(folder_paths.models_dir, "etc")
    paths, extensions = folder_paths.folder_names_and_paths.get("etc", ([], set()))
    folder_paths.folder_names_and_paths["etc"] = (list(paths) + [default] * (default not in paths),
                                                  set(extensions) | {".safetensors"})


def _fps_files():
    import folder_paths
    _register_etc_folder()
    return folder_paths.get_filename_list("etc")


def _grid_meta(frames, layout):
    rows, cols = parse_layout(frames, layout)
    return {"frames": frames, "rows": rows, "cols": cols}


def check_sd_unet(model, node):
    """Refuses a MODEL ETC cannot drive, judged on its original modules (not patches left applied)."""
    reason = unsupported_reason(model.model.diffusion_model,
                                lambda name: module_to_patch(model, f"diffusion_model.{name}"))
    if reason:
        raise ValueError(f"{node}: the MODEL is not an SD 2.x-like image UNet: {reason}. ETC needs an SD 2.x "
                         "checkpoint (e.g. v2-1_512-ema-pruned.safetensors) loaded with Load Checkpoint")


def check_sampling_memory(node, model, frames, frame_width, frame_height, batch_size, vae=None):
    """Refuse, before anything is allocated, a grid whose sampling (and, with ``vae``, the decoding of one
    frame and the decoded frames) cannot fit in the memory free on the model's device (etc_core.memory)."""
    unet = model.model.diffusion_model
    channels = latent_channels(model)
    element, attention = compute_element_bytes(model), attention_kind()
    device = getattr(model, "load_device", torch.device("cpu"))
    on_cpu = torch.device(device).type == "cpu"

    def needed(f, w, h):
        grid = sampling_bytes(unet, batch_size, channels, f * (h // 8), w // 8, element, attention)
        if vae is None:
            return grid
        return grid + decode_bytes(vae, w, h) + (frames_bytes(f, batch_size, h, w) if on_cpu else 0)

    what = SAMPLING if vae is None else "to sample and decode (latents, UNet activations, attention, decoding)"
    check_grid_fits(node, needed, frames, frame_width, frame_height, free_memory(device), what, batch_size)
    if vae is not None and not on_cpu:  # the decoded frames land in RAM
        check_grid_fits(node, lambda f, w, h: frames_bytes(f, batch_size, h, w), frames, frame_width, frame_height,
                        free_memory(), "for the decoded frames", batch_size)


GRID_SIZE_FIX = "connect the latent the sampler gets to ETCMixedEmbedding, with the frames and layout it was made with"


def patch_mixed_embedding(model, frames, layout, theta, strength, grid_size):
    """Clone of ``model`` whose first convolution sees ``x + strength * ME`` on latents of ``grid_size``."""
    rows, cols = parse_layout(frames, layout)
    patched = model.clone()
    name = "diffusion_model.input_blocks.0.0"
    patched.add_object_patch(name, MixedEmbeddingInput(module_to_patch(patched, name), rows, cols, theta, strength,
                                                       latent_channels(model), grid_size, GRID_SIZE_FIX))
    return patched


def patch_fps(model, fps, fps_weights):
    """Clone of ``model`` whose time embedding adds the FPS branch."""
    unet = model.model.diffusion_model
    name = "diffusion_model.time_embed"
    time_embed = module_to_patch(model, name)
    width = time_embed[2].out_features
    if fps_weights == UNTRAINED:
        module = FPSEmbedding(width)
    else:
        import folder_paths
        _register_etc_folder()
        path = folder_paths.get_full_path("etc", fps_weights)
        if path is None:
            raise FileNotFoundError(f"fps_weights {quote(fps_weights)} is not in models/etc; put the file there or "
                                    f"pick one of {_fps_files()}")
        module, _ = load_fps_module(path, expected_base_model=base_model_fingerprint(unet))
    device = time_embed[0].weight.device
    patched = model.clone()
    patched.add_object_patch(name, FPSConditionedTimeEmbedding(time_embed, module.to(device), fps))
    return patched


def check_latent_input(node, latent, frames, layout, frame_width, frame_height, batch_size):
    """Refuse a ``latent`` that is not the grid the node's inputs describe (of one grid or ``batch_size``)."""
    rows, cols = parse_layout(frames, layout)
    check_grid_latent(latent, rows, cols)
    samples = latent["samples"]
    size = (samples.shape[-1] // cols * 8, samples.shape[-2] // rows * 8)
    if size != (frame_width, frame_height):
        raise ValueError(f"{node}: the latent's frames are {size[0]}x{size[1]}, not frame_width x frame_height = "
                         f"{frame_width}x{frame_height}; set frame_width={size[0]} and frame_height={size[1]}")
    if samples.shape[0] not in (1, batch_size):
        raise ValueError(f"{node}: the latent holds {samples.shape[0]} grids and batch_size is {batch_size}; set "
                         f"batch_size={samples.shape[0]}, or give a latent of one grid")


def batched_latent(latent, frames, layout, batch_size):
    """``latent`` (checked by :func:`check_latent_input`) with its one grid repeated to ``batch_size`` (each
    copy gets its own noise in the sampler); call after the memory check."""
    samples = latent["samples"]
    if samples.shape[0] != batch_size:
        samples = samples.repeat(batch_size, 1, 1, 1)
    return dict(latent, samples=samples, etc_grid=_grid_meta(frames, layout))


def check_grid_latent_fits(node, frames, frame_width, frame_height, batch_size):
    check_grid_fits(node, lambda f, w, h: batch_size * 4 * f * (h // 8) * (w // 8) * 4, frames, frame_width,
                    frame_height, free_memory(), "for the grid latent", batch_size)


def keep_masked(sampled, given):
    """``sampled`` with the latent ``given`` put back where its noise mask keeps it: ComfyUI's samplers keep it
    only as exactly as their last step lands on the model's (masked) prediction, and UniPC's does not."""
    mask = given.get("noise_mask")
    if mask is None:
        return sampled
    samples = sampled["samples"]
    mask = torch.nn.functional.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=samples.shape[-2:],
                                           mode="bilinear").to(samples)
    return dict(sampled, samples=samples * mask + given["samples"].to(samples) * (1.0 - mask))



GRID_LATENT = Output("LATENT", "one grid latent per video, carrying its frames and layout for the other ETC nodes")
FPS_FILE = "an etc_fps.safetensors from models/etc (the trainer's export, for the UNet it was trained with)"


@node(NodeSpec(
    "ETCEmptyGridLatent", "ETC Empty Grid Latent", CATEGORY,
    "An empty latent holding T frames packed into one grid (ETC eq. 1): rows x cols frames of "
    "frame_height x frame_width pixels, for ETC Mixed Embedding and KSampler.",
    "generate",
    inputs=(FRAMES, FRAME_WIDTH, FRAME_HEIGHT, LAYOUT, BATCH_SIZE),
    outputs=(dataclasses.replace(GRID_LATENT, tooltip="batch_size empty (zero) grid latents of rows*frame_height/8 "
                                 "x cols*frame_width/8, 4 channels, carrying frames and layout"),)))
class ETCEmptyGridLatent:
    def generate(self, frames, frame_width, frame_height, layout, batch_size, node="ETCEmptyGridLatent"):
        grid = _grid_meta(frames, layout)
        check_frame_size(frame_width, frame_height)
        check_grid_latent_fits(node, frames, frame_width, frame_height, batch_size)
        samples = torch.zeros(batch_size, 4, grid["rows"] * (frame_height // 8), grid["cols"] * (frame_width // 8))
        return ({"samples": samples, "etc_grid": grid},)


@node(NodeSpec(
    "ETCGridPackLatent", "ETC Grid Pack (latent)", CATEGORY,
    "Packs latent frames [B*T] (video after video) into B grid latents (ETC eq. 1), frame t at row t // cols, "
    "column t % cols.",
    "pack",
    inputs=(Input("latent", "LATENT", "latent frames, a batch of B*T: T frames of the first video, then the "
                  "next"), FRAMES, LAYOUT),
    outputs=(GRID_LATENT,)))
class ETCGridPackLatent:
    def pack(self, latent, frames, layout):
        grid = _grid_meta(frames, layout)
        samples = latent["samples"]
        if samples.shape[0] % frames:
            raise ValueError(f"the latent batch has {samples.shape[0]} frames, not a multiple of frames={frames}")
        videos = samples.reshape(-1, frames, *samples.shape[1:])
        return ({"samples": pack(videos, grid["rows"], grid["cols"]), "etc_grid": grid},)


@node(NodeSpec(
    "ETCGridUnpackLatent", "ETC Grid Unpack (latent)", CATEGORY,
    "Cuts B grid latents back into latent frames [B*T] (video after video), for VAE Decode.",
    "unpack",
    inputs=(Input("latent", "LATENT", "grid latents (e.g. from KSampler); their size must split into the layout"),
            FRAMES, LAYOUT),
    outputs=(Output("LATENT", "the frames as a latent batch of B*T, video after video"),)))
class ETCGridUnpackLatent:
    def unpack(self, latent, frames, layout):
        grid = _grid_meta(frames, layout)
        check_grid_latent(latent, grid["rows"], grid["cols"])
        videos = unpack(latent["samples"], grid["rows"], grid["cols"])
        return ({"samples": videos.reshape(-1, *videos.shape[2:])},)


@node(NodeSpec(
    "ETCGridPackImage", "ETC Grid Pack (image)", CATEGORY,
    "Packs frames [B*T, h, w, 3] (video after video) into B grid images, e.g. to look at a video as one "
    "picture or to encode it as ETC sees it.",
    "pack",
    inputs=(Input("image", "IMAGE", "frames, a batch of B*T images: T frames of the first video, then the next"),
            FRAMES, LAYOUT),
    outputs=(Output("IMAGE", "B grid images of rows*h x cols*w pixels"),)))
class ETCGridPackImage:
    def pack(self, image, frames, layout):
        grid = _grid_meta(frames, layout)
        if image.shape[0] % frames:
            raise ValueError(f"the image batch has {image.shape[0]} frames, not a multiple of frames={frames}")
        videos = image.movedim(-1, 1).reshape(-1, frames, image.shape[-1], *image.shape[1:3])
        return (pack(videos, grid["rows"], grid["cols"]).movedim(1, -1),)


@node(NodeSpec(
    "ETCGridUnpackImage", "ETC Grid Unpack (image)", CATEGORY,
    "Cuts B grid images into frames [B*T, h, w, 3] (video after video), for the video save nodes.",
    "unpack",
    inputs=(Input("image", "IMAGE", "grid images (e.g. VAE Decode of a grid latent); rows and cols must divide "
                  "their height and width"), FRAMES, LAYOUT),
    outputs=(Output("IMAGE", "the frames, a batch of B*T images, video after video"),)))
class ETCGridUnpackImage:
    def unpack(self, image, frames, layout):
        grid = _grid_meta(frames, layout)
        videos = unpack(image.movedim(-1, 1), grid["rows"], grid["cols"])
        return (videos.reshape(-1, *videos.shape[2:]).movedim(1, -1),)


@node(NodeSpec(
    "ETCMixedEmbedding", "ETC Mixed Embedding", CATEGORY,
    "Adds ETC's spatial-temporal mixed embedding (eqs. 18, 19, 25) to the UNet's input on every call, so "
    "spatial attention can tell where in its frame and in which frame each latent pixel is.",
    "patch",
    inputs=(MODEL, FRAMES, LAYOUT, THETA, STRENGTH,
            # Required: the patched MODEL never sees the latent's grid metadata, so a
            # 4x4 grid sampled as 2x8 could only be caught here.
            Input("latent", "LATENT", "the grid latent the sampler gets: checked against frames and layout, and "
                  "its size against free memory")),
    outputs=(Output("MODEL", "a clone of the model that adds strength x ME to the UNet's input; the input "
                    "model is unchanged"),)))
class ETCMixedEmbedding:
    def patch(self, model, frames, layout, theta, strength, latent):
        check_sd_unet(model, "ETCMixedEmbedding")
        rows, cols = parse_layout(frames, layout)
        check_grid_latent(latent, rows, cols)
        batch, _, height, width = latent["samples"].shape
        check_sampling_memory("ETCMixedEmbedding", model, frames, width // cols * 8, height // rows * 8, batch)
        return (patch_mixed_embedding(model, frames, layout, theta, strength, (height, width)),)


@node(NodeSpec(
    "ETCFPSConditioning", "ETC FPS Conditioning", CATEGORY,
    "ETC FPS embedding (section 4.2): the frame rate goes through the UNet's own timestep embedder and a "
    "trained MLP, added to the time embedding; the untrained module adds exactly zero.",
    "patch",
    inputs=(MODEL, FPS, Input("fps_weights", lambda: [UNTRAINED] + _fps_files(),
                                     f"the FPS module: '{UNTRAINED}' or {FPS_FILE}")),
    outputs=(Output("MODEL", "a clone of the model whose time embedding adds the FPS branch; the input model "
                    "is unchanged"),)))
class ETCFPSConditioning:
    def patch(self, model, fps, fps_weights):
        check_sd_unet(model, "ETCFPSConditioning")  # an untrained FPS module on SVD would be a silent no-op
        return (patch_fps(model, fps, fps_weights),)


def _samplers():
    import comfy.samplers
    return comfy.samplers.KSampler.SAMPLERS


def _schedulers():
    import comfy.samplers
    return comfy.samplers.KSampler.SCHEDULERS


@node(NodeSpec(
    "ETCSampler", "ETC Sampler (text-to-video)", CATEGORY,
    "ETC text-to-video in one node: an empty grid latent, the mixed embedding and the FPS branch, sampled by "
    "ComfyUI's KSampler and decoded to frames; with a latent, image-to-video and keyframes (its noise mask) or "
    "video-to-video (denoise < 1).",
    "sample",
    inputs=(
        MODEL, Input("positive", "CONDITIONING", "what the video shows (CLIP Text Encode of the prompt)"),
        Input("negative", "CONDITIONING", "what to steer away from (an empty prompt is fine)"),
        Input("vae", "VAE", "the VAE that decodes the frames (the checkpoint's)"),
        FRAMES, LAYOUT, FRAME_WIDTH, FRAME_HEIGHT, BATCH_SIZE,
        Input("seed", "INT", "noise seed: the same seed and settings give the same video",
              {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
        Input("steps", "INT", "sampler steps, as in KSampler", {"default": 25, "min": 1, "max": 10000}),
        Input("cfg", "FLOAT", "classifier-free guidance scale, as in KSampler (1: no guidance)",
              {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1}),
        Input("sampler_name", _samplers, "ComfyUI's sampler, as in KSampler"),
        Input("scheduler", _schedulers, "ComfyUI's noise schedule, as in KSampler"),
        THETA, dataclasses.replace(STRENGTH, name="me_strength"), dataclasses.replace(FPS, tooltip=FPS.tooltip + (
            " or with fps_weights 'none'")),
        Input("fps_weights", lambda: [NONE, UNTRAINED] + _fps_files(),
              f"'{NONE}': no FPS branch; '{UNTRAINED}'; or {FPS_FILE}"),
        Input("latent", "LATENT", "a grid latent to start from instead of an empty one: ETC Keyframes' output (its "
              "noise mask keeps the given frames) or a packed source clip (video-to-video with denoise < 1); must "
              "match frames, layout and frame size", optional=True),
        Input("denoise", "FLOAT", "1: generate from noise; lower: keep that much of the latent's content "
              "(video-to-video), needs a latent", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01},
              optional=True)),
    outputs=(Output("IMAGE", "the decoded frames, batch_size x frames images, video after video", "frames"),
             Output("LATENT", "the sampled grid latent (ETC Grid Unpack gives its frames)", "grid_latent"))))
class ETCSampler:
    def sample(self, model, positive, negative, vae, frames, layout, frame_width, frame_height, batch_size, seed,
               steps, cfg, sampler_name, scheduler, theta, me_strength, fps, fps_weights, latent=None, denoise=1.0):
        import nodes as comfy_nodes
        check_sd_unet(model, "ETCSampler")
        parse_layout(frames, layout)
        check_frame_size(frame_width, frame_height)
        check_denoise(denoise, "ETCSampler: denoise")
        if latent is None and denoise < 1.0:
            raise ValueError(f"ETCSampler: denoise {denoise} needs a latent to keep content from; connect the packed "
                             "source clip (ETC Grid Pack (latent)) to latent, or set denoise=1")
        if latent is not None:
            check_latent_input("ETCSampler", latent, frames, layout, frame_width, frame_height, batch_size)
        check_sampling_memory("ETCSampler", model, frames, frame_width, frame_height, batch_size, vae=vae)
        if latent is None:
            (latent,) = ETCEmptyGridLatent().generate(frames, frame_width, frame_height, layout, batch_size,
                                                      "ETCSampler")
        else:
            latent = batched_latent(latent, frames, layout, batch_size)
        model = patch_mixed_embedding(model, frames, layout, theta, me_strength, latent["samples"].shape[-2:])
        if fps_weights != NONE:
            model = patch_fps(model, fps, fps_weights)
        (sampled,) = comfy_nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive,
                                                 negative, latent, denoise=denoise)
        latent = keep_masked(sampled, latent)
        (frame_latents,) = ETCGridUnpackLatent().unpack(latent, frames, layout)
        images = vae.decode(frame_latents["samples"])
        return (images.reshape(-1, *images.shape[-3:]), latent)


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings(
    ETCEmptyGridLatent, ETCGridPackLatent, ETCGridUnpackLatent, ETCGridPackImage, ETCGridUnpackImage,
    ETCMixedEmbedding, ETCFPSConditioning, ETCSampler)
