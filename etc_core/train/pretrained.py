"""The base model a run starts from: a diffusers folder, or one SD 2.x ``.safetensors`` file as ComfyUI keeps
it in ``models/checkpoints`` (``v2-1_512-ema-pruned.safetensors``, ``v2-1_768-ema-pruned.safetensors``).

Loaded offline: nothing is looked up on the model hub. A single file is converted with diffusers' own LDM
converters, with configs read from the file's tensor shapes, SD 2.x's noise schedule, and CLIP's BPE
tokenizer rebuilt from the merges shipped in ``configs/clip_bpe_merges.txt.gz`` (OpenAI CLIP, MIT licence;
the vocabulary is the 256 byte symbols, their word-final forms, the merges, and the two special tokens).
The prediction type (epsilon for the 512 base, v for 768-v) is read from the file as ComfyUI reads it.
"""
import gzip
import json
import os
import tempfile

import torch

from .. import sd2
from ..files.safe_load import SAFE_LOAD
from .vae import load_vae

DIFFUSERS_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHT_PARTS = ("unet", "vae", "text_encoder")
UNET, VAE, TEXT = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.model."
MERGES = os.path.join(sd2.CONFIG_DIR, "clip_bpe_merges.txt.gz")
# ComfyUI's SD20.model_type: v-prediction models have a wide spread in this norm's bias.
V_PROBE, V_PROBE_STD = "output_blocks.11.1.transformer_blocks.0.norm1.bias", 0.09


class PretrainedError(ValueError):
    pass


def _checkpoint_keys(path: str):
    from safetensors import safe_open
    try:
        with safe_open(path, framework="pt") as f:
            return set(f.keys())
    except Exception:  # a damaged header surfaces in several exception types
        raise PretrainedError(f"pretrained {os.path.basename(path)} is not a readable safetensors file") from None


def check_pretrained(path: str) -> str:
    """``"diffusers"`` or ``"single_file"``; refuses anything else with a one-line error."""
    if os.path.isdir(path):
        missing = [p for p in DIFFUSERS_PARTS if not os.path.isdir(os.path.join(path, p))]
        if missing:
            raise PretrainedError(f"pretrained {path} is a folder but not a diffusers model (no {missing[0]}/); "
                                  "give an SD 2.x .safetensors checkpoint or a diffusers folder")
        pickled = [p for p in WEIGHT_PARTS if not any(f.endswith(".safetensors")
                                                      for f in os.listdir(os.path.join(path, p)))]
        if pickled:
            raise PretrainedError(f"pretrained {path}: {pickled[0]}/ has no .safetensors weights (pickled .bin files "
                                  "are not loaded); convert the model to safetensors")
        return "diffusers"
    if os.path.isfile(path):
        if not path.endswith(".safetensors"):
            raise PretrainedError(f"pretrained {path} is not a .safetensors file; give an SD 2.x .safetensors "
                                  "checkpoint or a diffusers folder")
        keys = _checkpoint_keys(path)
        parts = {"UNet": UNET, "VAE": VAE, "OpenCLIP text encoder": TEXT}
        missing = [name for name, prefix in parts.items() if not any(k.startswith(prefix) for k in keys)]
        if missing or any(k.startswith(UNET + "time_stack") or ".time_stack." in k for k in keys):
            what = f"it has no {missing[0]}" if missing else "it is a video model"
            raise PretrainedError(f"pretrained {os.path.basename(path)} is not a full SD 2.x checkpoint ({what}); "
                                  "give an SD 2.x checkpoint such as v2-1_512-ema-pruned.safetensors")
        return "single_file"
    raise PretrainedError(f"pretrained {path} does not exist; give an SD 2.x .safetensors checkpoint or a "
                          "diffusers folder")


def prediction_type(state_dict: dict) -> str:
    """``"v_prediction"`` or ``"epsilon"``, as ComfyUI decides for an SD 2.x file."""
    if "v_pred" in state_dict:
        return "v_prediction"
    probe = state_dict.get(UNET + V_PROBE)
    if probe is not None and torch.std(probe.float(), unbiased=False) > V_PROBE_STD:
        return "v_prediction"
    return "epsilon"


def _count(keys, prefix: str) -> int:
    """How many numbered children ``prefix<i>.`` the keys hold."""
    return len({k[len(prefix):].split(".")[0] for k in keys if k.startswith(prefix)})


