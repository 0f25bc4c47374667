"""ComfyUI nodes for ETC fine-tuning (category video/ETC), thin adapters over etc_core.train.

``ETCTrainer`` trains inside the ComfyUI process, on ComfyUI's device, as core's TrainLoraNode does.
``ETCTrainCommand`` writes the checked config into the run folder and returns the ``accelerate launch``
line for a terminal (several GPUs, several machines, DeepSpeed). Neither starts a process.
Paths follow nodes/paths.py: the base model by name, data under input/ or models/, the run under output/.
"""
import dataclasses
import logging
import time

import torch

from ..etc_core.files.loss_curve import loss_curve_image
from ..etc_core.files.media_header import MAX_FRAME_PIXELS
from ..etc_core.train import Trainer, TrainConfig, check_run
from ..etc_core.train.launch_line import launch_line, write_launch_config
from ..etc_core.train.memory_estimate import check_training_memory
from ..etc_core.train.run_folder import write_run_config
from .host_probes import free_memory
from .node_spec import Input, NodeSpec, Output, mappings, node
from .paths import (allowed_roots, input_path, output_path, pretrained_path, pretrained_choices, server_paths_hidden,
                    without_server_paths)
from .shared_inputs import ETC_CATEGORY as CATEGORY, FRAMES, LAYOUT
DATA = "a JSONL manifest or a folder of {0}s with same-name .txt captions, under ComfyUI's input/ or models/"
PREVIEW_EVERY_S = 1.0  # drawing the curve costs tens of ms: at most once a second, and at the last step


# The inputs that define a run, shared by both nodes (required ones, then the optional ones).
RUN_INPUTS = (
    Input("pretrained", pretrained_choices, "SD 2.x checkpoint (models/checkpoints, one .safetensors file) or "
          "diffusers folder (models/diffusers) to fine-tune"),
    Input("output_dir", "STRING", "run folder under ComfyUI's output/: checkpoints, config and final export",
          {"default": "etc_runs/run1"}),
    Input("video_manifest", "STRING", "caption-video pairs: " + DATA.format("video") + "; empty: none",
          {"default": ""}),
    Input("image_manifest", "STRING", "caption-image pairs: " + DATA.format("image") + "; empty: none",
          {"default": ""}),
    Input("label_folder", "STRING", "label-image pairs: a folder of <label>/ image folders under input/ or "
          "models/; empty: none (at least one of the three data inputs is needed)", {"default": ""}),
    dataclasses.replace(FRAMES, tooltip="frames per training grid (T), 1-1024"), LAYOUT,
    Input("resolution", "INT", "side of each (square, center-cropped) frame in pixels, a multiple of 8",
          {"default": 256, "min": 8, "max": 2048, "step": 8}),
    Input("lr", "FLOAT", "AdamW learning rate, constant over the run",
          {"default": 1e-4, "min": 1e-7, "max": 1.0, "step": 1e-5}),
    Input("batch_size", "INT", "grids per step on each device", {"default": 1, "min": 1, "max": 1024}),
    Input("gradient_accumulation_steps", "INT", "batches whose gradients make one optimizer step (1: one batch a step)",
          {"default": 1, "min": 1, "max": 1024}),
    Input("max_steps", "INT", "optimizer steps of the whole run, counted across resumes (the paper: 15000 "
          "at batch 48)", {"default": 15000, "min": 1, "max": 10**7}),
    Input("checkpoint_every", "INT", "steps between checkpoints in output_dir (one is also written when the "
          "run is cancelled)", {"default": 500, "min": 1, "max": 10**7}),
    Input("mixed_precision", lambda: ["no", "bf16", "fp16"], "no: fp32; bf16 or fp16: mixed precision through "
          "accelerate (less memory, faster where the device supports it)"),
    Input("gradient_checkpointing", "BOOLEAN", "recompute the UNet's activations in the backward pass: less "
          "memory, slower steps", {"default": True}),
    Input("seed", "INT", "seed of the data order, noise, timesteps and new weights' init: the same "
          "seed and data give the same run", {"default": 0, "min": 0, "max": 2**31}),
    Input("resume", "BOOLEAN", "continue the run in output_dir from its last checkpoint (same inputs but "
          "max_steps and checkpoint_every); off: output_dir must hold no checkpoints", {"default": False}),
    Input("skip_unreadable", "BOOLEAN", "leave out videos and images that cannot be read (named in the node's "
          "text, the server log and the run folder's skipped_files.txt); off: refuse the run", {"default": True},
          optional=True),
    Input("lora_rank", "INT", "0: full fine-tune; > 0: train LoRA adapters of this rank (exported for "
          "LoraLoaderModelOnly) and the FPS module", {"default": 0, "min": 0, "max": 1024}, optional=True),
    Input("lora_alpha", "FLOAT", "LoRA scale alpha / rank; 0: alpha = rank",
          {"default": 0.0, "min": 0.0, "max": 4096.0, "step": 1.0}, optional=True),
    Input("caption_dropout", "FLOAT", "share of samples trained with the empty caption, 0-0.99, so that CFG "
          "with an empty negative prompt has a trained unconditional model",
          {"default": 0.0, "min": 0.0, "max": 0.99, "step": 0.01}, optional=True),
    Input("checkpoint_minutes", "FLOAT", "also write a checkpoint once this many minutes passed since the last "
          "one, so a server restart loses at most this much; 0: off",
          {"default": 5.0, "min": 0.0, "max": 10080.0, "step": 1.0}, optional=True),
    Input("keep_checkpoints", "INT", "checkpoints kept in output_dir: the newest ones; older ones are deleted "
          "after each write", {"default": 3, "min": 1, "max": 10**6}, optional=True),
    Input("keep_every", "INT", "also keep every checkpoint whose step is a multiple of this; 0: off",
          {"default": 0, "min": 0, "max": 10**7}, optional=True),
    Input("max_frame_pixels", "INT", "images and video frames with more pixels (read from the file's header, "
          "before decoding) count as unreadable (see skip_unreadable)",
          {"default": MAX_FRAME_PIXELS, "min": 64, "max": 2**40}, optional=True),
)


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


