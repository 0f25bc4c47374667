"""What a training run needs in memory, estimated from the base model's files before anything is loaded.

A training step holds, at its peak, every weight of the three models (float32), the trainable weights'
gradients and AdamW's two moments, and the activations autograd keeps for the backward pass of one UNet
forward over the grid latent (T frames make one image T times a frame's size, so the activations grow with
T). Before that the frozen VAE encodes the batch's frames without autograd. :func:`training_bytes` adds
these up from the files' safetensors headers and config, counted low on purpose as the sampler's estimate
(etc_core.memory) is: refusing a run that would fit is worse than letting a borderline one try.

Activations per UNet block, in units of one tensor of the block's width and token count:

- a ResNet block keeps RESNET_SAVED (two group norms, two SiLUs, two convolutions, the sum and its input);
- a transformer layer keeps TRANSFORMER_SAVED (self and cross attention: norm, q, k, v, output and
  projection; GEGLU: the 8x projection, the 4x GELU and the gated 4x product; the last norm and output);
  attention runs through PyTorch SDPA, which never holds the T x T scores;
- with gradient checkpointing (diffusers checkpoints every ResNet and transformer module) only each
  module's input is kept, plus the largest module's activations while it is recomputed.

bench/etc_memory_estimates.py measures the estimate against the real peak on the CPU.
"""
import json
import math
import os
from dataclasses import dataclass

from ..memory import check_grid_fits

RESNET_SAVED = 8
TRANSFORMER_SAVED = 28
TRANSFORMER_WRAPPER = 3  # the Transformer2DModel's norm, proj_in and proj_out
VAE_WORKING = 4  # tensors a no-grad VAE block holds at once (its input, norm, SiLU and conv outputs)
FLOAT = 4
ADAMW_MOMENTS = 2
LORA_TARGETS = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")
UNET, VAE, TEXT = "model.diffusion_model.", "first_stage_model.", "cond_stage_model."


@dataclass(frozen=True)
class ModelSizes:
    """What the estimate reads from a base model: UNet widths per level, ResNet blocks per level, transformer
    layers per level (0: no attention), VAE widths per level, parameter counts and LoRA target shapes."""
    widths: tuple
    res_blocks: int
    depths: tuple
    vae_widths: tuple
    unet_params: int
    other_params: int  # VAE and text encoder
    lora_shapes: tuple  # (out, in) of every LoRA target


def _header_shapes(path: str) -> dict:
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}


def _params(shapes: dict) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def _lora_shapes(shapes: dict) -> tuple:
    return tuple(shape for key, shape in shapes.items() if key.endswith(LORA_TARGETS) and len(shape) == 2)


def _folder_shapes(folder: str) -> dict:
    shapes = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            shapes.update(_header_shapes(os.path.join(folder, name)))
    return shapes


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _diffusers_sizes(path: str) -> ModelSizes:
    unet, vae = _json(os.path.join(path, "unet", "config.json")), _json(os.path.join(path, "vae", "config.json"))
    levels = len(unet["block_out_channels"])
    layers = unet.get("transformer_layers_per_block", 1)
    layers = layers if isinstance(layers, (list, tuple)) else [layers] * levels
    depths = tuple(int(n) if "CrossAttn" in kind else 0 for n, kind in zip(layers, unet["down_block_types"]))
    unet_shapes = _folder_shapes(os.path.join(path, "unet"))
    others = _params(_folder_shapes(os.path.join(path, "vae"))) + _params(_folder_shapes(os.path.join(path,
                                                                                                      "text_encoder")))
    vae_widths = vae.get("block_out_channels") or vae.get("encoder_block_out_channels") or (64,)
    return ModelSizes(tuple(unet["block_out_channels"]), unet["layers_per_block"], depths, tuple(vae_widths),
                      _params(unet_shapes), others, _lora_shapes(unet_shapes))


def _single_file_sizes(path: str) -> ModelSizes:
    import torch

    from .pretrained import ldm_config
    shapes = _header_shapes(path)
    meta = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    params = ldm_config(meta)["model"]["params"]
    unet, vae = params["unet_config"]["params"], params["first_stage_config"]["params"]["ddconfig"]
    attention = [int(math.log2(r)) for r in unet["attention_resolutions"]]
    depths = tuple(unet["transformer_depth"][level] if level in attention else 0
                   for level in range(len(unet["channel_mult"])))
    unet_shapes = {k: v for k, v in shapes.items() if k.startswith(UNET)}
    return ModelSizes(tuple(unet["model_channels"] * m for m in unet["channel_mult"]), unet["num_res_blocks"],
                      depths, tuple(vae["ch"] * m for m in vae["ch_mult"]), _params(unet_shapes),
                      _params({k: v for k, v in shapes.items() if k.startswith((VAE, TEXT))}),
                      _lora_shapes(unet_shapes))


