"""ComfyUI node that launches ETC fine-tuning (category video/ETC): a thin adapter over etc_core.launcher.

Paths follow nodes/paths.py: the base model by name, data under input/ or models/, the run under output/.
"""
import time

import torch

from ..etc_core.launcher import TrainingProcess, loss_curve_image
from .paths import accelerate_config_path, allowed_roots, input_path, output_path, pretrained_path, \
    pretrained_choices

CATEGORY = "video/ETC"
DATA = "a JSONL manifest or a folder of {0}s with same-name .txt captions, under ComfyUI's input/ or models/"


class ETCTrainer:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pretrained": (pretrained_choices(), {"tooltip": "SD 2.x checkpoint (models/checkpoints, one .safetensors "
                                                  "file) or diffusers folder (models/diffusers)"}),
            "output_dir": ("STRING", {"default": "etc_runs/run1", "tooltip": "run folder under ComfyUI's output/: "
                                      "checkpoints, config and final export"}),
            "video_manifest": ("STRING", {"default": "", "tooltip": DATA.format("video")}),
            "image_manifest": ("STRING", {"default": "", "tooltip": DATA.format("image")}),
            "label_folder": ("STRING", {"default": "", "tooltip": "folder of <label>/ image folders under input/ "
                                        "or models/"}),
            "frames": ("INT", {"default": 16, "min": 1, "max": 1024}),
            "layout": ("STRING", {"default": "auto"}),
            "resolution": ("INT", {"default": 256, "min": 8, "max": 2048, "step": 8}),
            "lr": ("FLOAT", {"default": 1e-4, "min": 1e-7, "max": 1.0, "step": 1e-5}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 1024}),
            "gradient_accumulation_steps": ("INT", {"default": 1, "min": 1, "max": 1024}),
            "max_steps": ("INT", {"default": 15000, "min": 1, "max": 10**7}),
            "checkpoint_every": ("INT", {"default": 500, "min": 1, "max": 10**7}),
            "mixed_precision": (["no", "bf16", "fp16"],),
            "gradient_checkpointing": ("BOOLEAN", {"default": True}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            "resume": ("BOOLEAN", {"default": False, "tooltip": "continue the run already in output_dir"}),
            "num_processes": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "GPUs on this machine"}),
        }, "optional": {
            "accelerate_config": ("STRING", {"default": "", "tooltip": "accelerate config YAML for DeepSpeed or "
                                             "multi-node, under input/ or models/, or one shipped in the pack's "
                                             "etc_core/configs (accelerate_deepspeed_zero2.yaml); it overrides "
                                             "num_processes"}),
            "skip_unreadable": ("BOOLEAN", {"default": True, "tooltip": "leave out videos and images that cannot be "
                                            "read (named in the log); off: refuse the run"}),
            "lora_rank": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip": "0: full fine-tune; > 0: train "
                                  "LoRA adapters of this rank (exported for LoraLoaderModelOnly) and the FPS module"}),
            "lora_alpha": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 4096.0, "step": 1.0,
                                     "tooltip": "LoRA scale alpha / rank; 0: alpha = rank"}),
            "caption_dropout": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.99, "step": 0.01,
                                          "tooltip": "share of samples trained with the empty caption, so that "
                                          "CFG with an empty negative prompt has a trained unconditional model"}),
        }}

    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("checkpoint", "loss_curve")
    OUTPUT_NODE = True
    FUNCTION = "train"
    CATEGORY = CATEGORY
    DESCRIPTION = "ETC fine-tuning in a separate accelerate process; cancel the prompt to stop with a checkpoint."

    def train(self, resume, num_processes, accelerate_config="", **config):
        import comfy.model_management
        import comfy.utils
        config["pretrained"] = pretrained_path(config["pretrained"])
        config["output_dir"] = output_path(config["output_dir"], "output_dir")
        for key in ("video_manifest", "image_manifest", "label_folder"):
            config[key] = input_path(config[key], key) if config[key] else None
        accelerate_config = accelerate_config_path(accelerate_config) if accelerate_config else None
        run = TrainingProcess(config, resume=resume, num_processes=num_processes, accelerate_config=accelerate_config,
                              roots=allowed_roots())
        bar = comfy.utils.ProgressBar(config["max_steps"])
        while run.running():
            if comfy.model_management.processing_interrupted():
                run.stop()
                raise comfy.model_management.InterruptProcessingException()
            bar.update_absolute(run.step, run.total or config["max_steps"])
            time.sleep(0.25)
        folder = run.wait()
        curve = loss_curve_image(run.losses, first_step=run.step - len(run.losses) + 1)
        curve = torch.from_numpy(curve).float().div(255).unsqueeze(0)
        return {"ui": {"text": [f"{run.step} steps -> {folder}"]}, "result": (folder, curve)}


NODE_CLASS_MAPPINGS = {"ETCTrainer": ETCTrainer}
NODE_DISPLAY_NAME_MAPPINGS = {"ETCTrainer": "ETC Trainer (accelerate)"}