@node(NodeSpec(
    "ETCTrainer", "ETC Trainer", CATEGORY,
    "ETC fine-tuning (section 4.2) in the ComfyUI process, on one device: the UNet learns grids of frames "
    "with the mixed embedding, plus the FPS module, from caption-video, caption-image and label-image data. "
    "Cancel stops at the next step with a checkpoint, and resume continues it. Several GPUs: ETC Train Command.",
    "train",
    inputs=RUN_INPUTS,
    outputs=(Output("STRING", "the export folder as ComfyUI's folders name it (output/<output_dir>/final): "
                    "etc_unet_comfyui.safetensors for "
                    "models/unet (LoRA runs: etc_lora_comfyui.safetensors for models/loras) and "
                    "etc_fps.safetensors for models/etc",
                    "checkpoint"),
             Output("IMAGE", "the training loss per step, drawn as a curve", "loss_curve"),
             Output("LOSS_MAP", "{'loss': [the loss of each step]}, for core's Plot Loss Graph", "loss_map")),
    output_node=True, experimental=True))
class ETCTrainer:
    def train(self, resume, **config):
        with server_paths_hidden():
            return self._train(resume, **config)

    def _train(self, resume, **config):
        import comfy.model_management
        run, roots = TrainConfig.from_dict(run_values(config)), allowed_roots()
        check_run(run, resume, roots)  # reads only: a refused run leaves the user's models loaded
        comfy.model_management.unload_all_models()  # the run needs the device's memory
        comfy.model_management.soft_empty_cache()
        device = comfy.model_management.get_torch_device()
        check_training_memory("ETCTrainer", run, free_memory(device))
        write_run_config(run)  # what a terminal run would continue from
        report = []

        def log(line):  # the server log is served too (/internal/logs): ComfyUI's folders, never server paths
            report.append(without_server_paths(line))
            logging.warning("ETCTrainer %s", report[-1])

        cpu = comfy.model_management.get_torch_device().type == "cpu"
        # ComfyUI runs nodes under inference_mode; training needs autograd
        with torch.inference_mode(False), torch.enable_grad():
            trainer = Trainer(run, resume=resume, roots=roots, cpu=cpu,
                              single_process=True, log=log, shown=without_server_paths)
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
        folder = without_server_paths(folder)  # output/..., as the node's text names it, never the server's path
        text = [f"{steps} steps -> {folder}"] + report
        return {"ui": {"text": text}, "result": (folder, curve, {"loss": losses})}


@node(NodeSpec(
    "ETCTrainCommand", "ETC Train Command (multi-GPU)", CATEGORY,
    "Checks the run, writes its config into the run folder and returns the accelerate launch line to paste "
    "into a terminal (several GPUs, DeepSpeed). It runs nothing itself.",
    "command",
    inputs=RUN_INPUTS + (
        Input("num_processes", "INT", "GPUs on the machine that runs the line (one process each)",
              {"default": 8, "min": 1, "max": 1024}),
        Input("deepspeed", "BOOLEAN", "DeepSpeed ZeRO-2 with CPU optimizer offload (the pack's "
              "etc_core/configs/accelerate_deepspeed_zero2.yaml; bf16)", {"default": False})),
    outputs=(Output("STRING", "the shell line to run in a terminal on this machine: cd into the pack, then "
                    "accelerate launch with the config's path and checksum", "command"),),
    output_node=True, experimental=True))
class ETCTrainCommand:
    def command(self, resume, num_processes, deepspeed, **config):
        with server_paths_hidden():
            return self._command(resume, num_processes, deepspeed, **config)

    def _command(self, resume, num_processes, deepspeed, **config):
        values = run_values(config)
        path, digest = write_launch_config(values, resume, allowed_roots())
        line = launch_line(path, digest, num_processes=num_processes, mixed_precision=values["mixed_precision"],
                           deepspeed=deepspeed, resume=resume)
        return {"ui": {"text": [line]}, "result": (line,)}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings(ETCTrainer, ETCTrainCommand)
