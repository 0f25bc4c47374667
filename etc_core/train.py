"""ETC fine-tuning (section 4.2, appendix E.2): ``python -m etc_core.train --config FILE [--resume]``.

The UNet and the FPS module train; the VAE and the text encoder are frozen. Frames are packed into one
grid (eq. 1), the mixed embedding is added to the UNet input and the FPS embedding to the timestep
embedding, with the same modules as inference. The loss target follows the base model's prediction type.
Multi-GPU and multi-node runs go through ``accelerate launch`` (DeepSpeed ZeRO-2 with CPU offload:
``configs/accelerate_deepspeed_zero2.yaml``). Checkpoints are written atomically every
``checkpoint_every`` steps; ``--resume`` restores model, optimizer, scheduler and RNG state and the data
position (samples are a function of (seed, index)), so a resumed run ends as an uninterrupted one.
"""
import argparse
import dataclasses
import glob
import hashlib
import json
import os
import shutil
import signal
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .data import TripleData
from .export import save_comfyui_unet
from .fps_embedding import FPSConditionedTimeEmbedding, FPSEmbedding, base_model_fingerprint, save_fps_module
from .grid import pack, parse_layout
from .mixed_embedding import MixedEmbeddingInput
from .vae import load_vae


@dataclasses.dataclass
class TrainConfig:
    pretrained: str                      # local diffusers folder: unet/ vae/ text_encoder/ tokenizer/ scheduler/
    output_dir: str
    video_manifest: str = None
    image_manifest: str = None
    label_folder: str = None
    ratios: tuple = (1.0, 1.0, 1.0)      # video, image, label
    frames: int = 16
    layout: str = "auto"
    resolution: int = 256
    theta: float = 10000.0
    lr: float = 1e-4
    betas: tuple = (0.9, 0.9)
    weight_decay: float = 0.03
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_steps: int = 15000
    checkpoint_every: int = 500
    mixed_precision: str = "no"          # no | fp16 | bf16
    gradient_checkpointing: bool = False
    cache_latents: bool = False          # keep each frame's VAE posterior on disk (output_dir/latent_cache)
    ema_decay: float = 0.0               # 0: off; else the exported weights are the EMA
    seed: int = 0

    @classmethod
    def from_file(cls, path: str) -> "TrainConfig":
        with open(path) as f:
            values = json.load(f)
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(**values)

    def run_identity(self) -> dict:
        """What makes two runs the same run (the step budget and checkpoint cadence may change on resume)."""
        values = dataclasses.asdict(self)
        for key in ("max_steps", "checkpoint_every", "output_dir"):
            values.pop(key)
        return json.loads(json.dumps(values))


def load_models(pretrained: str):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    load = dict(local_files_only=True)
    return (UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet", **load),
            load_vae(os.path.join(pretrained, "vae")),
            CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", **load),
            CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", **load),
            DDPMScheduler.from_pretrained(pretrained, subfolder="scheduler", **load))


