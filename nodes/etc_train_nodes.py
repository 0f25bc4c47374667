"""ComfyUI nodes for ETC fine-tuning (category video/ETC), thin adapters over etc_core.train.

``ETCTrainer`` trains inside the ComfyUI process, on ComfyUI's device, as core's TrainLoraNode does.
``ETCTrainCommand`` writes the checked config into the run folder and returns the ``accelerate launch``
line for a terminal (several GPUs, several machines, DeepSpeed). Neither starts a process.
Paths follow nodes/paths.py: the base model by name, data under input/ or models/, the run under output/.
"""
import logging
import time

import torch

from ..etc_core.files.loss_curve import loss_curve_image
from ..etc_core.files.media_header import MAX_FRAME_PIXELS
from ..etc_core.train import ETCTrainer as Trainer, TrainConfig, check_launch
from ..etc_core.train.launch_line import launch_line, write_launch_config
from ..etc_core.train.memory_estimate import check_training_memory
from .comfy_versions import free_memory
from .paths import (allowed_roots, input_path, output_path, pretrained_path, pretrained_choices, server_paths_hidden,
                    without_server_paths)
from .widgets import ETC_CATEGORY as CATEGORY, FRAMES, LAYOUT
DATA = "a JSONL manifest or a folder of {0}s with same-name .txt captions, under ComfyUI's input/ or models/"
PREVIEW_EVERY_S = 1.0  # drawing the curve costs tens of ms: at most once a second, and at the last step


def run_inputs() -> dict:
    """The inputs that define a run, shared by both nodes."""
    return {"required": {
        "pretrained": (pretrained_choices(), {"tooltip": "SD 2.x checkpoint (models/checkpoints, one .safetensors "
                                              "file) or diffusers folder (models/diffusers)"}),
        "output_dir": ("STRING", {"default": "etc_runs/run1", "tooltip": "run folder under ComfyUI's output/: "
                                  "checkpoints, config and final export"}),
        "video_manifest": ("STRING", {"default": "", "tooltip": DATA.format("video")}),
        "image_manifest": ("STRING", {"default": "", "tooltip": DATA.format("image")}),
        "label_folder": ("STRING", {"default": "", "tooltip": "folder of <label>/ image folders under input/ "
                                    "or models/"}),
        "frames": FRAMES, "layout": LAYOUT,
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
    }, "optional": {
        "skip_unreadable": ("BOOLEAN", {"default": True, "tooltip": "leave out videos and images that cannot be "
                                        "read (named in the node's text, the server log and the run folder's "
                                        "skipped_files.txt); off: refuse the run"}),
        "lora_rank": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip": "0: full fine-tune; > 0: train "
                              "LoRA adapters of this rank (exported for LoraLoaderModelOnly) and the FPS module"}),
        "lora_alpha": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 4096.0, "step": 1.0,
                                 "tooltip": "LoRA scale alpha / rank; 0: alpha = rank"}),
        "caption_dropout": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.99, "step": 0.01,
                                      "tooltip": "share of samples trained with the empty caption, so that "
                                      "CFG with an empty negative prompt has a trained unconditional model"}),
        "checkpoint_minutes": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 10080.0, "step": 1.0,
                                         "tooltip": "also write a checkpoint once this many minutes passed since "
                                         "the last one, so a server restart loses at most this much; 0: off"}),
        "keep_checkpoints": ("INT", {"default": 3, "min": 1, "max": 10**6, "tooltip": "checkpoints kept in "
                                     "output_dir: the newest ones; older ones are deleted after each write"}),
        "keep_every": ("INT", {"default": 0, "min": 0, "max": 10**7, "tooltip": "also keep every checkpoint "
                               "whose step is a multiple of this; 0: off"}),
        "max_frame_pixels": ("INT", {"default": MAX_FRAME_PIXELS, "min": 64, "max": 2**40, "tooltip": "images "
                                     "and video frames with more pixels (read from the file's header, before "
                                     "decoding) count as unreadable (see skip_unreadable)"}),
    }}


def run_values(config: dict) -> dict:
    """The TrainConfig fields of a node's inputs, every path resolved inside ComfyUI's folders."""
    config = dict(config, pretrained=pretrained_path(config["pretrained"]),
                  output_dir=output_path(config["output_dir"], "output_dir"))
    for key in ("video_manifest", "image_manifest", "label_folder"):
        config[key] = input_path(config[key], key) if config[key] else None
    return config


