"""ComfyUI nodes for ETC's grid tasks (category video/ETC): keyframes (image-to-video, interpolation) and
per-frame prompts, as ComfyUI's own noise mask and masked conditioning, so every sampler applies them."""
import dataclasses

import torch

from ..etc_core import parse_layout
from ..etc_core.keyframes import cell_mask, parse_frame_numbers, parse_frame_ranges, place_frames
from ..etc_core.grid import check_grid_latent
from .etc_nodes import ETCEmptyGridLatent, batched_latent, check_grid_latent_fits, check_latent_input
from .node_spec import Input, NodeSpec, Output, mappings, node
from .shared_inputs import BATCH_SIZE, ETC_CATEGORY as CATEGORY, FRAME_HEIGHT, FRAME_WIDTH, FRAMES, LAYOUT
# Marks the conditioning entries this pack restricted to frames, so a later node can refuse a frame given twice.
FRAMES_KEY = "etc_frames"


@node(NodeSpec(
    "ETCKeyframes", "ETC Keyframes (image-to-video, interpolation)", CATEGORY,
    "Keyframes for ETC: images encoded into the grid cells of the frames they belong to, kept by the sampler "
    "(noise mask); the other frames are generated around them. Frame 0 is image-to-video, first and last is "
    "interpolation, any set works.",
    "encode",
    inputs=(
        Input("vae", "VAE", "the VAE of the model that samples the grid"),
        Input("images", "IMAGE", "the keyframes, one image per frame number, each frame_width x frame_height"),
        Input("frame_numbers", "STRING", "which frame each image is, in order, from 0: '0' image-to-video, "
              "'0, 15' first and last of 16 (interpolation)", {"default": "0"}),
        FRAMES, LAYOUT,
        dataclasses.replace(FRAME_WIDTH, tooltip="width of one frame in pixels (the images' width), a multiple of 8"),
        dataclasses.replace(FRAME_HEIGHT, tooltip="height of one frame in pixels (the images' height), a multiple "
                            "of 8"),
        dataclasses.replace(BATCH_SIZE, tooltip="clips sampled at once, each with its own noise and the same "
                            "keyframes"),
        Input("latent", "LATENT", "a grid latent to put the keyframes into (e.g. a packed source clip); empty when "
              "not connected", optional=True)),
    outputs=(Output("LATENT", "the grid latent with each keyframe encoded into its cell and a noise mask that "
                    "keeps exactly those cells; feed it to ETC Sampler's latent or to any KSampler",
                    "grid_latent"),)))
class ETCKeyframes:
    def encode(self, vae, images, frame_numbers, frames, layout, frame_width, frame_height, batch_size, latent=None):
        node = "ETCKeyframes"
        rows, cols = parse_layout(frames, layout)
        numbers = parse_frame_numbers(frame_numbers, frames, f"{node}: frame_numbers")
        if latent is not None:
            check_latent_input(node, latent, frames, layout, frame_width, frame_height, batch_size)
        check_grid_latent_fits(node, frames, frame_width, frame_height, batch_size)
        if images.shape[0] != len(numbers):
            raise ValueError(f"{node}: {images.shape[0]} images for {len(numbers)} frame numbers; give one frame "
                             "number per image (or one image per frame number)")
        if tuple(images.shape[1:3]) != (frame_height, frame_width):
            raise ValueError(f"{node}: the images are {images.shape[2]}x{images.shape[1]}, the grid's frames "
                             f"{frame_width}x{frame_height}; scale them (ImageScale) to {frame_width}x{frame_height} "
                             f"or set frame_width={images.shape[2]} and frame_height={images.shape[1]}")
        if latent is None:
            (latent,) = ETCEmptyGridLatent().generate(frames, frame_width, frame_height, layout, batch_size, node)
        else:
            latent = batched_latent(latent, frames, layout, batch_size)
        samples = latent["samples"]
        encoded = vae.encode(images[:, :, :, :3])
        height, width = samples.shape[-2] // rows, samples.shape[-1] // cols
        if tuple(encoded.shape[-2:]) != (height, width):
            raise ValueError(f"{node}: this VAE encodes a {frame_width}x{frame_height} frame to "
                             f"{encoded.shape[-1]}x{encoded.shape[-2]} latent pixels, the grid holds {width}x{height}; "
                             "use the VAE of the model that samples the grid")
        keep = cell_mask(numbers, rows, cols, height, width)
        mask = (1.0 - keep)[None, None]
        if latent.get("noise_mask") is not None:  # cells an earlier mask kept stay kept
            earlier = latent["noise_mask"].reshape(-1, 1, *latent["noise_mask"].shape[-2:])
            mask = mask * torch.nn.functional.interpolate(earlier.float(), size=mask.shape[-2:], mode="bilinear")
        return (dict(latent, samples=place_frames(samples, encoded, numbers, rows, cols), noise_mask=mask),)