def make_accelerator(config: TrainConfig):
    """The run's Accelerator. On a machine without GPUs (tests, CI) launched processes talk over gloo: plain
    data parallel through accelerate's CPU mode (``ACCELERATE_USE_CPU``, set by the launcher), DeepSpeed with
    the gloo backend named (accelerate would otherwise run each DeepSpeed rank as a world of its own)."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs
    handlers = []
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if deepspeed and "LOCAL_RANK" in os.environ and not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "false"  # CPU mode would switch DeepSpeed off
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    return Accelerator(mixed_precision=config.mixed_precision,
                       gradient_accumulation_steps=config.gradient_accumulation_steps, kwargs_handlers=handlers)


class ETCTrainer:
    def __init__(self, config: TrainConfig, resume: bool = False):
        self.config = config
        self.accelerator = make_accelerator(config)
        self._claim_output_dir(resume)
        self.rows, self.cols = parse_layout(config.frames, config.layout)
        unet, self.vae, self.text_encoder, self.tokenizer, self.noise_scheduler = load_models(config.pretrained)
        self.base_model = base_model_fingerprint(unet)
        self.vae.requires_grad_(False).eval()
        self.text_encoder.requires_grad_(False).eval()
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        with torch.random.fork_rng(devices=[]):  # the new MLP's init depends on the seed alone
            torch.manual_seed(config.seed)
            self.fps_module = FPSEmbedding(unet.time_embedding.linear_2.out_features)
        unet.conv_in = MixedEmbeddingInput(unet.conv_in, self.rows, self.cols, config.theta)
        unet.time_embedding = FPSConditionedTimeEmbedding(unet.time_embedding, self.fps_module, fps=0.0)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, betas=tuple(config.betas),
                                      weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        deepspeed = self.accelerator.state.deepspeed_plugin
        if deepspeed is not None:  # no DataLoader here, so DeepSpeed's "auto" batch sizes come from the config
            deepspeed.deepspeed_config["train_micro_batch_size_per_gpu"] = config.batch_size
            deepspeed.deepspeed_config["train_batch_size"] = (config.batch_size * config.gradient_accumulation_steps
                                                              * self.accelerator.num_processes)
        self.unet, self.optimizer, self.schedule = self.accelerator.prepare(unet, optimizer, schedule)
        device = self.accelerator.device
        self.vae.to(device)
        self.text_encoder.to(device)
        self.data = TripleData(config.frames, config.resolution, config.video_manifest, config.image_manifest,
                               config.label_folder, config.ratios, config.seed)
        trainable = [p for p in self.accelerator.unwrap_model(self.unet).parameters() if p.requires_grad]
        # fp32 even when DeepSpeed trains bf16 weights: a bf16 lerp by (1 - decay) would round to no change
        self.ema = [p.detach().float().clone() for p in trainable] if config.ema_decay > 0 else None
        self._trainable = trainable
        self.step = 0
        if resume:
            self._load_latest()

    # -- run folder -------------------------------------------------------------------------------------
    def _claim_output_dir(self, resume: bool):
        path = os.path.join(self.config.output_dir, "run.json")
        identity = self.config.run_identity()
        if os.path.exists(path):
            with open(path) as f:
                existing = json.load(f)
            if existing != identity:
                raise ValueError(f"output_dir {self.config.output_dir} holds a different run (run.json differs); "
                                 "pick a new output_dir, or use the same config to resume")
            if not resume and glob.glob(os.path.join(self.config.output_dir, "checkpoint-*")):
                raise ValueError(f"output_dir {self.config.output_dir} already has checkpoints; pass --resume to "
                                 "continue that run, or pick a new output_dir")
        self.accelerator.wait_for_everyone()  # every rank has checked before the main one writes
        if self.accelerator.is_main_process:
            os.makedirs(self.config.output_dir, exist_ok=True)
            with open(path, "w") as f:
                json.dump(identity, f, indent=1)

    def checkpoints(self):
        found = glob.glob(os.path.join(self.config.output_dir, "checkpoint-*"))
        return sorted((p for p in found if not p.endswith(".partial")), key=lambda p: int(p.rsplit("-", 1)[1]))

    def _load_latest(self):
        checkpoints = self.checkpoints()
        if checkpoints:
            with open(os.path.join(checkpoints[-1], "trainer_state.json")) as f:
                state = json.load(f)
            processes = state.get("num_processes", 1)
            if processes != self.accelerator.num_processes:  # the data order and RNG states are per process
                raise ValueError(f"{checkpoints[-1]} was written by {processes} processes and this launch has "
                                 f"{self.accelerator.num_processes}; resume with the run's own launch "
                                 f"(num_processes {processes})")
            self.accelerator.load_state(checkpoints[-1])
            self.step = state["step"]
            if self.ema is not None:
                saved = load_file(os.path.join(checkpoints[-1], "ema.safetensors"))
                for i, tensor in enumerate(self.ema):
                    tensor.copy_(saved[str(i)])

    def save_checkpoint(self) -> str:
        final = os.path.join(self.config.output_dir, f"checkpoint-{self.step}")
        partial = final + ".partial"
        if self.accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(partial)
        self.accelerator.wait_for_everyone()  # every rank's RNG state is in before the folder is renamed
        if self.accelerator.is_main_process:
            with open(os.path.join(partial, "trainer_state.json"), "w") as f:
                json.dump({"step": self.step, "base_model": self.base_model,
                           "num_processes": self.accelerator.num_processes}, f)
            if self.ema is not None:
                save_file({str(i): t.detach().cpu().contiguous() for i, t in enumerate(self.ema)},
                          os.path.join(partial, "ema.safetensors"))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
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
        save_file({"parameters": parameters.detach().cpu().contiguous()}, path + ".partial")
        os.replace(path + ".partial", path)
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
            tokens = self.tokenizer(batch["captions"], padding="max_length", truncation=True,
                                    max_length=self.tokenizer.model_max_length, return_tensors="pt")
            text = self.text_encoder(tokens.input_ids.to(device))[0]
        return grid, text

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
            # One collective per step: the loss over all ranks, and whether any rank was told to stop (a
            # SIGTERM reaches the ranks at different moments; they must checkpoint and stop at one step).
            local = torch.stack([step_loss.float(), torch.tensor(float(should_stop()), device=step_loss.device)])
            mean_loss, stop_share = self.accelerator.reduce(local, "mean").tolist()
            losses.append(mean_loss)
            stop = stop_share > 0
            if progress and self.accelerator.is_main_process:
                progress(self.step, self.config.max_steps, losses[-1])
            if self.step % self.config.checkpoint_every == 0 or stop:
                self.save_checkpoint()
            if stop:
                break
        return losses

    def export(self) -> str:
        """``final/unet`` (diffusers), ``final/etc_unet_comfyui.safetensors`` (for ComfyUI's models/unet,
        when the UNet has the SD layout) and ``final/etc_fps.safetensors``; returns the folder."""
        folder = os.path.join(self.config.output_dir, "final")
        unet = self.accelerator.unwrap_model(self.unet)
        live = None
        if self.ema is not None:  # export the EMA weights, then put the live ones back
            live = [p.detach().clone() for p in self._trainable]
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self._trainable], self.ema)
        if self.accelerator.is_main_process:
            conv, temb = unet.conv_in, unet.time_embedding
            unet.conv_in, unet.time_embedding = conv.conv, temb.time_embed
            try:
                unet.save_pretrained(os.path.join(folder, "unet"))
                if len(unet.config.block_out_channels) == 4 and unet.config.layers_per_block == 2:
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON file with the TrainConfig fields")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    args = parser.parse_args(argv)
    stop = []
    # SIGTERM / Ctrl-C: finish the step, write a checkpoint, exit; --resume continues from it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    try:
        trainer = ETCTrainer(TrainConfig.from_file(args.config), resume=args.resume)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trainer.train(progress=lambda s, n, loss: print(f"step {s}/{n} loss {loss:.6f}", file=sys.stderr, flush=True),
                  should_stop=lambda: bool(stop))
    if trainer.step < trainer.config.max_steps:  # stopped by a signal, here or on another rank
        print(f"stopped at step {trainer.step}; checkpoint {trainer.checkpoints()[-1]}", file=sys.stderr)
        return 3
    folder = trainer.export()
    if trainer.accelerator.is_main_process:
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
