"""ETC fine-tuning (section 4.2, appendix E.2): the training loop, its checkpoints and the export; the command
line ``python -m etc_core.train --config FILE [--resume]`` is ``command.py``.

The UNet (or, with ``lora_rank``, LoRA adapters on its attention projections) and the FPS module train;
the VAE and the text encoder are frozen. Frames are packed into one grid (eq. 1), the mixed embedding is
added to the UNet input and the FPS embedding to the timestep embedding, with the same modules as inference.
The loss target follows the base model's prediction type.

One process (the ComfyUI node, the demo, a notebook) or several from a terminal: multi-GPU and multi-node
runs are ``accelerate launch ... -m etc_core.train --config FILE`` (DeepSpeed ZeRO-2 with CPU offload:
``configs/accelerate_deepspeed_zero2.yaml``); ``etc_core.launch_line`` writes the config and the line.
Checkpoints are written atomically every ``checkpoint_every`` steps and every ``checkpoint_minutes``, as
safetensors and JSON (``etc_core.checkpoint``; DeepSpeed runs in DeepSpeed's format), the newest
``keep_checkpoints`` (and every ``keep_every``-th) kept, after a free-disk check
(``etc_core.train.checkpoint_rotation``); ``--resume`` restores model, optimizer,
scheduler and RNG state and the data position (samples are a function of (seed, index)), so a resumed
run ends as an uninterrupted one.
"""
import collections
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..data.sources import TripleData, missing, read_sources, usable_sources
from ..files.atomic import save_file_atomic, write_text_atomic
from ..fps_embedding import FPSConditionedTimeEmbedding, FPSEmbedding, base_model_fingerprint, save_fps_module
from ..grid import pack, parse_layout
from ..mixed_embedding import MixedEmbeddingInput
from . import checkpoint
from .checkpoint_rotation import check_free_disk, rotated_out, tensors_bytes
from .config import (SKIPPED_FILES, ConfigError, TrainConfig, check_output_dir, checkpoints, claim_output_dir,
                     lr_factor)
from .export import comfyui_lora, save_comfyui_unet
from .pretrained import check_pretrained, load_models


# Installed for training only (README, docs/training.md): their newest releases need a newer torch than many
# ComfyUI installs run, and pip would replace that torch to install them with the pack.
TRAINING_PACKAGES = ("accelerate", "peft")


def check_training_packages():
    missing = [name for name in TRAINING_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        names = " ".join(missing)
        raise ModuleNotFoundError(f"training needs {names}, which the pack does not install: run `pip install "
                                  f"{names}` with the Python that runs ComfyUI, adding torch==<its torch version> "
                                  "to keep that torch (docs/training.md)")


def check_run(config: TrainConfig, resume: bool = False, roots=None):
    """Everything a run (in process or from a launch line) can check before it starts, without the models and
    without decoding: the training packages, the run folder, the base model, the data lists (each line parsed,
    each field typed, each file present). Reads only; ``roots`` confines the files the data lists name."""
    check_training_packages()
    check_output_dir(config, resume)
    check_pretrained(config.pretrained)
    sources = read_sources(config.video_manifest, config.image_manifest, config.label_folder, roots)
    usable_sources(config.frames, sources, config.ratios, config.skip_unreadable, missing, missing)


TEXT_CACHE = 256  # captions; 77 x 1024 floats each for SD 2.x

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # every attention projection, self and cross


def add_lora(unet, rank: int, alpha: float, seed: int):
    """Freeze the UNet and give each attention projection a LoRA adapter (peft): ``W + alpha/rank * B A``, B
    zero at init so training starts from the base model; A's init depends on the seed alone."""
    from peft import LoraConfig
    unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(LORA_TARGETS)))


