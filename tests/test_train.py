"""ETC trainer on a tiny Stable-Diffusion-layout model and synthetic triple data (CPU)."""
import json
import math
import os
import time

import numpy as np
import pytest
import torch

from etc_core.data import TripleData, video_frame_indices
from etc_core.train import Trainer, TrainConfig, main as train_main
from etc_core import load_fps_module
from etc_vcut_dev.accelerate_launch import assert_same_run, final_weights


def _config(setup, out, **overrides):
    pretrained, data = setup
    values = dict(pretrained=pretrained, output_dir=str(out), frames=4, layout="2x2", resolution=32, lr=1e-3,
                  max_steps=6, checkpoint_every=3, seed=3, **data)
    values.update(overrides)
    return TrainConfig(**values)


def test_fps_sampling_never_exceeds_the_clip_rate():
    rng = np.random.default_rng(0)
    for clip_fps, total in ((24.0, 200), (8.0, 40), (60.0, 1000)):
        for _ in range(50):
            indices, fps = video_frame_indices(clip_fps, total, 16, rng)
            assert fps <= clip_fps and fps in (1, 2, 4, 8, 15, 30, 60)
            assert len(indices) == 16 and max(indices) < total and indices == sorted(indices)


def test_triple_data_kinds_and_fps(setup):
    _, data = setup
    triple = TripleData(4, 32, seed=1, **data)
    kinds = {}
    for i in range(30):
        s = triple.sample(i)
        assert s["pixels"].shape == (4, 3, 32, 32) and s["pixels"].min() >= -1 and s["pixels"].max() <= 1
        kinds.setdefault(s["kind"], set()).add(s["fps"])
        if s["kind"] == "image":
            assert torch.equal(s["pixels"][0], s["pixels"][3])
        if s["kind"] == "label":
            assert not torch.equal(s["pixels"][0], s["pixels"][1])
    assert kinds["image"] == {120.0} and kinds["label"] == {0.0} and kinds["video"] <= {1.0, 2.0, 4.0, 8.0, 15.0}
    assert torch.equal(triple.sample(7)["pixels"], TripleData(4, 32, seed=1, **data).sample(7)["pixels"])


def test_loss_falls(setup, tmp_path):
    trainer = Trainer(_config(setup, tmp_path, max_steps=40, checkpoint_every=1000, lr=2e-3))
    fixed = trainer.data.batch(range(1000, 1004))

    def eval_loss():
        trainer.unet.eval()
        with torch.no_grad():
            value = sum(float(trainer.loss(fixed, trainer._generator(10**6, k))) for k in range(4)) / 4
        trainer.unet.train()
        return value

    before = eval_loss()
    trainer.train()
    assert eval_loss() < 0.8 * before


def test_caption_dropout_trains_some_samples_on_the_empty_caption(setup, tmp_path):
    captions = []
    trainer = Trainer(_config(setup, tmp_path, caption_dropout=0.5))
    trainer.caption_embedding = lambda caption: captions.append(caption) or torch.zeros(77, 8)
    batch = trainer.data.batch(range(64))
    trainer.encode(batch, trainer._generator(0, 0))
    assert 16 < captions.count("") < 48 and all(c in ("", b) for c, b in zip(captions, batch["captions"]))
    again = []
    trainer.caption_embedding = lambda caption: again.append(caption) or torch.zeros(77, 8)
    trainer.encode(batch, trainer._generator(0, 0))
    assert again == captions  # drawn from the step's generator: resume and multi-process see the same


