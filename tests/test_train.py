"""ETC trainer on a tiny Stable-Diffusion-layout model and synthetic triple data (CPU)."""
import json

import numpy as np
import pytest
import torch

from etc_core.data import TripleData, video_frame_indices
from etc_core.train import ETCTrainer, TrainConfig, main as train_main
from etc_core import load_fps_module
from tiny_diffusers import write_synthetic_data, write_tiny_sd


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return str(write_tiny_sd(str(root / "sd"))), write_synthetic_data(str(root / "data"))


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
    trainer = ETCTrainer(_config(setup, tmp_path, max_steps=40, checkpoint_every=1000, lr=2e-3))
    fixed = trainer.data.batch(range(1000, 1004))

    def eval_loss():
        trainer.unet.eval()
        with torch.no_grad():
            value = sum(float(trainer.loss(fixed, trainer._generator(10**6, k, 0))) for k in range(4)) / 4
        trainer.unet.train()
        return value

    before = eval_loss()
    trainer.train()
    assert eval_loss() < 0.8 * before


def test_killed_and_resumed_run_ends_equal_to_uninterrupted(setup, tmp_path):
    straight = ETCTrainer(_config(setup, tmp_path / "a"))
    straight.train()

    first = ETCTrainer(_config(setup, tmp_path / "b"))
    first.train(should_stop=lambda: first.step == 3)  # "killed" after the step-3 checkpoint
    assert [p.rsplit("-", 1)[1] for p in first.checkpoints()] == ["3"]
    resumed = ETCTrainer(_config(setup, tmp_path / "b"), resume=True)
    assert resumed.step == 3
    resumed.train()
    a, b = straight.unet.state_dict(), resumed.unet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], ETCTrainer(_config(setup, tmp_path / "c")).unet.state_dict()[k]) for k in a)


def test_output_dir_of_another_run_is_refused(setup, tmp_path):
    ETCTrainer(_config(setup, tmp_path)).train()
    with pytest.raises(ValueError, match="holds a different run"):
        ETCTrainer(_config(setup, tmp_path, lr=5e-4))
    with pytest.raises(ValueError, match="pass --resume"):
        ETCTrainer(_config(setup, tmp_path))


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


def _trainer_node(setup, out, **overrides):
    pretrained, data = setup
    inputs = dict(pretrained=pretrained, output_dir=str(out), frames=4, layout="2x2", resolution=32, lr=1e-3,
                  batch_size=1, gradient_accumulation_steps=1, max_steps=3, checkpoint_every=2, mixed_precision="no",
                  gradient_checkpointing=False, seed=3, resume=False, num_processes=1, **data)
    inputs.update(overrides)
    return {"train": {"class_type": "ETCTrainer", "inputs": inputs},
            "save": {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": f"curve_{out.name}",
                                                                        "image": ["train", 1]}}}


def test_trainer_node_runs_accelerate_and_returns_export_and_loss_curve(comfy_server, setup, tmp_path):
    from safetensors.torch import load_file
    outputs = comfy_server.run(_trainer_node(setup, tmp_path / "node_run"), timeout=900)
    assert outputs["train"]["text"][0].startswith("3 steps -> ")
    assert outputs["train"]["text"][0].endswith("node_run/final")
    curve = load_file(comfy_server.output_path("curve_node_run.safetensors"))["image"]
    assert curve.shape == (1, 320, 640, 3) and curve.min() < 0.5  # a line was drawn
    load_fps_module(str(tmp_path / "node_run" / "final" / "etc_fps.safetensors"))
    with pytest.raises(Exception, match="holds a different run"):
        comfy_server.run(_trainer_node(setup, tmp_path / "node_run", lr=5e-4, max_steps=4))


def test_cancelling_the_prompt_stops_training_with_a_resumable_checkpoint(comfy_server, setup, tmp_path):
    import time
    import urllib.request
    out = tmp_path / "cancel_run"
    prompt_id = comfy_server.queue(_trainer_node(setup, out, max_steps=100000, checkpoint_every=100000))
    deadline = time.time() + 300
    while not list(out.glob("launch_config.json")) and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(8)  # let it take a few steps
    urllib.request.urlopen(urllib.request.Request(comfy_server.url + "/interrupt", data=b"", method="POST"))
    history = {}
    while prompt_id not in history and time.time() < deadline:
        time.sleep(0.5)
        history = comfy_server.get(f"/history/{prompt_id}")
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and not checkpoints[0].name.endswith(".partial")
    stopped_at = int(checkpoints[0].name.split("-")[1])
    assert 0 < stopped_at < 100000
    resumed = ETCTrainer(TrainConfig.from_file(str(out / "launch_config.json")), resume=True)
    assert resumed.step == stopped_at


def test_exported_unet_loads_in_comfyui_and_samples_with_etc_nodes(comfy_server, tmp_path):
    import shutil

    from safetensors.torch import load_file
    from tiny_diffusers import write_synthetic_data, write_tiny_sd
    pretrained = write_tiny_sd(str(tmp_path / "sd"), sd_layout=True)
    data = write_synthetic_data(str(tmp_path / "data"))
    config = TrainConfig(pretrained=pretrained, output_dir=str(tmp_path / "run"), frames=4, layout="2x2",
                         resolution=32, max_steps=1, checkpoint_every=10, **data)
    trainer = ETCTrainer(config)
    trainer.train()
    final = trainer.export()
    shutil.copy(f"{final}/etc_unet_comfyui.safetensors", f"{comfy_server.base}/models/unet/etc_trained.safetensors")
    shutil.copy(f"{final}/etc_fps.safetensors", f"{comfy_server.base}/models/etc/etc_trained_fps.safetensors")
    loader_inputs = {"unet_name": "etc_trained.safetensors"}
    if "weight_dtype" in comfy_server.get("/object_info/UNETLoader")["UNETLoader"]["input"]["required"]:
        loader_inputs["weight_dtype"] = "default"
    g = {"unet": {"class_type": "UNETLoader", "inputs": loader_inputs},
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
    straight = ETCTrainer(_config(setup, tmp_path / "a", **options))
    straight.train()
    assert list((tmp_path / "a" / "latent_cache").glob("*.safetensors"))
    first = ETCTrainer(_config(setup, tmp_path / "b", **options))
    first.train(should_stop=lambda: first.step == 3)
    resumed = ETCTrainer(_config(setup, tmp_path / "b", **options), resume=True)
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