def make_accelerator(config: TrainConfig, cpu: bool = False):
    """The run's Accelerator; ``cpu`` keeps a single-process run on the CPU (ComfyUI started with --cpu).
    Without CUDA, processes started by ``accelerate launch`` (torchrun) talk over gloo: DeepSpeed would
    otherwise run each rank as a world of its own (plain data parallel on CPUs is accelerate's CPU mode)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import InitProcessGroupKwargs
    launched = torch.distributed.is_available() and torch.distributed.is_torchelastic_launched()
    handlers = [InitProcessGroupKwargs(backend="gloo")] if launched and not torch.cuda.is_available() else []
    # accelerate keeps one state per process and refuses a second Accelerator with another mixed_precision:
    # a trainer made after another in one process (ComfyUI, the demo, tests) starts from a clean state
    AcceleratorState._reset_state()
    return Accelerator(mixed_precision=config.mixed_precision, cpu=cpu,
                       gradient_accumulation_steps=config.gradient_accumulation_steps, kwargs_handlers=handlers)


class Trainer:
    """``roots`` confines the files the data lists name; ``single_process`` (a trainer inside a server)
    refuses an environment that would make it one rank of many or a DeepSpeed engine; ``log`` receives
    the data report (files left out), on the main process."""

    def __init__(self, config: TrainConfig, resume: bool = False, roots=None, cpu: bool = False,
                 single_process: bool = False, log=None, shown=None):
        self.config = config
        check_run(config, resume, roots)  # every check before the first write
        self.accelerator = make_accelerator(config, cpu)
        state = self.accelerator.state
        if single_process and (state.num_processes != 1 or state.deepspeed_plugin is not None):
            raise ConfigError("this trainer runs in one process; train on several GPUs or with DeepSpeed from a "
                              "terminal (accelerate launch, see the README)")
        self.rows, self.cols = parse_layout(config.frames, config.layout)
        is_main = self.accelerator.is_main_process
        log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        shown = shown or str  # how skipped_files.txt names files (the node: as ComfyUI's folders, input/...)
        self.data = TripleData(config.frames, config.resolution, config.video_manifest, config.image_manifest,
                               config.label_folder, config.ratios, config.seed, config.skip_unreadable,
                               log=log if is_main else None, roots=roots, max_frame_pixels=config.max_frame_pixels)
        unet, self.vae, self.text_encoder, self.tokenizer, self.noise_scheduler = load_models(config.pretrained)
        self.base_model = base_model_fingerprint(unet)
        self.vae.requires_grad_(False).eval()
        self.text_encoder.requires_grad_(False).eval()
        if config.lora_rank:
            add_lora(unet, config.lora_rank, config.lora_alpha or config.lora_rank, config.seed)
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        with torch.random.fork_rng(devices=[]):  # the new MLP's init depends on the seed alone
            torch.manual_seed(config.seed)
            self.fps_module = FPSEmbedding(unet.time_embedding.linear_2.out_features)
        unet.conv_in = MixedEmbeddingInput(unet.conv_in, self.rows, self.cols, config.theta, config.me_strength)
        unet.time_embedding = FPSConditionedTimeEmbedding(unet.time_embedding, self.fps_module, fps=0.0)
        deepspeed = self.accelerator.state.deepspeed_plugin
        # fused: one kernel for all tensors (7x faster on a CPU for the demo's 114M parameters); DeepSpeed
        # brings its own optimizer step
        optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=config.lr,
                                      betas=tuple(config.betas), weight_decay=config.weight_decay,
                                      fused=deepspeed is None)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, self.accelerator.num_processes))
        if deepspeed is not None:  # no DataLoader here, so DeepSpeed's "auto" batch sizes come from the config
            deepspeed.deepspeed_config["train_micro_batch_size_per_gpu"] = config.batch_size
            deepspeed.deepspeed_config["train_batch_size"] = (config.batch_size * config.gradient_accumulation_steps
                                                              * self.accelerator.num_processes)
        self.unet, self.optimizer, self.schedule = self.accelerator.prepare(unet, optimizer, schedule)
        device = self.accelerator.device
        self.vae.to(device)
        self.text_encoder.to(device)
        trainable = [p for p in self.accelerator.unwrap_model(self.unet).parameters() if p.requires_grad]
        # fp32 even when DeepSpeed trains bf16 weights: a bf16 lerp by (1 - decay) would round to no change
        self.ema = [p.detach().float().clone() for p in trainable] if config.ema_decay > 0 else None
        self._trainable = trainable
        self._text_cache = collections.OrderedDict()
        self.step = 0
        self._saved_at = time.monotonic()  # checkpoint_minutes counts from here, then from each checkpoint
        self.losses = []  # the mean loss of every step of the run, resumed ones included
        self.accelerator.wait_for_everyone()  # every rank has checked before the main one writes
        if is_main:
            claim_output_dir(config)
            if self.data.skipped:  # the run folder says which files this run never saw
                write_text_atomic(os.path.join(config.output_dir, SKIPPED_FILES),
                                  "".join(f"{shown(path)}\t{reason}\n" for path, reason in self.data.skipped))
        if resume:
            self._load_latest()

    # -- run folder -------------------------------------------------------------------------------------
    def checkpoints(self):
        return checkpoints(self.config.output_dir)

    def _deepspeed(self) -> bool:
        return self.accelerator.state.deepspeed_plugin is not None

    def _state_parts(self):
        return (self.accelerator.unwrap_model(self.unet), self.optimizer, self.schedule, self.accelerator.scaler,
                self.accelerator.process_index)

    def _load_latest(self):
        checkpoints = self.checkpoints()
        if not checkpoints:
            return
        latest = checkpoints[-1]
        try:
            with open(os.path.join(latest, "trainer_state.json")) as f:
                state = json.load(f)
        except (OSError, ValueError):
            raise checkpoint.damaged(latest, "trainer_state.json") from None
        processes = state.get("num_processes", 1)
        if processes != self.accelerator.num_processes:  # the data order and RNG states are per process
            raise ConfigError(f"{os.path.basename(latest)} was written by {processes} processes and this launch has "
                              f"{self.accelerator.num_processes}; resume with the run's own launch "
                              f"(num_processes {processes})")
        if bool(state.get("deepspeed")) != self._deepspeed():
            raise ConfigError(f"{os.path.basename(latest)} was written " + (
                "by a DeepSpeed run; resume it from a terminal with the run's own accelerate launch line"
                if state.get("deepspeed") else "without DeepSpeed; resume it without DeepSpeed"))
        if self._deepspeed():
            self.accelerator.load_state(latest)
        else:
            checkpoint.load_state(latest, state, *self._state_parts(), self.accelerator.device)
        self.step, self.losses = state["step"], list(state.get("losses", []))
        if self.ema is not None:
            saved = checkpoint.read_file(latest, "ema.safetensors", load_file)
            for i, tensor in enumerate(self.ema):
                tensor.copy_(saved[str(i)])

    def _checkpoint_bytes(self) -> int:
        """The tensors a checkpoint holds: the model, the optimizer state and the EMA copy."""
        unet = self.accelerator.unwrap_model(self.unet)
        weights = tensors_bytes(unet.state_dict().values())
        if self._deepspeed():
            # ZeRO's optimizer state_dict has not torch's layout: count AdamW's two moments per weight.
            moments = 2 * weights
        else:
            moments = tensors_bytes(t for state in self.optimizer.state_dict()["state"].values()
                                    for t in state.values() if torch.is_tensor(t))
        return weights + moments + tensors_bytes(self.ema or [])

    def save_checkpoint(self) -> str:
        final = os.path.join(self.config.output_dir, f"checkpoint-{self.step}")
        partial = final + ".partial"
        is_main = self.accelerator.is_main_process
        existing = self.checkpoints()
        # every rank checks (the same disk), so all stop at once instead of waiting for a rank that stopped
        check_free_disk(self.config.output_dir, self._checkpoint_bytes(), self.step,
                        existing[-1] if existing else None)
        if is_main:
            shutil.rmtree(partial, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        if self._deepspeed():
            self.accelerator.save_state(partial)
            state = {}
        else:
            state = checkpoint.save_state(partial, *self._state_parts(), is_main)
        self.accelerator.wait_for_everyone()  # every rank's RNG state is in before the folder is renamed
        if is_main:
            state.update(step=self.step, base_model=self.base_model, num_processes=self.accelerator.num_processes,
                         deepspeed=self._deepspeed(), losses=self.losses)
            with open(os.path.join(partial, "trainer_state.json"), "w") as f:
                json.dump(state, f)
            if self.ema is not None:
                save_file({str(i): t.detach().cpu().contiguous() for i, t in enumerate(self.ema)},
                          os.path.join(partial, "ema.safetensors"))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
            for old in rotated_out(self.checkpoints(), self.config.keep_checkpoints, self.config.keep_every):
                shutil.rmtree(old, ignore_errors=True)
        self._saved_at = time.monotonic()
        self.accelerator.wait_for_everyone()
        return final

    # -- training ---------------------------------------------------------------------------------------
    def _frame_posterior(self, key: str, frame: torch.Tensor) -> torch.Tensor:
        """The VAE posterior parameters of one frame, from output_dir/latent_cache when present."""
        path = os.path.join(self.config.output_dir, "latent_cache",
                            hashlib.sha1(key.encode()).hexdigest() + ".safetensors")
        if os.path.exists(path):
            return load_file(path)["parameters"].to(frame.device)
        parameters = self.vae.encode(frame[None]).latent_dist.parameters[0]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_file_atomic({"parameters": parameters.detach().cpu().contiguous()}, path)
        return parameters

    def encode(self, batch, generator):
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
        device = self.accelerator.device
        with torch.no_grad():
            pixels = batch["pixels"].to(device)
            b, t = pixels.shape[:2]
            frames = pixels.flatten(0, 1)
            if self.config.cache_latents:
                posterior = DiagonalGaussianDistribution(torch.stack(
                    [self._frame_posterior(key, frame) for key, frame in zip(batch["keys"], frames)]))
            else:
                posterior = self.vae.encode(frames).latent_dist
            latents = posterior.sample(generator) * self.vae.config.scaling_factor
            grid = pack(latents.view(b, t, *latents.shape[1:]), self.rows, self.cols)
            captions = batch["captions"]
            if self.config.caption_dropout > 0:  # drawn only when on, so runs without it keep their noise
                dropped = torch.rand(len(captions), generator=generator, device=device) < self.config.caption_dropout
                captions = ["" if drop else caption for caption, drop in zip(captions, dropped.tolist())]
            text = torch.stack([self.caption_embedding(caption) for caption in captions])
        return grid, text

    def caption_embedding(self, caption: str) -> torch.Tensor:
        """The frozen text encoder's output for one caption, kept for the TEXT_CACHE most recent captions.
        Encoded alone, so the result does not depend on which captions share a batch (resume and
        multi-process runs stay bit-equal to a single uninterrupted one)."""
        if caption not in self._text_cache:
            tokens = self.tokenizer([caption], padding="max_length", truncation=True,
                                    max_length=self.tokenizer.model_max_length, return_tensors="pt")
            self._text_cache[caption] = self.text_encoder(tokens.input_ids.to(self.accelerator.device))[0][0]
            if len(self._text_cache) > TEXT_CACHE:
                self._text_cache.popitem(last=False)
        self._text_cache.move_to_end(caption)
        return self._text_cache[caption]

    def loss(self, batch, generator):
        """The diffusion loss of one batch, with noise and timesteps drawn from ``generator``."""
        grid, text = self.encode(batch, generator)
        noise = torch.randn(grid.shape, generator=generator, device=grid.device)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (grid.shape[0],),
                                  generator=generator, device=grid.device)
        noisy = self.noise_scheduler.add_noise(grid, noise, timesteps)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(grid, noise, timesteps)
        else:
            target = noise
        self.accelerator.unwrap_model(self.unet).time_embedding.fps = batch["fps"].to(grid.device)
        dtype = next(self.unet.parameters()).dtype  # bf16/fp16 under DeepSpeed, which casts the model itself
        prediction = self.unet(noisy.to(dtype), timesteps, text.to(dtype)).sample
        return F.mse_loss(prediction.float(), target.float())

    def _slot(self, micro: int) -> int:
        """The micro-batch's place among the ``accumulation * processes`` micro-batches of one step. Data,
        noise and timesteps depend on (seed, step, slot) only, so N processes with A accumulation steps
        see what one process with N*A accumulation steps sees."""
        return micro * self.accelerator.num_processes + self.accelerator.process_index

    def _generator(self, step: int, slot: int):
        seed = (self.config.seed * 1_000_003 + step) * 4_099 + slot
        return torch.Generator(self.accelerator.device).manual_seed(seed)

    def _batch_indices(self, slot: int):
        per_step = self.config.gradient_accumulation_steps * self.accelerator.num_processes
        first = (self.step * per_step + slot) * self.config.batch_size
        return range(first, first + self.config.batch_size)

    def train(self, progress=None, should_stop=lambda: False):
        """Run to ``max_steps``; returns the losses of this call's steps."""
        losses = []
        self.unet.train()
        while self.step < self.config.max_steps:
            step_loss = 0.0
            for micro in range(self.config.gradient_accumulation_steps):
                with self.accelerator.accumulate(self.unet):
                    slot = self._slot(micro)
                    loss = self.loss(self.data.batch(self._batch_indices(slot)), self._generator(self.step, slot))
                    self.accelerator.backward(loss)
                    self.optimizer.step()
                    self.schedule.step()
                    self.optimizer.zero_grad()
                step_loss += loss.detach() / self.config.gradient_accumulation_steps
            if self.ema is not None:
                with torch.no_grad():
                    torch._foreach_lerp_(self.ema, [p.detach().float() for p in self._trainable],
                                         1 - self.config.ema_decay)
            self.step += 1
            # One collective per step: the loss over all ranks, whether any rank was told to stop (a SIGTERM
            # reaches the ranks at different moments; they must checkpoint and stop at one step) and whether
            # any rank's clock says a time-based checkpoint is due.
            minutes = self.config.checkpoint_minutes
            due = minutes > 0 and time.monotonic() - self._saved_at >= minutes * 60
            local = torch.tensor([step_loss.float(), float(should_stop()), float(due)], device=step_loss.device)
            mean_loss, stop_share, due_share = self.accelerator.reduce(local, "mean").tolist()
            losses.append(mean_loss)
            self.losses.append(mean_loss)
            stop = stop_share > 0
            if progress and self.accelerator.is_main_process:
                progress(self.step, self.config.max_steps, losses[-1])
            if self.step % self.config.checkpoint_every == 0 or stop or due_share > 0:
                self.save_checkpoint()
            if stop:
                break
        return losses

    def export(self) -> str:
        """``final/unet`` (diffusers), ``final/etc_unet_comfyui.safetensors`` (for ComfyUI's models/unet,
        when the UNet has the SD layout) and ``final/etc_fps.safetensors``; returns the folder. A LoRA run
        writes ``final/etc_lora_diffusers.safetensors`` (peft names) and, for the SD layout,
        ``final/etc_lora_comfyui.safetensors`` (ComfyUI's models/loras) instead of the UNet."""
        folder = os.path.join(self.config.output_dir, "final")
        unet = self.accelerator.unwrap_model(self.unet)
        live = None
        if self.ema is not None:  # export the EMA weights, then put the live ones back
            live = [p.detach().clone() for p in self._trainable]
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self._trainable], self.ema)
        if self.accelerator.is_main_process:
            conv, temb = unet.conv_in, unet.time_embedding
            unet.conv_in, unet.time_embedding = conv.wrapped, temb.wrapped
            sd_layout = len(unet.config.block_out_channels) == 4 and unet.config.layers_per_block == 2
            try:
                if self.config.lora_rank:
                    self._export_lora(unet, folder, sd_layout)
                else:
                    unet.save_pretrained(os.path.join(folder, "unet"))
                    if sd_layout:
                        save_comfyui_unet(os.path.join(folder, "etc_unet_comfyui.safetensors"), unet)
            finally:
                unet.conv_in, unet.time_embedding = conv, temb
            save_fps_module(os.path.join(folder, "etc_fps.safetensors"), self.fps_module,
                            frames=self.config.frames, layout=f"{self.rows}x{self.cols}", theta=self.config.theta,
                            base_model=self.base_model)
        if live is not None:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self._trainable], live)
        return folder


    def _export_lora(self, unet, folder: str, sd_layout: bool):
        from peft.utils import get_peft_model_state_dict
        os.makedirs(folder, exist_ok=True)
        lora = {k: v.detach().float().contiguous().cpu() for k, v in get_peft_model_state_dict(unet).items()}
        save_file(lora, os.path.join(folder, "etc_lora_diffusers.safetensors"))
        if sd_layout:
            save_file(comfyui_lora(unet, self.config.lora_alpha or self.config.lora_rank),
                      os.path.join(folder, "etc_lora_comfyui.safetensors"))