def model_sizes(pretrained: str) -> ModelSizes:
    """The :class:`ModelSizes` of a diffusers folder or one SD 2.x file (headers only; no weight is read)."""
    return _diffusers_sizes(pretrained) if os.path.isdir(pretrained) else _single_file_sizes(pretrained)


def unet_modules(sizes: ModelSizes):
    """``[(kind, width, level, layers)]`` of the UNet's checkpointable modules: "resnet" and "attention"."""
    modules, levels = [], len(sizes.widths)
    for level, (width, depth) in enumerate(zip(sizes.widths, sizes.depths)):  # down blocks
        for _ in range(sizes.res_blocks):
            modules.append(("resnet", width, level, 0))
            if depth:
                modules.append(("attention", width, level, depth))
    last = levels - 1
    modules += [("resnet", sizes.widths[last], last, 0), ("attention", sizes.widths[last], last,
                                                           max(sizes.depths[last], 1)),
                ("resnet", sizes.widths[last], last, 0)]  # mid block
    for level in reversed(range(levels)):  # up blocks: one ResNet more, on the concatenated skips
        for _ in range(sizes.res_blocks + 1):
            modules.append(("resnet", sizes.widths[level], level, 0))
            if sizes.depths[level]:
                modules.append(("attention", sizes.widths[level], level, sizes.depths[level]))
    return modules


def _saved(kind: str, layers: int) -> int:
    return RESNET_SAVED if kind == "resnet" else TRANSFORMER_WRAPPER + TRANSFORMER_SAVED * layers


def unet_activation_elements(sizes: ModelSizes, tokens: int, checkpointing: bool) -> int:
    """Elements autograd keeps over one forward of a ``tokens``-token latent (batch 1)."""
    modules = unet_modules(sizes)

    def elements(width, level):
        return width * (tokens // 4 ** level)
    if not checkpointing:
        return sum(_saved(kind, layers) * elements(width, level) for kind, width, level, layers in modules)
    inputs = sum(elements(width, level) for _, width, level, _ in modules)
    return inputs + max(_saved(kind, layers) * elements(width, level) for kind, width, level, layers in modules)


def trainable_params(sizes: ModelSizes, lora_rank: int) -> int:
    if not lora_rank:
        return sizes.unet_params
    return sum(lora_rank * (rows + cols) for rows, cols in sizes.lora_shapes)


def training_bytes(sizes: ModelSizes, frames: int, resolution: int, batch: int, checkpointing: bool,
                   lora_rank: int = 0, mixed_precision: str = "no", ema: bool = False) -> int:
    """Estimate (a floor) of the peak memory of one training step of ``batch`` grids of ``frames`` frames of
    ``resolution`` pixels square."""
    trainable = trainable_params(sizes, lora_rank)
    weights = (sizes.unet_params + sizes.other_params + (trainable if lora_rank else 0)) * FLOAT
    state = trainable * FLOAT * (1 + ADAMW_MOMENTS + int(ema))  # gradients, AdamW moments, EMA copy
    element = FLOAT if mixed_precision == "no" else 2
    latent = resolution // 8
    pixels = batch * frames * 3 * resolution ** 2 * FLOAT
    vae = batch * frames * VAE_WORKING * max(w * (resolution ** 2 // 4 ** level)
                                             for level, w in enumerate(sizes.vae_widths)) * FLOAT
    unet = batch * unet_activation_elements(sizes, frames * latent ** 2, checkpointing) * element
    return weights + state + pixels + max(vae, unet)


TRAINING = "to train (weights, gradients, optimizer state, activations)"


def check_training_fits(node: str, sizes: ModelSizes, frames: int, resolution: int, batch: int,
                        checkpointing: bool, free: int, lora_rank: int = 0, mixed_precision: str = "no",
                        ema: bool = False) -> int:
    """Refuse a run whose estimate exceeds ``free`` bytes, naming sizes that fit (etc_core.memory's
    check_grid_fits) and gradient checkpointing when that alone would make it fit."""
    def needed(f, w, h, checkpointing=checkpointing):
        return training_bytes(sizes, f, w, batch, checkpointing, lora_rank, mixed_precision, ema)
    try:
        return check_grid_fits(node, needed, frames, resolution, resolution, free, TRAINING, batch)
    except MemoryError as e:
        if not checkpointing and needed(frames, resolution, resolution, True) <= free:
            e.args = (f"{e.args[0]}; or turn on gradient_checkpointing, with which this size fits",)
        raise


def check_training_memory(node: str, config, free: int) -> int:
    """:func:`check_training_fits` for a TrainConfig (its base model already checked)."""
    return check_training_fits(node, model_sizes(config.pretrained), config.frames, config.resolution,
                               config.batch_size, config.gradient_checkpointing, free, config.lora_rank,
                               config.mixed_precision, config.ema_decay > 0)
