"""The base model a run starts from: a diffusers folder, or one SD 2.x ``.safetensors`` file as ComfyUI keeps
it in ``models/checkpoints``. Loaded offline: nothing is looked up on the model hub."""
import os

DIFFUSERS_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


class PretrainedError(ValueError):
    pass


def check_pretrained(path: str) -> str:
    """``"diffusers"`` or ``"single_file"``; refuses anything else with a one-line error."""
    if os.path.isdir(path):
        missing = [p for p in DIFFUSERS_PARTS if not os.path.isdir(os.path.join(path, p))]
        if missing:
            raise PretrainedError(f"pretrained {path} is a folder but not a diffusers model (no {missing[0]}/); "
                                  "give an SD 2.x .safetensors checkpoint or a diffusers folder")
        return "diffusers"
    if os.path.isfile(path):
        if not path.endswith(".safetensors"):
            raise PretrainedError(f"pretrained {path} is not a .safetensors file; give an SD 2.x .safetensors "
                                  "checkpoint or a diffusers folder")
        return "single_file"
    raise PretrainedError(f"pretrained {path} does not exist; give an SD 2.x .safetensors checkpoint or a "
                          "diffusers folder")


def load_models(path: str):
    """(unet, vae, text_encoder, tokenizer, noise_scheduler) of ``path``."""
    check_pretrained(path)
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    load = dict(local_files_only=True)
    return (UNet2DConditionModel.from_pretrained(path, subfolder="unet", **load),
            AutoencoderKL.from_pretrained(path, subfolder="vae", **load),
            CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **load),
            CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **load),
            DDPMScheduler.from_pretrained(path, subfolder="scheduler", **load))
