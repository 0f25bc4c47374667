"""ETC fine-tuning (section 4.2, appendix E.2): the training loop. Around it: the checks before a run
(``preflight.py``), its folder (``run_folder.py``), checkpoints (``run_checkpoints.py``), the export
(``export.py``) and the command line ``python -m etc_core.train --config FILE [--resume]`` (``command.py``).

The UNet (or, with ``lora_rank``, LoRA adapters on its attention projections) and the FPS module train;
the VAE and the text encoder are frozen. Frames are packed into one grid (eq. 1), the mixed embedding is
added to the UNet input and the FPS embedding to the timestep embedding, with the same modules as inference.
The loss target follows the base model's prediction type.

One process (the ComfyUI node, the demo, a notebook) or several from a terminal: multi-GPU and multi-node
runs are ``accelerate launch ... -m etc_core.train --config FILE`` (DeepSpeed ZeRO-2 with CPU offload:
``configs/accelerate_deepspeed_zero2.yaml``); ``launch_line.py`` writes the config and the line.
Checkpoints are written every ``checkpoint_every`` steps and every ``checkpoint_minutes``; ``--resume``
restores model, optimizer, scheduler and RNG state and the data position (samples are a function of
(seed, index)), so a resumed run ends as an uninterrupted one.
"""
import collections
import hashlib
import os
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..data.sources import TripleData
from ..files.atomic import save_file_atomic, write_text_atomic
from ..fps_embedding import FPSConditionedTimeEmbedding, FPSEmbedding, base_model_fingerprint
from ..grid import pack, parse_layout
from ..mixed_embedding import MixedEmbeddingInput
from .config import ConfigError, TrainConfig, lr_factor
from .export import write_final
from .preflight import check_run
from .pretrained import load_models
from .run_checkpoints import RunCheckpoints
from .run_folder import SKIPPED_FILES, claim_output_dir
from .timesteps import sample_timesteps


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
        self.saved = RunCheckpoints(config, self.accelerator)
        state = self.saved.load_latest(self._parts(), self.ema) if resume else None
        if state is not None:
            self.step, self.losses = state["step"], list(state.get("losses", []))

    def _parts(self):
        """What a checkpoint holds besides the EMA (``checkpoint.save_state``'s arguments)."""
        return (self.accelerator.unwrap_model(self.unet), self.optimizer, self.schedule, self.accelerator.scaler,
                self.accelerator.process_index)

    def save_checkpoint(self) -> str:
        folder = self.saved.save(self.step, self._parts(), self.ema, {"base_model": self.base_model,
                                                                       "losses": self.losses})
        self._saved_at = time.monotonic()
        return folder

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
        timesteps = sample_timesteps(self.config.timestep_sampling, grid.shape[0],
                                     self.noise_scheduler.config.num_train_timesteps, generator, grid.device)
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
        """The run's ``final/`` folder (``export.write_final``), with the EMA weights when the run keeps them;
        returns the folder."""
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
            try:
                write_final(folder, unet, self.fps_module, self.config, f"{self.rows}x{self.cols}", self.base_model)
            finally:
                unet.conv_in, unet.time_embedding = conv, temb
        if live is not None:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self._trainable], live)
        return folder
