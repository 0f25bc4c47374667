"""The training and data nodes on a real ComfyUI server, given hostile or wrong paths: each prompt is
refused with an error naming the input and the allowed folder, showing no file content, and the disk
(checksums of every folder involved) is as it was."""
import json
import os
import re
import shutil

import pytest

from etc_vcut_dev.comfy_host import PromptError
from etc_vcut_dev.refusals import refusal, tree_digest
from etc_vcut_dev.tiny_diffusers import write_synthetic_data, write_tiny_sd

SECRET = "sk-do-not-echo-0123456789"


@pytest.fixture(scope="module")
def instance(comfy_server, tmp_path_factory):
    """Tiny SD in models/diffusers, synthetic data in input/, a victim folder outside ComfyUI's folders."""
    base = comfy_server.base
    write_tiny_sd(os.path.join(base, "models", "diffusers", "tiny-sd"))
    write_synthetic_data(os.path.join(base, "input", "etc_data"))
    victim = tmp_path_factory.mktemp("victim")
    (victim / "notes.txt").write_text("user data\n")
    (victim / "keys.jsonl").write_text(json.dumps({"api_key": SECRET, "video": "x.mp4", "caption": SECRET}) + "\n")
    (victim / "other_tool").mkdir()
    (victim / "other_tool" / "checkpoint-1").mkdir()
    (victim / "other_tool" / "checkpoint-1" / "weights.bin").write_bytes(b"\0" * 64)
    return comfy_server, victim


def _trainer(**overrides):
    inputs = dict(pretrained="diffusers/tiny-sd", output_dir="etc_runs/paths", video_manifest="etc_data/videos.jsonl",
                  image_manifest="", label_folder="", frames=4, layout="2x2", resolution=32, lr=1e-3, batch_size=1,
                  gradient_accumulation_steps=1, max_steps=2, checkpoint_every=2, mixed_precision="no",
                  gradient_checkpointing=False, seed=3, resume=False)
    inputs.update(overrides)
    return {"train": {"class_type": "ETCTrainer", "inputs": inputs}}


def _folders(server, victim):
    return [server.base + "/output", server.base + "/input", server.base + "/models/diffusers", str(victim)]


@pytest.mark.parametrize("overrides, expected", [
    ({"output_dir": "{victim}/run"}, "output_dir must be a path relative to ComfyUI's output/ folder"),
    ({"output_dir": "../../victim_run"}, "output_dir may not contain '..'"),
    ({"video_manifest": "{victim}/keys.jsonl"}, "video_manifest must be a path relative to ComfyUI's input/ or "
                                                "models/ folder"),
    ({"video_manifest": "../keys.jsonl"}, "video_manifest may not contain '..'"),
    ({"label_folder": "{victim}"}, "label_folder must be a path relative to ComfyUI's input/ or models/ folder"),
])
def test_trainer_refuses_paths_outside_comfyui_folders(instance, overrides, expected):
    server, victim = instance
    prompt = _trainer(**{k: v.format(victim=victim) for k, v in overrides.items()})
    before = tree_digest(*_folders(server, victim))
    message, history = refusal(server, prompt)
    assert message.startswith(expected)
    assert SECRET not in history and "user data" not in history
    assert tree_digest(*_folders(server, victim)) == before


