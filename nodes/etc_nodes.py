"""ComfyUI nodes for ETC (category video/ETC): thin adapters over etc_core."""
import os

import torch

from ..etc_core import (FPSConditionedTimeEmbedding, FPSEmbedding, MixedEmbeddingInput, base_model_fingerprint,
                        load_fps_module, pack, parse_layout, unpack)
from ..etc_core.grid import check_frame_size, check_grid_latent
from ..etc_core.keyframes import check_denoise
from ..etc_core.files.messages import quote
from ..etc_core.memory import check_grid_fits, frames_bytes, sampling_bytes
from ..etc_core.unet_check import check_image_unet
from .comfy_versions import attention_kind, compute_element_bytes, free_memory, module_to_patch
from .widgets import ETC_CATEGORY as CATEGORY, FPS, FRAMES, LAYOUT, STRENGTH, THETA

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
    check_image_unet(model.model.diffusion_model, node,
                     get_module=lambda name: module_to_patch(model, f"diffusion_model.{name}"))


def check_sampling_memory(node, model, frames, frame_width, frame_height, batch_size, decode=False):
    """Refuse, before anything is allocated, a grid whose sampling (and, with ``decode``, its decoded
    frames) cannot fit in the memory free on the model's device (etc_core.memory)."""
    unet = model.model.diffusion_model
    channels = getattr(model.model.latent_format, "latent_channels", 4)
    element, attention = compute_element_bytes(model), attention_kind()
    device = getattr(model, "load_device", torch.device("cpu"))
    on_cpu = torch.device(device).type == "cpu"

    def needed(f, w, h):
        grid = sampling_bytes(unet, batch_size, channels, f * (h // 8), w // 8, element, attention)
        return grid + (frames_bytes(f, batch_size, h, w) if decode and on_cpu else 0)

    check_grid_fits(node, needed, frames, frame_width, frame_height, free_memory(device), batch=batch_size)
    if decode and not on_cpu:  # the decoded frames land in RAM
        check_grid_fits(node, lambda f, w, h: frames_bytes(f, batch_size, h, w), frames, frame_width, frame_height,
                        free_memory(), "for the decoded frames", batch_size)


def patch_mixed_embedding(model, frames, layout, theta, strength):
    """Clone of ``model`` whose first convolution sees ``x + strength * ME``."""
    rows, cols = parse_layout(frames, layout)
    patched = model.clone()
    name = "diffusion_model.input_blocks.0.0"
    latent_channels = getattr(model.model.latent_format, "latent_channels", 4)
    patched.add_object_patch(name, MixedEmbeddingInput(module_to_patch(patched, name), rows, cols, theta, strength,
                                                       latent_channels))
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


class ETCEmptyGridLatent:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"frames": FRAMES,
                             "frame_width": ("INT", {"default": 256, "min": 8, "max": 4096, "step": 8}),
                             "frame_height": ("INT", {"default": 256, "min": 8, "max": 4096, "step": 8}),
                             "layout": LAYOUT,
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 64})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"
    CATEGORY = CATEGORY
    DESCRIPTION = "An empty latent holding T frames packed into one grid (ETC eq. 1)."

    def generate(self, frames, frame_width, frame_height, layout, batch_size, node="ETCEmptyGridLatent"):
        grid = _grid_meta(frames, layout)
        check_frame_size(frame_width, frame_height)
        check_grid_latent_fits(node, frames, frame_width, frame_height, batch_size)
        samples = torch.zeros(batch_size, 4, grid["rows"] * (frame_height // 8), grid["cols"] * (frame_width // 8))
        return ({"samples": samples, "etc_grid": grid},)


class ETCGridPackLatent:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",), "frames": FRAMES, "layout": LAYOUT}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "pack"
    CATEGORY = CATEGORY
    DESCRIPTION = "Latent frames [B*T] -> B grid latents."

    def pack(self, latent, frames, layout):
        grid = _grid_meta(frames, layout)
        samples = latent["samples"]
        if samples.shape[0] % frames:
            raise ValueError(f"the latent batch has {samples.shape[0]} frames, not a multiple of frames={frames}")
        videos = samples.reshape(-1, frames, *samples.shape[1:])
        return ({"samples": pack(videos, grid["rows"], grid["cols"]), "etc_grid": grid},)


class ETCGridUnpackLatent:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",), "frames": FRAMES, "layout": LAYOUT}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "unpack"
    CATEGORY = CATEGORY
    DESCRIPTION = "B grid latents -> latent frames [B*T] (for VAEDecode)."

    def unpack(self, latent, frames, layout):
        grid = _grid_meta(frames, layout)
        check_grid_latent(latent, grid["rows"], grid["cols"])
        videos = unpack(latent["samples"], grid["rows"], grid["cols"])
        return ({"samples": videos.reshape(-1, *videos.shape[2:])},)


class ETCGridPackImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "frames": FRAMES, "layout": LAYOUT}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "pack"
    CATEGORY = CATEGORY
    DESCRIPTION = "Frames [B*T, h, w, 3] -> B grid images."

    def pack(self, image, frames, layout):
        grid = _grid_meta(frames, layout)
        if image.shape[0] % frames:
            raise ValueError(f"the image batch has {image.shape[0]} frames, not a multiple of frames={frames}")
        videos = image.movedim(-1, 1).reshape(-1, frames, image.shape[-1], *image.shape[1:3])
        return (pack(videos, grid["rows"], grid["cols"]).movedim(1, -1),)


class ETCGridUnpackImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "frames": FRAMES, "layout": LAYOUT}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "unpack"
    CATEGORY = CATEGORY
    DESCRIPTION = "B grid images -> frames [B*T, h, w, 3] (for video save nodes)."

    def unpack(self, image, frames, layout):
        grid = _grid_meta(frames, layout)
        videos = unpack(image.movedim(-1, 1), grid["rows"], grid["cols"])
        return (videos.reshape(-1, *videos.shape[2:]).movedim(1, -1),)