class _Progress:
    """The node's progress bar with a live loss-curve preview, and console progress.

    ComfyUI's progress hook raises InterruptProcessingException once Cancel was pressed (and clears the
    flag): it is kept here, so the trainer stops at the next step boundary with a checkpoint instead of
    dying between two files.
    """

    def __init__(self, trainer):
        import comfy.utils
        from tqdm import tqdm
        self.trainer, self.total = trainer, trainer.config.max_steps
        self.bar = comfy.utils.ProgressBar(self.total)
        self.console = tqdm(total=self.total, initial=trainer.step, desc="ETC training", unit="step")
        self.cancelled, self.drawn = False, 0.0

    def should_stop(self) -> bool:
        import comfy.model_management
        return self.cancelled or comfy.model_management.processing_interrupted()

    def update(self, step: int, total: int, loss: float):
        import comfy.model_management
        from PIL import Image
        self.console.update(1)
        self.console.set_postfix(loss=f"{loss:.4g}")
        preview = None
        if step == total or time.monotonic() - self.drawn >= PREVIEW_EVERY_S:
            preview = ("PNG", Image.fromarray(loss_curve_image(self.trainer.losses)), 640)
            self.drawn = time.monotonic()
        try:
            self.bar.update_absolute(step, total, preview)
        except comfy.model_management.InterruptProcessingException:
            self.cancelled = True

    def close(self):
        self.console.close()


class ETCTrainer:
    @classmethod
    def INPUT_TYPES(cls):
        return run_inputs()

    RETURN_TYPES = ("STRING", "IMAGE", "LOSS_MAP")
    RETURN_NAMES = ("checkpoint", "loss_curve", "loss_map")
    OUTPUT_NODE = True
    FUNCTION = "train"
    CATEGORY = CATEGORY
    DESCRIPTION = ("ETC fine-tuning in the ComfyUI process (one device); Cancel stops at the next step with a "
                   "checkpoint, and resume continues it. Several GPUs: ETCTrainCommand.")

    def train(self, resume, **config):
        with server_paths_hidden():
            return self._train(resume, **config)

    def _train(self, resume, **config):
        import comfy.model_management
        values, roots = run_values(config), allowed_roots()
        check_launch(TrainConfig.from_dict(values), resume, roots)  # reads only
        comfy.model_management.unload_all_models()  # the run needs the device's memory
        comfy.model_management.soft_empty_cache()
        device = comfy.model_management.get_torch_device()
        check_training_memory("ETCTrainer", TrainConfig.from_dict(values), free_memory(device))
        write_launch_config(values, resume, roots)  # also what a terminal run would continue
        report = []

        def log(line):
            report.append(line)
            logging.warning("ETCTrainer %s", line)

        cpu = comfy.model_management.get_torch_device().type == "cpu"
        # ComfyUI runs nodes under inference_mode; training needs autograd
        with torch.inference_mode(False), torch.enable_grad():
            trainer = Trainer(TrainConfig.from_dict(values), resume=resume, roots=roots, cpu=cpu,
                              single_process=True, log=log)
            progress = _Progress(trainer)
            try:
                trainer.train(progress=progress.update, should_stop=progress.should_stop)
            finally:
                progress.close()
            if trainer.step < trainer.config.max_steps:  # cancelled: the checkpoint is written
                raise comfy.model_management.InterruptProcessingException()
            folder = trainer.export()
        steps, losses = trainer.step, list(trainer.losses)
        del trainer
        comfy.model_management.soft_empty_cache()
        curve = torch.from_numpy(loss_curve_image(losses)).float().div(255).unsqueeze(0)
        text = [without_server_paths(line) for line in [f"{steps} steps -> {folder}"] + report]
        return {"ui": {"text": text}, "result": (folder, curve, {"loss": losses})}


class ETCTrainCommand:
    @classmethod
    def INPUT_TYPES(cls):
        inputs = run_inputs()
        inputs["required"].update({
            "num_processes": ("INT", {"default": 8, "min": 1, "max": 1024, "tooltip": "GPUs on the machine that "
                                      "runs the line"}),
            "deepspeed": ("BOOLEAN", {"default": False, "tooltip": "DeepSpeed ZeRO-2 with CPU optimizer offload "
                                      "(the pack's etc_core/configs/accelerate_deepspeed_zero2.yaml; bf16)"}),
        })
        return inputs

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("command",)
    OUTPUT_NODE = True
    FUNCTION = "command"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Checks the run, writes its config into the run folder and returns the accelerate launch line "
                   "to paste into a terminal (several GPUs, DeepSpeed). It runs nothing itself.")

    def command(self, resume, num_processes, deepspeed, **config):
        with server_paths_hidden():
            return self._command(resume, num_processes, deepspeed, **config)

    def _command(self, resume, num_processes, deepspeed, **config):
        values = run_values(config)
        path, digest = write_launch_config(values, resume, allowed_roots())
        line = launch_line(path, digest, num_processes=num_processes, mixed_precision=values["mixed_precision"],
                           deepspeed=deepspeed, resume=resume)
        return {"ui": {"text": [line]}, "result": (line,)}


NODE_CLASS_MAPPINGS = {"ETCTrainer": ETCTrainer, "ETCTrainCommand": ETCTrainCommand}
NODE_DISPLAY_NAME_MAPPINGS = {"ETCTrainer": "ETC Trainer", "ETCTrainCommand": "ETC Train Command (multi-GPU)"}
