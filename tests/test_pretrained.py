"""Training from a ComfyUI checkpoint: one SD 2.x .safetensors file, converted offline (no hub), with the
prediction type read from the file; the tests write the file from a tiny diffusers SD with SD 2.x's layout."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from etc_core.train.pretrained import PretrainedError, check_pretrained, clip_tokenizer, load_models, prediction_type
from etc_core.train import main as train_main


def test_single_file_loads_to_the_weights_it_was_made_from(sd2_checkpoint):
    """Two independent conversions (ours to LDM keys in the test, diffusers' back) agree on every weight."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel
    path, source = sd2_checkpoint
    unet, vae, text_encoder, tokenizer, scheduler = load_models(path)
    for cls, sub, model in ((UNet2DConditionModel, "unet", unet), (AutoencoderKL, "vae", vae),
                            (CLIPTextModel, "text_encoder", text_encoder)):
        expected, got = cls.from_pretrained(os.path.join(source, sub)).state_dict(), model.state_dict()
        assert expected.keys() == got.keys()
        assert [k for k in expected if not torch.equal(expected[k].half().float(), got[k])] == []
    assert text_encoder.config.num_hidden_layers == 2  # the file has 3 blocks; SD 2.x reads the penultimate
    assert unet.config.cross_attention_dim == 1024 and list(unet.config.attention_head_dim) == [5, 5, 5, 5]
    assert scheduler.config.prediction_type == "epsilon" and scheduler.config.beta_schedule == "scaled_linear"
    assert tokenizer.pad_token_id == 0  # SD 2.x pads with "!"


def test_prediction_type_is_read_from_the_file_as_comfyui_reads_it(sd2_checkpoint):
    sd = load_file(sd2_checkpoint[0])
    assert prediction_type(sd) == "epsilon"
    probe = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
    sd[probe] = torch.randn(sd[probe].shape, generator=torch.Generator().manual_seed(0)) * 0.2
    assert prediction_type(sd) == "v_prediction"
    assert prediction_type({"v_pred": torch.zeros(())}) == "v_prediction"


def test_the_shipped_tokenizer_is_clips(sd2_checkpoint):
    from etc_vcut_dev.tiny_diffusers import clip_tokenizer as comfyui_tokenizer
    ours, reference = clip_tokenizer(), comfyui_tokenizer()  # the second from ComfyUI's own vocabulary files
    assert ours.get_vocab() == reference.get_vocab()
    text = "A photograph of an astronaut riding a horse, 4k, trending on artstation"
    assert ours(text).input_ids == reference(text).input_ids
    padded = ours(text, padding="max_length", max_length=77).input_ids  # "!" pads, as in SD 2.x's tokenizer
    assert padded[:len(ours(text).input_ids)] == ours(text).input_ids and set(padded[len(ours(text).input_ids):]) == {0}


@pytest.mark.parametrize("content, error", [
    (None, "pretrained {name} is not a full SD 2.x checkpoint (it has no VAE)"),
    (b"\x20\0\0\0\0\0\0\0{broken", "pretrained {name} is not a readable safetensors file"),
])
def test_files_that_are_not_sd2_checkpoints_are_refused_in_one_line(tmp_path, content, error):
    path = tmp_path / "model.safetensors"
    if content is None:
        save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4)}, str(path))
    else:
        path.write_bytes(content)
    with pytest.raises(PretrainedError) as refused:
        check_pretrained(str(path))
    assert str(refused.value).startswith(error.format(name="model.safetensors"))


def test_training_from_a_single_file_checkpoint(sd2_checkpoint, setup, tmp_path, capsys):
    _, data = setup
    config = dict(pretrained=sd2_checkpoint[0], output_dir=str(tmp_path / "run"), frames=4, layout="2x2",
                  resolution=32, max_steps=2, checkpoint_every=2, seed=1, video_manifest=data["video_manifest"])
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert train_main(["--config", str(tmp_path / "config.json")]) == 0
    final = capsys.readouterr().out.strip()
    assert final == str(tmp_path / "run" / "final")
    exported = load_file(os.path.join(final, "etc_unet_comfyui.safetensors"))
    original = load_file(sd2_checkpoint[0])
    key = "input_blocks.0.0.weight"
    assert exported[key].shape == original["model.diffusion_model." + key].shape
    assert not torch.equal(exported[key].half(), original["model.diffusion_model." + key])  # it trained


def test_trainer_node_trains_from_a_checkpoint_by_name_and_a_folder_of_clips(comfy_server, sd2_checkpoint, setup):
    """As a ComfyUI user runs it: the SD 2.x file in models/checkpoints picked by name, a folder of clips with
    same-name .txt captions in input/, the run in output/."""
    import shutil
    _, data = setup
    shutil.copy(sd2_checkpoint[0], os.path.join(comfy_server.base, "models", "checkpoints", "tiny_sd2.safetensors"))
    clips = os.path.join(comfy_server.base, "input", "my_clips")
    os.makedirs(clips, exist_ok=True)
    for name in ("red", "green", "blue"):
        shutil.copy(os.path.join(os.path.dirname(data["video_manifest"]), f"{name}.mp4"), clips)
        with open(os.path.join(clips, f"{name}.txt"), "w") as f:
            f.write(f"a {name} square moving right")
    inputs = dict(pretrained="tiny_sd2.safetensors", output_dir="etc_runs/from_checkpoint", video_manifest="my_clips",
                  image_manifest="", label_folder="", frames=4, layout="2x2", resolution=32, lr=1e-3, batch_size=1,
                  gradient_accumulation_steps=1, max_steps=2, checkpoint_every=2, mixed_precision="no",
                  gradient_checkpointing=False, seed=3, resume=False)
    outputs = comfy_server.run({"train": {"class_type": "ETCTrainer", "inputs": inputs}}, timeout=900)
    assert outputs["train"]["text"] == ["2 steps -> output/etc_runs/from_checkpoint/final"]
    run = comfy_server.output_path("etc_runs", "from_checkpoint")
    with open(os.path.join(run, "launch_config.json")) as f:
        launched = json.load(f)
    assert launched["pretrained"] == os.path.join(comfy_server.base, "models", "checkpoints", "tiny_sd2.safetensors")
    assert launched["video_manifest"] == clips
    assert os.path.exists(os.path.join(run, "final", "etc_unet_comfyui.safetensors"))
