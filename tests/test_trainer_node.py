"""ETCTrainer inside a real ComfyUI server: it trains in the server's process (no child process), reports
progress with a live loss-curve preview over the websocket, stops on Cancel with a checkpoint while the
queue goes on, and a resumed run ends bit-equal to an uninterrupted one."""
import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from PIL import Image
from safetensors.torch import load_file

from etc_vcut_dev.comfy_host import REPO, PromptError
from etc_vcut_dev.ws_watch import Watcher

MAX_STEPS = 12


def trainer_graph(data, out, loss_graph=False, **overrides):
    inputs = dict(pretrained="diffusers/train-sd", output_dir=out, frames=4, layout="2x2", resolution=32, lr=1e-3,
                  batch_size=1, gradient_accumulation_steps=1, max_steps=MAX_STEPS, checkpoint_every=MAX_STEPS,
                  mixed_precision="no", gradient_checkpointing=False, seed=3, resume=False, **data)
    inputs.update(overrides)
    graph = {"train": {"class_type": "ETCTrainer", "inputs": inputs},
             "save": {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": f"curve_{os.path.basename(out)}",
                                                                         "image": ["train", 1]}}}
    if loss_graph:  # core's node for a LOSS_MAP, on hosts that have it
        graph["plot"] = {"class_type": "LossGraphNode", "inputs": {"loss": ["train", 2], "filename_prefix": "etc_loss"}}
    return graph


def _final_state(run: str) -> dict:
    with open(os.path.join(run, f"checkpoint-{MAX_STEPS}", "trainer_state.json")) as f:
        return json.load(f)


def _export(run: str) -> dict:
    return {**load_file(f"{run}/final/unet/diffusion_pytorch_model.safetensors"),
            **{f"fps.{k}": v for k, v in load_file(f"{run}/final/etc_fps.safetensors").items()}}


@pytest.fixture(scope="module")
def straight_run(comfy_server, served_setup):
    """One uninterrupted run through the node, watched over the websocket; the server's child processes
    are sampled all along."""
    has_loss_graph = "LossGraphNode" in comfy_server.get("/object_info")
    server = psutil.Process(comfy_server.process.pid)
    children = set()
    watcher = Watcher(comfy_server.url)
    try:
        prompt_id = comfy_server.queue(trainer_graph(served_setup, "etc_runs/straight", has_loss_graph),
                                       client_id=watcher.client_id)
        deadline = time.time() + 900
        while prompt_id not in comfy_server.get(f"/history/{prompt_id}") and time.time() < deadline:
            children |= {child.pid for child in server.children(recursive=True)}
            time.sleep(0.05)
        outputs = comfy_server.wait(prompt_id, timeout=60)
        time.sleep(0.5)  # the last websocket messages
    finally:
        watcher.close()
    return outputs, watcher, children, has_loss_graph


def test_the_node_trains_in_the_server_process_and_returns_export_curve_and_losses(comfy_server, served_setup,
                                                                                   straight_run):
    outputs, _, children, has_loss_graph = straight_run
    run = comfy_server.output_path("etc_runs", "straight")
    assert children == set()  # no accelerate, no torchrun, no worker
    assert outputs["train"]["text"] == [f"{MAX_STEPS} steps -> output/etc_runs/straight/final"]  # no server path
    curve = load_file(comfy_server.output_path("curve_straight.safetensors"))["image"]
    assert curve.shape == (1, 320, 640, 3) and curve.min() < 0.5  # a line was drawn
    losses = _final_state(run)["losses"]
    assert len(losses) == MAX_STEPS and all(loss > 0 for loss in losses)
    with open(os.path.join(run, "launch_config.json")) as f:  # what a terminal run would continue from
        assert json.load(f)["output_dir"] == run
    if has_loss_graph:
        assert outputs["plot"]["images"], outputs["plot"]
    with pytest.raises(PromptError, match="holds a different run"):
        comfy_server.run(trainer_graph(served_setup, "etc_runs/straight", lr=5e-4))


