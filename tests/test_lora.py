"""LoRA training (peft) next to the full fine-tune: only the adapters and the FPS module train, a stopped and
resumed run ends bit-equal to an uninterrupted one, and the export loads with ComfyUI's stock
LoraLoaderModelOnly onto the SD 2.x checkpoint it was trained from and changes the ETC output."""
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from etc_core.train import Trainer, TrainConfig


def _config(setup, out, **overrides):
    pretrained, data = setup
    values = dict(pretrained=pretrained, output_dir=str(out), frames=4, layout="2x2", resolution=32, lr=1e-2,
                  max_steps=6, checkpoint_every=3, seed=3, lora_rank=4, lora_alpha=8.0, **data)
    values.update(overrides)
    return TrainConfig(**values)


def _lora_and_fps(trainer):
    return {n: p.detach().clone() for n, p in trainer.accelerator.unwrap_model(trainer.unet).named_parameters()
            if p.requires_grad}


def test_lora_trains_only_adapters_and_fps_and_resumes_bit_equal(setup, tmp_path):
    straight = Trainer(_config(setup, tmp_path / "a"))
    base = {n: p.detach().clone() for n, p in straight.unet.named_parameters() if not p.requires_grad}
    trained = _lora_and_fps(straight)
    assert trained and all(".lora_A." in n or ".lora_B." in n or "fps_module" in n for n in trained)
    assert any(".attn2.to_k.lora_A." in n for n in trained) and any("fps_module" in n for n in trained)
    straight.train()
    assert all(torch.equal(p, base[n]) for n, p in straight.unet.named_parameters() if not p.requires_grad)
    after = _lora_and_fps(straight)
    assert not all(torch.equal(after[n], trained[n]) for n in after if ".lora_B." in n)

    first = Trainer(_config(setup, tmp_path / "b"))
    first.train(should_stop=lambda: first.step == 3)
    resumed = Trainer(_config(setup, tmp_path / "b"), resume=True)
    assert resumed.step == 3
    resumed.train()
    again = _lora_and_fps(resumed)
    assert after.keys() == again.keys() and [n for n in after if not torch.equal(after[n], again[n])] == []


def _merged_unet_file(trainer, path):
    """The trained UNet with each LoRA merged into its weight by peft, in ComfyUI's UNet layout: what the stock
    LoRA loader must reproduce from the exported LoRA file."""
    from etc_core.train.export import unet_to_ldm
    unet = trainer.accelerator.unwrap_model(trainer.unet)
    adapters = [m for m in unet.modules() if hasattr(m, "merge") and hasattr(m, "lora_A")]
    with torch.no_grad():
        for module in adapters:
            module.merge()
        state = {k.replace(".base_layer", "").replace("conv_in.conv.", "conv_in.").replace(
            "time_embedding.time_embed.", "time_embedding."): v.detach().clone()
            for k, v in unet.state_dict().items() if ".lora_" not in k and ".fps_module." not in k}
        for module in adapters:
            module.unmerge()
    save_file({k: v.contiguous() for k, v in unet_to_ldm(state).items()}, path)