def ldm_config(sd: dict) -> dict:
    """The LDM (``v2-inference.yaml``-style) config of an SD 2.x file, read from its tensor shapes."""
    keys = list(sd)
    ch = sd[UNET + "input_blocks.0.0.weight"].shape[0]
    blocks = _count(keys, UNET + "input_blocks.")
    levels = sum(1 for i in range(blocks) if UNET + f"input_blocks.{i}.0.op.weight" in sd) + 1
    per_level = (blocks - 1 - (levels - 1)) // levels
    firsts = [1 + level * (per_level + 1) for level in range(levels)]
    mult = [sd[UNET + f"input_blocks.{i}.0.out_layers.3.weight"].shape[0] // ch for i in firsts]
    attention = [i for i, first in enumerate(firsts) if UNET + f"input_blocks.{first}.1.proj_in.weight" in sd]
    depth = [_count(keys, UNET + f"input_blocks.{first}.1.transformer_blocks.") for first in firsts]
    to_k = next(k for k in keys if k.startswith(UNET) and k.endswith("attn2.to_k.weight"))
    proj_in = sd[UNET + f"input_blocks.{firsts[attention[0]]}.1.proj_in.weight"]
    vae_ch = sd[VAE + "encoder.conv_in.weight"].shape[0]
    vae_levels = _count(keys, VAE + "encoder.down.")
    unet = dict(in_channels=sd[UNET + "input_blocks.0.0.weight"].shape[1],
                out_channels=sd[UNET + "out.2.weight"].shape[0], model_channels=ch, channel_mult=mult,
                num_res_blocks=per_level,
                attention_resolutions=[2 ** i for i in attention], transformer_depth=[max(d, 1) for d in depth],
                context_dim=sd[to_k].shape[1], num_head_channels=sd2.HEAD_CHANNELS,
                use_linear_in_transformer=proj_in.ndim == 2)
    ddconfig = dict(in_channels=sd[VAE + "encoder.conv_in.weight"].shape[1],
                    out_ch=sd[VAE + "decoder.conv_out.weight"].shape[0], ch=vae_ch,
                    z_channels=sd[VAE + "decoder.conv_in.weight"].shape[1],
                    ch_mult=[sd[VAE + f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // vae_ch
                             for i in range(vae_levels)],
                    num_res_blocks=_count(keys, VAE + "encoder.down.0.block."))
    return {"model": {"params": {"unet_config": {"params": unet}, "scale_factor": sd2.LATENT_SCALE,
                                 "first_stage_config": {"params": {"ddconfig": ddconfig}}}}}


def _text_encoder(sd: dict):
    """OpenCLIP text tower -> ``CLIPTextModel`` with the penultimate layer last (SD 2.x reads that one)."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel
    layers = _count(sd, TEXT + "transformer.resblocks.")
    vocab, hidden = sd[TEXT + "token_embedding.weight"].shape
    config = CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers - 1,
                            num_attention_heads=max(1, hidden // 64), hidden_act="gelu",
                            intermediate_size=sd[TEXT + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                            max_position_embeddings=sd[TEXT + "positional_embedding"].shape[0],
                            projection_dim=sd[TEXT + "text_projection"].shape[1] if TEXT + "text_projection" in sd
                            else hidden, bos_token_id=49406, eos_token_id=49407, pad_token_id=0)
    kept = {k: v for k, v in sd.items() if not k.startswith(TEXT + f"transformer.resblocks.{layers - 1}.")}
    model = _empty(CLIPTextModel, config)
    weights = convert_open_clip_checkpoint(model, kept, prefix=TEXT)
    weights.pop("text_projection.weight", None)  # SD 2.x conditions on hidden states, not the projection
    if not hasattr(model, "text_model"):  # transformers >= 5 has no text_model wrapper
        weights = {k[len("text_model."):]: v for k, v in weights.items()}
    return _filled(model, weights)


def _empty(cls, config):
    """A model whose parameters are not allocated yet (a random init of a large model takes seconds)."""
    from accelerate import init_empty_weights
    with init_empty_weights():
        return cls(config) if not hasattr(cls, "from_config") else cls.from_config(config)


def _filled(model, weights: dict):
    model.load_state_dict(weights, strict=True, assign=True)  # strict: every parameter comes from the file
    return model


def clip_tokenizer(max_length: int = 77):
    """CLIP's BPE tokenizer from the shipped merges, padding with "!" (id 0) as SD 2.x's tokenizer does."""
    from transformers import CLIPTokenizer
    with gzip.open(MERGES, "rt", encoding="utf-8") as f:
        merges = [line for line in f.read().split("\n")[1:] if line]
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump({token: i for i, token in enumerate(vocab)}, f)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
                             pad_token="!", model_max_length=max_length)


def _byte_symbols() -> list:
    """GPT-2/CLIP's printable stand-ins for the 256 byte values, in vocabulary order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def load_single_file(path: str):
    """(unet, vae, text_encoder, tokenizer, noise_scheduler) from one SD 2.x ``.safetensors`` file."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
                                                     create_unet_diffusers_config_from_ldm,
                                                     create_vae_diffusers_config_from_ldm)
    from safetensors.torch import load_file
    sd = {k: v.float() if v.is_floating_point() else v for k, v in load_file(path).items()}
    original = ldm_config(sd)
    unet_config = create_unet_diffusers_config_from_ldm(original, sd, image_size=None)
    unet = _filled(_empty(UNet2DConditionModel, unet_config), convert_ldm_unet_checkpoint(sd, unet_config))
    vae_config = create_vae_diffusers_config_from_ldm(original, sd)
    vae = _filled(_empty(AutoencoderKL, vae_config), convert_ldm_vae_checkpoint(sd, vae_config))
    scheduler = DDPMScheduler(prediction_type=prediction_type(sd), **sd2.SCHEDULE)
    return unet, vae, _text_encoder(sd), clip_tokenizer(), scheduler


def load_models(path: str):
    """(unet, vae, text_encoder, tokenizer, noise_scheduler) of ``path``."""
    if check_pretrained(path) == "single_file":
        return load_single_file(path)
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    return (UNet2DConditionModel.from_pretrained(path, subfolder="unet", **SAFE_LOAD),
            load_vae(os.path.join(path, "vae")),
            CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **SAFE_LOAD),
            CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True),
            DDPMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True))