def test_trainer_refuses_a_symlink_out_and_a_manifest_listing_files_outside(instance):
    server, victim = instance
    os.symlink(victim, os.path.join(server.base, "output", "escape"))
    shutil.copy(victim / "keys.jsonl", os.path.join(server.base, "input", "keys.jsonl"))
    with open(os.path.join(server.base, "input", "outside.jsonl"), "w") as f:
        f.write(json.dumps({"video": str(victim / "notes.txt"), "caption": "c"}) + "\n")
    before = tree_digest(*_folders(server, victim))
    message, _ = refusal(server, _trainer(output_dir="escape/run"))
    assert message.startswith("output_dir leads out of ComfyUI's output/ folder through a symlink")
    message, history = refusal(server, _trainer(video_manifest="outside.jsonl"))
    assert "line 1: a file it lists leads outside ComfyUI's input/ and models/ folders" in message
    os.makedirs(os.path.join(server.base, "input", "labels_out", "cat"))
    os.symlink(victim / "notes.txt", os.path.join(server.base, "input", "labels_out", "cat", "0.png"))
    message, history = refusal(server, _trainer(label_folder="labels_out"))
    assert message.startswith("label_folder cat/: a file it lists leads outside ComfyUI's input/ and models/")
    assert "user data" not in history
    shutil.rmtree(os.path.join(server.base, "input", "labels_out"))
    message, history = refusal(server, _trainer(video_manifest="keys.jsonl"))  # lists x.mp4 beside it: missing
    assert SECRET not in history
    assert tree_digest(*_folders(server, victim)) == before
    os.remove(os.path.join(server.base, "output", "escape"))


def test_trainer_errors_name_the_line_not_its_content(instance):
    server, victim = instance
    bad = os.path.join(server.base, "input", "bad.jsonl")
    with open(bad, "w") as f:
        f.write(json.dumps({"video": "a.mp4", "caption": "fine"}) + "\n")
        f.write('{"video": "b.mp4", ' + f'"secret": "{SECRET}", caption: 1}}\n')
    message, history = refusal(server, _trainer(video_manifest="bad.jsonl"))
    assert re.fullmatch(r"input/bad\.jsonl line 2: not JSON \(Expecting property name enclosed in double quotes at "
                        r"column \d+\)", message)  # no server path
    assert SECRET not in history


def test_trainer_never_writes_into_a_folder_of_another_tool(instance):
    server, victim = instance
    foreign = os.path.join(server.base, "output", "other_tool")
    shutil.copytree(victim / "other_tool", foreign)
    before = tree_digest(*_folders(server, victim))
    message, _ = refusal(server, _trainer(output_dir="other_tool"))
    assert message == ("output_dir output/other_tool is not empty and holds no run of this trainer (no run.json); "
                       "pick a new or empty output_dir")
    with pytest.raises(PromptError, match="pretrained"):  # a list of names: refused before it runs
        server.queue(_trainer(pretrained="diffusers/missing"))
    assert tree_digest(*_folders(server, victim)) == before


def test_a_run_refused_as_a_different_run_keeps_its_files(instance):
    """A relative output_dir trains (the node and the training process agree on the folder); a second
    prompt with other settings is refused and leaves the first run's files, launch_config.json included."""
    server, victim = instance
    outputs = server.run(_trainer(output_dir="etc_runs/first"), timeout=900)
    assert outputs["train"]["text"] == ["2 steps -> output/etc_runs/first/final"]  # no server path
    before = tree_digest(*_folders(server, victim))
    message, _ = refusal(server, _trainer(output_dir="etc_runs/first", lr=5e-4))
    assert message.startswith("output_dir output/etc_runs/first holds a different run")
    assert tree_digest(*_folders(server, victim)) == before


def test_training_errors_reach_the_node_as_one_line(instance):
    server, victim = instance
    folder = os.path.join(server.base, "input", "clips_with_a_broken_one")
    shutil.copytree(os.path.join(server.base, "input", "etc_data"), folder,
                    ignore=shutil.ignore_patterns("labels", "*.png", "*.jsonl"))
    for name in ("red", "green", "blue"):
        with open(os.path.join(folder, f"{name}.txt"), "w") as f:
            f.write(f"a {name} square moving right")
    with open(os.path.join(folder, "broken.mp4"), "wb") as f:
        f.write(b"not a video")
    with open(os.path.join(folder, "broken.txt"), "w") as f:
        f.write("broken")
    message, _ = refusal(server, _trainer(video_manifest="clips_with_a_broken_one", skip_unreadable=False,
                                          output_dir="etc_runs/strict"), timeout=600)
    assert message == ("1 unreadable or uncaptioned files left out: input/clips_with_a_broken_one/broken.mp4 (cannot "
                       "open as a video); "
                       "fix or remove them, or set skip_unreadable")