def test_progress_and_loss_curve_previews_reach_the_websocket(straight_run):
    _, watcher, _, _ = straight_run
    progress = watcher.progress("train")
    assert progress[-1] == (MAX_STEPS, MAX_STEPS)
    assert [value for value, _ in progress] == sorted(value for value, _ in progress)
    previews = watcher.previews()
    assert previews, "no preview image"
    kind, data = previews[-1]
    image = Image.open(io.BytesIO(data))
    assert kind == "PNG" and image.size == (640, 320)
    assert np.asarray(image.convert("L")).min() < 128  # the curve, not a blank picture


def test_cancel_stops_with_a_checkpoint_the_queue_goes_on_and_resume_is_bit_equal(comfy_server, served_setup,
                                                                                  straight_run):
    run = comfy_server.output_path("etc_runs", "cancelled")
    watcher = Watcher(comfy_server.url)
    try:
        prompt_id = comfy_server.queue(trainer_graph(served_setup, "etc_runs/cancelled"), client_id=watcher.client_id)
        deadline = time.time() + 600
        while not watcher.progress("train") and time.time() < deadline:
            time.sleep(0.02)
        comfy_server.post("/interrupt")
        while prompt_id not in comfy_server.get(f"/history/{prompt_id}") and time.time() < deadline:
            time.sleep(0.2)
    finally:
        watcher.close()
    status = comfy_server.get(f"/history/{prompt_id}")[prompt_id]["status"]
    assert "execution_interrupted" in [message[0] for message in status["messages"]]
    checkpoints = sorted(name for name in os.listdir(run) if name.startswith("checkpoint-"))
    assert len(checkpoints) == 1 and not checkpoints[0].endswith(".partial")
    stopped = int(checkpoints[0].split("-")[1])
    assert 1 <= stopped < MAX_STEPS
    assert sorted(os.listdir(os.path.join(run, checkpoints[0]))) == [
        "model.safetensors", "optimizer.safetensors", "rng_0.safetensors", "trainer_state.json"]

    outputs = comfy_server.run(trainer_graph(served_setup, "etc_runs/cancelled", resume=True), timeout=900)
    assert outputs["train"]["text"] == [f"{MAX_STEPS} steps -> output/etc_runs/cancelled/final"]
    straight = comfy_server.output_path("etc_runs", "straight")
    assert _final_state(run)["losses"] == _final_state(straight)["losses"]
    a, b = _export(straight), _export(run)
    assert a.keys() == b.keys() and [k for k in a if not a[k].equal(b[k])] == []