def test_caption_embeddings_are_cached_and_equal_the_encoder_output(setup, tmp_path):
    trainer = Trainer(_config(setup, tmp_path))
    calls = []
    encoder = trainer.text_encoder
    trainer.text_encoder = lambda ids: calls.append(ids) or encoder(ids)
    first = trainer.caption_embedding("a red ball")
    assert torch.equal(trainer.caption_embedding("a red ball"), first) and len(calls) == 1
    ids = trainer.tokenizer(["a red ball"], padding="max_length", max_length=trainer.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(encoder(ids)[0][0], first)


def test_me_strength_zero_adds_no_mixed_embedding(setup, tmp_path):
    trainer = Trainer(_config(setup, tmp_path, me_strength=0.0))
    conv = trainer.unet.conv_in
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(conv(x), conv.conv(x))
    assert not torch.equal(Trainer(_config(setup, tmp_path / "b")).unet.conv_in(x), conv.conv(x))


def test_trainers_of_other_precisions_follow_each_other_in_one_process(setup, tmp_path):
    """accelerate's per-process state would refuse the second trainer (the demo trains bf16 before the
    other tests' fp32 runs in CI's pytest process)."""
    for index, precision in enumerate(("bf16", "no")):
        trainer = Trainer(_config(setup, tmp_path / precision, mixed_precision=precision, max_steps=1))
        assert trainer.accelerator.mixed_precision == precision
        assert len(trainer.train()) == 1


def test_learning_rate_warms_up_then_follows_the_cosine_to_zero_also_across_a_resume(setup, tmp_path):
    """lr of each optimizer step: (s + 1) / warmup * lr during the warm-up, then lr * (1 + cos(pi * p)) / 2 with
    p the share of the remaining steps done; a resumed run continues the schedule where it stopped."""
    import math
    config = dict(lr=1e-3, lr_schedule="cosine", lr_warmup_steps=2, max_steps=6)
    expected = [0.5e-3, 1e-3] + [0.5e-3 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    seen = []
    trainer = Trainer(_config(setup, tmp_path / "a", **config))
    trainer.train(progress=lambda *_: seen.append(trainer.optimizer.param_groups[0]["lr"]),
                  should_stop=lambda: trainer.step == 3)
    resumed = Trainer(_config(setup, tmp_path / "a", **config), resume=True)
    resumed.train(progress=lambda *_: seen.append(resumed.optimizer.param_groups[0]["lr"]))
    # the lr an optimizer step used is the one before the scheduler stepped after it
    used = [expected[0]] + seen[:-1]
    assert used == pytest.approx(expected) and seen[-1] == pytest.approx(0.0, abs=1e-12)


def test_uniform_timesteps_are_the_old_draw_and_ramp_ones_follow_the_linear_density():
    """uniform: torch.randint's draw, unchanged (runs and the demo's model stay reproducible); ramp: the CDF
    P(t <= k) = (k + 1)^2 / T^2 of P(t) = (2t + 1) / T^2, within 4 standard errors over 400k draws."""
    from etc_core.train.timesteps import sample_timesteps
    seed, n, T = 7, 400_000, 1000
    assert torch.equal(sample_timesteps("uniform", n, T, torch.Generator().manual_seed(seed), "cpu"),
                       torch.randint(0, T, (n,), generator=torch.Generator().manual_seed(seed)))
    ramp = sample_timesteps("ramp", n, T, torch.Generator().manual_seed(seed), "cpu")
    assert ramp.dtype == torch.int64 and 0 <= int(ramp.min()) and int(ramp.max()) <= T - 1
    for k in (0, 99, 249, 499, 749, 899, 998):
        expected = (k + 1) ** 2 / T ** 2
        tolerance = 4 * math.sqrt(expected * (1 - expected) / n) + 1e-6
        assert abs(float((ramp <= k).double().mean()) - expected) <= tolerance, k
    assert float((ramp >= T // 2).double().mean()) == pytest.approx(0.75, abs=0.003)


def test_the_trainer_draws_the_configured_timesteps(setup, tmp_path, monkeypatch):
    from etc_core.train import trainer as trainer_module
    original, drawn = trainer_module.sample_timesteps, []

    def recording(kind, *args):
        drawn.append(kind)
        return original(kind, *args)
    monkeypatch.setattr(trainer_module, "sample_timesteps", recording)
    for kind in ("ramp", "uniform"):
        Trainer(_config(setup, tmp_path / kind, timestep_sampling=kind, max_steps=2)).train()
    assert drawn == ["ramp"] * 2 + ["uniform"] * 2


def test_killed_and_resumed_run_ends_equal_to_uninterrupted(setup, tmp_path):
    straight = Trainer(_config(setup, tmp_path / "a"))
    straight.train()

    first = Trainer(_config(setup, tmp_path / "b"))
    first.train(should_stop=lambda: first.step == 3)  # "killed" after the step-3 checkpoint
    assert [p.rsplit("-", 1)[1] for p in first.saved.paths()] == ["3"]
    resumed = Trainer(_config(setup, tmp_path / "b"), resume=True)
    assert resumed.step == 3
    resumed.train()
    a, b = straight.unet.state_dict(), resumed.unet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], Trainer(_config(setup, tmp_path / "c")).unet.state_dict()[k]) for k in a)


def test_output_dir_of_another_run_is_refused(setup, tmp_path):
    Trainer(_config(setup, tmp_path)).train()
    with pytest.raises(ValueError, match="holds a different run"):
        Trainer(_config(setup, tmp_path, lr=5e-4))
    with pytest.raises(ValueError, match="turn resume on"):
        Trainer(_config(setup, tmp_path))


def test_cli_trains_and_exports(setup, tmp_path, capsys):
    config = _config(setup, tmp_path / "run", max_steps=2, checkpoint_every=2)
    path = tmp_path / "config.json"
    values = {k: v for k, v in config.__dict__.items()}
    path.write_text(json.dumps(values))
    assert train_main(["--config", str(path)]) == 0
    final = capsys.readouterr().out.strip()
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(f"{final}/unet")
    module, meta = load_fps_module(f"{final}/etc_fps.safetensors")
    assert meta["layout"] == "2x2" and meta["frames"] == "4"
    assert not torch.equal(module.mlp[-1].weight, torch.zeros_like(module.mlp[-1].weight))  # it trained
    assert unet.conv_in.weight.shape[0] == 32


def test_exported_unet_loads_in_comfyui_and_samples_with_etc_nodes(comfy_server, tmp_path):
    import shutil

    from safetensors.torch import load_file
    from etc_vcut_dev.tiny_diffusers import write_synthetic_data, write_tiny_sd
    pretrained = write_tiny_sd(str(tmp_path / "sd"), sd_layout=True)
    data = write_synthetic_data(str(tmp_path / "data"))
    config = TrainConfig(pretrained=pretrained, output_dir=str(tmp_path / "run"), frames=4, layout="2x2",
                         resolution=32, max_steps=1, checkpoint_every=10, **data)
    trainer = Trainer(config)
    trainer.train()
    final = trainer.export()
    shutil.copy(f"{final}/etc_unet_comfyui.safetensors", f"{comfy_server.base}/models/unet/etc_trained.safetensors")
    shutil.copy(f"{final}/etc_fps.safetensors", f"{comfy_server.base}/models/etc/etc_trained_fps.safetensors")
    g = {"unet": comfy_server.unet_loader("etc_trained.safetensors"),
         "vae": {"class_type": "ETCVCUTTestTinySD2", "inputs": {"seed": 0}},
         "pos": {"class_type": "ETCVCUTTestRandomConditioning", "inputs": {"seed": 1, "dim": 1024, "tokens": 77}},
         "neg": {"class_type": "ETCVCUTTestRandomConditioning", "inputs": {"seed": 2, "dim": 1024, "tokens": 77}},
         "etc": {"class_type": "ETCSampler", "inputs": {
             "model": ["unet", 0], "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 2], "frames": 4,
             "layout": "2x2", "frame_width": 32, "frame_height": 32, "batch_size": 1, "seed": 0, "steps": 2,
             "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "theta": 10000.0, "me_strength": 1.0,
             "fps": 8, "fps_weights": "etc_trained_fps.safetensors"}},
         "save": {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": "trained_etc", "image": ["etc", 0]}}}
    comfy_server.run(g)
    image = load_file(comfy_server.output_path("trained_etc.safetensors"))["image"]
    assert image.shape == (4, 32, 32, 3) and torch.isfinite(image).all()


def test_cached_latents_and_ema_resume_exactly_and_export_the_ema(setup, tmp_path):
    from diffusers import UNet2DConditionModel
    options = dict(cache_latents=True, ema_decay=0.9)
    straight = Trainer(_config(setup, tmp_path / "a", **options))
    straight.train()
    assert list((tmp_path / "a" / "latent_cache").glob("*.safetensors"))
    first = Trainer(_config(setup, tmp_path / "b", **options))
    first.train(should_stop=lambda: first.step == 3)
    resumed = Trainer(_config(setup, tmp_path / "b", **options), resume=True)
    resumed.train()
    assert all(torch.equal(x, y) for x, y in zip(straight.ema, resumed.ema))
    a, b = straight.unet.state_dict(), resumed.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    names = [n for n, p in straight.unet.named_parameters() if p.requires_grad]
    index = names.index("conv_in.conv.weight")
    live = straight._trainable[index].detach().clone()
    assert not torch.equal(straight.ema[index], live)
    exported = UNet2DConditionModel.from_pretrained(f"{straight.export()}/unet")
    assert torch.equal(exported.conv_in.weight, straight.ema[index])
    assert torch.equal(straight._trainable[index], live)  # live weights are back after the export


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def accumulated_reference(setup, tmp_path_factory):
    """One process, one thread, 2 accumulation steps: the run that 2 data-parallel processes reproduce."""
    out = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(_config(setup, out, gradient_accumulation_steps=2, checkpoint_every=6))
        losses = trainer.train()
    finally:
        torch.set_num_threads(threads)
    return losses, final_weights(out)


@pytest.fixture
def one_thread_per_process(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # accelerate keeps it; torch reads it in each process


def test_two_processes_through_the_launcher_equal_one_process_with_accumulation(setup, tmp_path, accumulated_reference,
                                                                                one_thread_per_process):
    """A real data-parallel run (accelerate launch --multi_gpu, torch.distributed over gloo on the CPU),
    stopped by SIGTERM part way and resumed: gradients are averaged across the ranks, both ranks stop
    at the same step with one checkpoint, and the run ends where one process with 2 accumulation steps does."""
    from etc_vcut_dev.accelerate_launch import TrainingProcess
    config = _config(setup, tmp_path / "ddp", checkpoint_every=6).__dict__
    run = TrainingProcess(config, num_processes=2)
    while run.running() and run.step < 2:
        time.sleep(0.05)
    assert run.running(), "\n".join(run.log[-20:])
    run.stop()
    checkpoints = sorted((tmp_path / "ddp").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and not checkpoints[0].name.endswith(".partial"), run.log[-20:]
    stopped = int(checkpoints[0].name.split("-")[1])
    assert 2 <= stopped < 6
    assert sorted(p.name for p in checkpoints[0].glob("rng_*")) == ["rng_0.safetensors", "rng_1.safetensors"]
    with pytest.raises(ValueError, match="written by 2 processes and this launch has 1"):
        Trainer(TrainConfig(**config), resume=True)
    resumed = TrainingProcess(config, resume=True, num_processes=2)
    assert resumed.wait().endswith("ddp/final"), resumed.log[-20:]
    assert_same_run(accumulated_reference, run.losses[:stopped] + resumed.losses, tmp_path / "ddp")


def test_two_machines_from_accelerate_config_files(setup, tmp_path, accumulated_reference, one_thread_per_process):
    """Multi-node: two launches with accelerate config files (num_machines 2, machine_rank 0 and 1, one
    process each) meet over TCP on the loopback and train as one run."""
    from etc_vcut_dev.accelerate_launch import TrainingProcess
    port = _free_port()
    config = _config(setup, tmp_path / "nodes", checkpoint_every=6).__dict__
    runs = []
    for rank in (0, 1):
        yaml = tmp_path / f"machine{rank}.yaml"
        yaml.write_text(f"compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_machines: 2\n"
                        f"num_processes: 2\nmachine_rank: {rank}\nmain_process_ip: 127.0.0.1\n"
                        f"main_process_port: {port}\nmixed_precision: 'no'\nuse_cpu: false\n")
        runs.append(TrainingProcess(config, num_processes=1, accelerate_config=str(yaml)))
    assert runs[0].wait().endswith("nodes/final"), runs[0].log[-20:]
    assert runs[1].wait() == "", runs[1].log[-20:]  # only the main process exports
    assert runs[1].losses == []  # and reports progress
    assert_same_run(accumulated_reference, runs[0].losses, tmp_path / "nodes")


def test_deepspeed_zero2_offload_from_the_repository_config(setup, tmp_path, one_thread_per_process):
    """The repository's accelerate + DeepSpeed ZeRO-2 CPU-offload config (process count set to 2, as a
    user sets it to their GPUs), bf16 as in the paper: the optimizer state is split over the two ranks,
    a run stopped by SIGTERM and resumed ends bit-equal to an uninterrupted one, and the export loads."""
    deepspeed = pytest.importorskip("deepspeed")
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file
    from etc_vcut_dev.accelerate_launch import TrainingProcess
    launch = dict(deepspeed=True, num_processes=2)  # the line ETCTrainCommand gives with deepspeed on
    straight_config = _config(setup, tmp_path / "straight", mixed_precision="bf16", max_steps=4,
                              checkpoint_every=4).__dict__
    straight = TrainingProcess(straight_config, **launch)
    final = straight.wait()

    state = torch.load(tmp_path / "straight" / "checkpoint-4" / "pytorch_model" /
                       "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt", weights_only=False)
    assert state["ds_version"] == deepspeed.__version__
    assert int(state["optimizer_state_dict"]["zero_stage"]) == 2
    assert state["optimizer_state_dict"]["partition_count"] == [2]
    assert state["ds_config"]["zero_optimization"]["offload_optimizer"]["device"] == "cpu"

    config = dict(straight_config, output_dir=str(tmp_path / "resumed"))
    first = TrainingProcess(config, **launch)
    while first.running() and first.step < 1:
        time.sleep(0.05)
    first.stop()
    stopped = [int(p.name.split("-")[1]) for p in (tmp_path / "resumed").glob("checkpoint-*")]
    assert len(stopped) == 1 and 1 <= stopped[0] < 4, first.log[-20:]
    resumed = TrainingProcess(config, resume=True, **launch)
    resumed.wait()
    assert first.losses[:stopped[0]] + resumed.losses == straight.losses
    a = load_file(f"{final}/unet/diffusion_pytorch_model.safetensors")
    b = load_file(str(tmp_path / "resumed" / "final" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert {t.dtype for t in a.values()} == {torch.bfloat16}  # DeepSpeed's bf16 engine trains bf16 weights
    unet = UNet2DConditionModel.from_pretrained(f"{final}/unet")
    assert all(torch.isfinite(p).all() for p in unet.parameters())
