"""ComfyUI node that launches ETC fine-tuning (category video/ETC): a thin adapter over etc_core.launcher."""
import os
import time

import torch

from ..etc_core.launcher import PACK_ROOT, TrainingProcess, loss_curve_image

CATEGORY = "video/ETC"
PATH = ("STRING", {"default": ""})


class ETCTrainer:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pretrained": ("STRING", {"default": "", "tooltip": "local diffusers SD 2.1 folder"}),
            "output_dir": ("STRING", {"default": "", "tooltip": "checkpoints, config and final export go here"}),
            "video_manifest": PATH, "image_manifest": PATH, "label_folder": PATH,
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
                                             "multi-node (e.g. etc_core/configs/accelerate_deepspeed_zero2.yaml); "
                                             "it overrides num_processes"}),
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
        for key in ("pretrained", "output_dir"):
            if not config[key]:
                raise ValueError(f"{key} is empty; give an absolute path")
        config = {k: (v or None) if isinstance(v, str) and k.endswith(("manifest", "folder")) else v
                  for k, v in config.items()}
        if accelerate_config and not os.path.isabs(accelerate_config):
            accelerate_config = os.path.join(PACK_ROOT, accelerate_config)
        run = TrainingProcess(config, resume=resume, num_processes=num_processes, accelerate_config=accelerate_config)
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