def test_train_command_writes_the_config_and_a_line_a_terminal_runs(comfy_server, served_setup):
    """ETCTrainCommand starts nothing: it writes the checked config and returns the launch line; the line,
    run as a terminal runs it, trains; a config changed after the line was made is refused."""
    graph = trainer_graph(served_setup, "etc_runs/terminal", max_steps=2, checkpoint_every=2)
    node = dict(graph["train"], class_type="ETCTrainCommand")
    node["inputs"] = dict(node["inputs"], num_processes=1, deepspeed=False)
    line = comfy_server.run({"cmd": node})["cmd"]["text"][0]
    run = comfy_server.output_path("etc_runs", "terminal")
    folder, launch = line.split(" && ")
    assert folder.startswith("cd ") and os.path.realpath(shlex.split(folder)[1]) == REPO
    arguments = shlex.split(launch)
    assert arguments[:2] == ["accelerate", "launch"]
    config = arguments[arguments.index("--config") + 1]
    digest = arguments[arguments.index("--config-sha256") + 1]
    assert config == f"{run}/launch_config.json"
    with open(config, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest
    assert sorted(os.listdir(run)) == ["launch_config.json", "run.json"]  # checked and written, nothing trained

    env = dict(os.environ, PYTHONPATH=REPO, ACCELERATE_USE_CPU="true")
    terminal = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *arguments[2:]], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=600)
    assert terminal.returncode == 0, terminal.stderr[-3000:]
    assert os.path.exists(f"{run}/final/etc_fps.safetensors")

    with open(config) as f:
        changed = json.load(f)
    changed["max_steps"] = 3
    with open(config, "w") as f:
        json.dump(changed, f)
    tampered = subprocess.run([sys.executable, "-m", "etc_core.train", *arguments[arguments.index("--config"):],
                               "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert tampered.returncode == 2
    assert tampered.stderr.strip().splitlines()[-1] == (f"error: the config {config} changed since its launch line "
                                                        "was made (sha256 differs); make the line again and check "
                                                        "the file")


def test_data_in_a_folder_that_extra_model_paths_yaml_adds(comfy_server, served_setup, setup):
    """The server's own configuration (an `etc_vcut_data:` key in extra_model_paths.yaml, see
    dev/etc_vcut_dev/comfy_host.py) adds a data folder; the graph names files relative to it, never by an
    absolute path."""
    clips = os.path.join(comfy_server.base, "data", "clips")
    shutil.copytree(os.path.dirname(setup[1]["video_manifest"]), clips, dirs_exist_ok=True)
    node = dict(trainer_graph(served_setup, "etc_runs/extra_data")["train"], class_type="ETCTrainCommand")
    node["inputs"] = dict(node["inputs"], num_processes=2, deepspeed=True, video_manifest="clips/videos.jsonl",
                          image_manifest="", label_folder="")
    line = comfy_server.run({"cmd": node})["cmd"]["text"][0]
    assert "--config_file etc_core/configs/accelerate_deepspeed_zero2.yaml --num_processes 2" in line
    with open(comfy_server.output_path("etc_runs", "extra_data", "launch_config.json")) as f:
        assert json.load(f)["video_manifest"] == os.path.join(clips, "videos.jsonl")
    node["inputs"] = dict(node["inputs"], video_manifest=os.path.join(clips, "videos.jsonl"))
    with pytest.raises(PromptError, match="video_manifest must be a path relative to ComfyUI's input/ or models/"):
        comfy_server.run({"cmd": node})


def test_files_left_out_are_named_in_the_node_text_the_server_log_and_the_run_folder(comfy_server, served_setup):
    """7 of 8 videos unreadable, skip_unreadable on: the run trains on the one left and says which it left out."""
    clips = os.path.join(comfy_server.base, "input", "mostly_broken")
    os.makedirs(clips, exist_ok=True)
    shutil.copy(os.path.join(comfy_server.base, "input", "train_data", "red.mp4"), os.path.join(clips, "good.mp4"))
    for index in range(8):
        name = "good" if index == 0 else f"broken{index}"
        if index:
            with open(os.path.join(clips, f"{name}.mp4"), "wb") as f:
                f.write(b"not a video")
        with open(os.path.join(clips, f"{name}.txt"), "w") as f:
            f.write("a red square moving right")
    graph = trainer_graph(served_setup, "etc_runs/mostly_broken", max_steps=1, checkpoint_every=1,
                          video_manifest="mostly_broken", image_manifest="", label_folder="", skip_unreadable=True)
    text = comfy_server.run(graph)["train"]["text"]
    broken = [os.path.join(clips, f"broken{index}.mp4") for index in range(1, 8)]
    report = "data: 7 unreadable or uncaptioned files left out: {}"
    assert text == ["1 steps -> output/etc_runs/mostly_broken/final", report.format(", ".join(  # no server path
        f"input/mostly_broken/broken{index}.mp4 (cannot open as a video)" for index in range(1, 8)))]
    shown = [f"input/mostly_broken/broken{index}.mp4" for index in range(1, 8)]  # the log and the run folder too
    assert report.format(", ".join(f"{path} (cannot open as a video)" for path in shown)) in comfy_server.log()
    assert not any(path in comfy_server.log() for path in broken)
    with open(comfy_server.output_path("etc_runs", "mostly_broken", "skipped_files.txt")) as f:
        assert f.read() == "".join(f"{path}\tcannot open as a video\n" for path in shown)