def _masked(entry: dict, mask: torch.Tensor) -> dict:
    """``entry``'s options restricted to ``mask`` [1, H, W] (on top of any mask it had), applied on the whole
    grid: the UNet sees every cell, and the prediction counts only where the mask is."""
    own = entry.get("mask")
    if own is not None:
        own = own.reshape(-1, *own.shape[-2:]).float()
        mask = mask * torch.nn.functional.interpolate(own[:, None], size=mask.shape[-2:], mode="bilinear")[:, 0]
    return dict(entry, mask=mask, set_area_to_bounds=False)


@node(NodeSpec(
    "ETCPerFrameConditioning", "ETC Per-Frame Conditioning", CATEGORY,
    "Per-frame prompts for ETC: frame_conditioning on the grid cells of frame_ranges, the incoming conditioning "
    "on the rest, as ComfyUI masked conditioning (every sampler applies it). Chain one node per range.",
    "apply",
    inputs=(
        Input("conditioning", "CONDITIONING", "what the other frames follow: the global prompt, or the output of "
              "another ETC Per-Frame Conditioning"),
        Input("frame_conditioning", "CONDITIONING", "the prompt of the frames in frame_ranges"),
        Input("frame_ranges", "STRING", "frames from 0, ranges with both ends included: '0-3', '0-1, 6-7'; a frame "
              "takes one prompt", {"default": "0-3"}),
        FRAMES, LAYOUT,
        Input("latent", "LATENT", "the grid latent the sampler gets: gives the cells' size, checked against frames "
              "and layout")),
    outputs=(Output("CONDITIONING", "conditioning whose frame_conditioning reaches only the cells of frame_ranges "
                    "and whose earlier entries leave those cells; use it as any sampler's positive"),)))
class ETCPerFrameConditioning:
    def apply(self, conditioning, frame_conditioning, frame_ranges, frames, layout, latent):
        node = "ETCPerFrameConditioning"
        rows, cols = parse_layout(frames, layout)
        check_grid_latent(latent, rows, cols)
        chosen = parse_frame_ranges(frame_ranges, frames, f"{node}: frame_ranges")
        for _, entry in conditioning:
            taken = sorted(set(entry.get(FRAMES_KEY, ())) & set(chosen))
            if taken:
                raise ValueError(f"{node}: frame {taken[0]} already has its own prompt from an earlier ETC Per-Frame "
                                 "Conditioning; give each frame one range")
        height, width = latent["samples"].shape[-2] // rows, latent["samples"].shape[-1] // cols
        cells = cell_mask(chosen, rows, cols, height, width)[None]
        others = [[t, _masked(entry, 1.0 - cells)] for t, entry in conditioning]
        # An entry left with no cell would still cost a UNet pass per step for nothing.
        others = [[t, entry] for t, entry in others if entry["mask"].any()]
        added = [[t, dict(_masked(entry, cells), **{FRAMES_KEY: tuple(chosen)})] for t, entry in frame_conditioning]
        return (others + added,)


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings(ETCKeyframes, ETCPerFrameConditioning)