def _etc(loader, prefix, fps_weights, lora=None):
    model = ["unet", 0]
    g = {"unet": loader,
         "vae": {"class_type": "ETCVCUTTestTinySD2", "inputs": {"seed": 0}},
         "pos": {"class_type": "ETCVCUTTestRandomConditioning", "inputs": {"seed": 1, "dim": 1024, "tokens": 77}},
         "neg": {"class_type": "ETCVCUTTestRandomConditioning", "inputs": {"seed": 2, "dim": 1024, "tokens": 77}},
         "save": {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": prefix, "image": ["etc", 0]}}}
    if lora:
        g["lora"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": model, "lora_name": lora,
                                                                     "strength_model": 1.0}}
        model = ["lora", 0]
    g["etc"] = {"class_type": "ETCSampler", "inputs": {
        "model": model, "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 2], "frames": 4,
        "layout": "2x2", "frame_width": 32, "frame_height": 32, "batch_size": 1, "seed": 0, "steps": 2, "cfg": 5.0,
        "sampler_name": "euler", "scheduler": "normal", "theta": 10000.0, "me_strength": 1.0, "fps": 8,
        "fps_weights": fps_weights}}
    return g


def test_lora_export_loads_with_the_stock_lora_loader_onto_the_checkpoint(comfy_server, sd2_checkpoint, setup,
                                                                          tmp_path):
    """Trained from the single-file SD 2.x checkpoint; ComfyUI loads that checkpoint's UNet, applies the
    exported LoRA with LoraLoaderModelOnly (every key matched) and samples with the ETC nodes: the frames
    equal those of the UNet with the LoRA merged by peft, and differ from the base model's."""
    trainer = Trainer(_config((sd2_checkpoint[0], setup[1]), tmp_path / "run", max_steps=2, checkpoint_every=10,
                                 lr=5e-2))
    trainer.train()
    final = trainer.export()
    assert sorted(os.listdir(final)) == ["etc_fps.safetensors", "etc_lora_comfyui.safetensors",
                                         "etc_lora_diffusers.safetensors"]
    models = os.path.join(comfy_server.base, "models")
    base = {k[len("model.diffusion_model."):]: v for k, v in load_file(sd2_checkpoint[0]).items()
            if k.startswith("model.diffusion_model.")}
    save_file(base, os.path.join(models, "unet", "lora_base.safetensors"))
    _merged_unet_file(trainer, os.path.join(models, "unet", "lora_merged.safetensors"))
    shutil.copy(f"{final}/etc_lora_comfyui.safetensors", os.path.join(models, "loras", "etc_lora.safetensors"))
    shutil.copy(f"{final}/etc_fps.safetensors", os.path.join(models, "etc", "etc_lora_fps.safetensors"))
    lora = load_file(f"{final}/etc_lora_comfyui.safetensors")
    assert "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k.lora_down.weight" in lora


    log_before = len(comfy_server.log())
    comfy_server.run(_etc(comfy_server.unet_loader("lora_base.safetensors"), "lora_applied", "etc_lora_fps.safetensors",
                          lora="etc_lora.safetensors"))
    assert "lora key not loaded" not in comfy_server.log()[log_before:]
    comfy_server.run(_etc(comfy_server.unet_loader("lora_merged.safetensors"), "lora_merged", "etc_lora_fps.safetensors"))
    comfy_server.run(_etc(comfy_server.unet_loader("lora_base.safetensors"), "lora_none", "etc_lora_fps.safetensors"))
    applied, merged, without = (load_file(comfy_server.output_path(f"lora_{n}.safetensors"))["image"]
                                for n in ("applied", "merged", "none"))
    assert torch.isfinite(applied).all() and applied.shape == (4, 32, 32, 3)
    assert torch.allclose(applied, merged, atol=1e-4)
    assert (applied - without).abs().max() > 100 * (applied - merged).abs().max() and \
        (applied - without).abs().max() > 1e-3


def test_two_processes_train_the_lora_as_one_process_with_accumulation(setup, tmp_path, monkeypatch):
    """Data-parallel LoRA through the launcher (accelerate, gloo on the CPU) ends bit-equal to one process
    with 2 accumulation steps, as the full fine-tune does."""
    from etc_vcut_dev.accelerate_launch import TrainingProcess
    from etc_vcut_dev.accelerate_launch import assert_same_run, final_weights
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = Trainer(_config(setup, tmp_path / "one", gradient_accumulation_steps=2, max_steps=4,
                                       checkpoint_every=4))
        losses = reference.train()
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = TrainingProcess(_config(setup, tmp_path / "two", max_steps=4, checkpoint_every=4).__dict__, num_processes=2)
    assert run.wait().endswith("two/final"), run.log[-5:]
    assert_same_run((losses, final_weights(tmp_path / "one")), run.losses, tmp_path / "two")
    assert os.path.exists(tmp_path / "two" / "final" / "etc_lora_diffusers.safetensors")