class ETCMixedEmbedding:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "frames": FRAMES, "layout": LAYOUT,
                             "theta": THETA, "strength": STRENGTH,
                             # Required: the patched MODEL never sees the latent's grid metadata, so a
                             # 4x4 grid sampled as 2x8 could only be caught here.
                             "latent": ("LATENT", {"tooltip": "the grid latent the sampler gets: checked against "
                                                   "frames and layout"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY
    DESCRIPTION = "Adds ETC's spatial-temporal mixed embedding to the UNet input on every call."

    def patch(self, model, frames, layout, theta, strength, latent):
        check_sd_unet(model, "ETCMixedEmbedding")
        rows, cols = parse_layout(frames, layout)
        check_grid_latent(latent, rows, cols)
        batch, _, height, width = latent["samples"].shape
        check_sampling_memory("ETCMixedEmbedding", model, frames, width // cols * 8, height // rows * 8, batch)
        return (patch_mixed_embedding(model, frames, layout, theta, strength),)


class ETCFPSConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",),
                             "fps": FPS,
                             "fps_weights": ([UNTRAINED] + _fps_files(),)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY
    DESCRIPTION = "ETC FPS embedding: fps through the UNet's own timestep embedder plus a trained MLP."

    def patch(self, model, fps, fps_weights):
        check_sd_unet(model, "ETCFPSConditioning")  # an untrained FPS module on SVD would be a silent no-op
        return (patch_fps(model, fps, fps_weights),)


class ETCSampler:
    @classmethod
    def INPUT_TYPES(cls):
        import comfy.samplers
        return {"required": {
            "model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "vae": ("VAE",),
            "frames": FRAMES, "layout": LAYOUT,
            "frame_width": ("INT", {"default": 256, "min": 8, "max": 4096, "step": 8}),
            "frame_height": ("INT", {"default": 256, "min": 8, "max": 4096, "step": 8}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
            "steps": ("INT", {"default": 25, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1}),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS,),
            "theta": THETA, "me_strength": STRENGTH, "fps": FPS,
            "fps_weights": ([NONE, UNTRAINED] + _fps_files(),),
        }, "optional": {
            "latent": ("LATENT", {"tooltip": "a grid latent to start from instead of an empty one: ETC Keyframes' "
                                  "output (its noise mask keeps the given frames) or a packed source clip "
                                  "(video-to-video with denoise < 1); must match frames, layout and frame size"}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "1: generate from noise; lower: keep that much of the latent's content "
                                             "(video-to-video), needs a latent"}),
        }}

    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("frames", "grid_latent")
    FUNCTION = "sample"
    CATEGORY = CATEGORY
    DESCRIPTION = ("ETC text-to-video: grid latent + mixed embedding + FPS, sampled by ComfyUI's KSampler; with a "
                   "latent, image-to-video and keyframes (its noise mask) or video-to-video (denoise < 1).")

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
        check_sampling_memory("ETCSampler", model, frames, frame_width, frame_height, batch_size, decode=True)
        if latent is None:
            (latent,) = ETCEmptyGridLatent().generate(frames, frame_width, frame_height, layout, batch_size,
                                                      "ETCSampler")
        else:
            latent = batched_latent(latent, frames, layout, batch_size)
        model = patch_mixed_embedding(model, frames, layout, theta, me_strength)
        if fps_weights != NONE:
            model = patch_fps(model, fps, fps_weights)
        (sampled,) = comfy_nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive,
                                                 negative, latent, denoise=denoise)
        latent = keep_masked(sampled, latent)
        (frame_latents,) = ETCGridUnpackLatent().unpack(latent, frames, layout)
        images = vae.decode(frame_latents["samples"])
        return (images.reshape(-1, *images.shape[-3:]), latent)


NODE_CLASS_MAPPINGS = {
    "ETCEmptyGridLatent": ETCEmptyGridLatent, "ETCGridPackLatent": ETCGridPackLatent,
    "ETCGridUnpackLatent": ETCGridUnpackLatent, "ETCGridPackImage": ETCGridPackImage,
    "ETCGridUnpackImage": ETCGridUnpackImage, "ETCMixedEmbedding": ETCMixedEmbedding,
    "ETCFPSConditioning": ETCFPSConditioning, "ETCSampler": ETCSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ETCEmptyGridLatent": "ETC Empty Grid Latent", "ETCGridPackLatent": "ETC Grid Pack (latent)",
    "ETCGridUnpackLatent": "ETC Grid Unpack (latent)", "ETCGridPackImage": "ETC Grid Pack (image)",
    "ETCGridUnpackImage": "ETC Grid Unpack (image)", "ETCMixedEmbedding": "ETC Mixed Embedding",
    "ETCFPSConditioning": "ETC FPS Conditioning", "ETCSampler": "ETC Sampler (text-to-video)",
}
