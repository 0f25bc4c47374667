"""Training inside a real ComfyUI server without risk to it (issue 27): a run that cannot fit is refused
before anything loads, checkpoints rotate and stop cleanly on a full disk, a time-based checkpoint bounds
what a SIGTERM loses, oversized images and video frames are left out from their header, the mixed
embedding refuses a latent of another grid when it runs, and every refusal of the training nodes names
inputs and files, never a command-line flag or the server's absolute paths."""
import os
import shutil
import signal
import struct
import time
import zlib

import psutil
import pytest

from etc_vcut_dev.comfy_host import REPO, ComfyServer, PromptError
from etc_vcut_dev.graphs import etc_patch_graph
from etc_vcut_dev.refusals import refusal, tree_digest
from etc_vcut_dev.peak_memory import PeakMemory

MiB = 2**20


def trainer(data, out, **overrides):
    inputs = dict(pretrained="diffusers/train-sd", output_dir=out, frames=4, layout="2x2", resolution=32, lr=1e-3,
                  batch_size=1, gradient_accumulation_steps=1, max_steps=2, checkpoint_every=2, mixed_precision="no",
                  gradient_checkpointing=False, seed=3, resume=False, **data)
    inputs.update(overrides)
    return {"train": {"class_type": "ETCTrainer", "inputs": inputs}}


def checkpoint_steps(folder) -> list:
    return sorted(int(name.split("-")[1]) for name in os.listdir(folder)
                  if name.startswith("checkpoint-") and not name.endswith(".partial"))


def peak_rss_growth(server, run):
    """``(result of run(), the server's peak resident memory above its start, sampled every 10 ms)``."""
    process = psutil.Process(server.process.pid)
    with PeakMemory(lambda: process.memory_info().rss) as peak:
        result = run()
    return result, peak.growth


# 1. Memory


def test_a_run_that_cannot_fit_is_refused_before_anything_is_loaded(comfy_server, served_setup):
    """The widgets' maxima (1024 frames at 2048): refused from the estimate, naming sizes that fit; nothing is
    written and the server does not grow."""
    graph = trainer(served_setup, "etc_runs/too_big", frames=1024, layout="auto", resolution=2048)
    before = tree_digest(comfy_server.output_path())
    (message, _), growth = peak_rss_growth(comfy_server, lambda: refusal(comfy_server, graph))
    assert message.startswith("ETCTrainer: 1024 frames of 2048x2048 need about ")
    assert "to train (weights, gradients, optimizer state, activations)" in message
    assert "sizes that fit: frames=" in message and "frame size " in message
    assert tree_digest(comfy_server.output_path()) == before
    assert growth < 300 * MiB, f"the refusal grew the server by {growth / MiB:.0f} MiB"


# 2. Disk


def test_checkpoints_rotate_keeping_the_newest_and_every_nth(comfy_server, served_setup):
    """checkpoint_every=1 no longer keeps every checkpoint: the newest keep_checkpoints, plus every keep_every-th."""
    graph = trainer(served_setup, "etc_runs/rotated", max_steps=6, checkpoint_every=1, keep_checkpoints=2,
                    keep_every=3)
    comfy_server.run(graph)
    assert checkpoint_steps(comfy_server.output_path("etc_runs", "rotated")) == [3, 5, 6]


def test_a_full_disk_stops_the_run_cleanly_keeping_the_last_checkpoint(comfy_server, served_setup):
    run = comfy_server.output_path("etc_runs", "disk_full")
    comfy_server.run({"fake": {"class_type": "ETCVCUTTestFakeDiskFree",
                               "inputs": {"marker": "disk_full", "after_calls": 1, "free_mib": 1}}})
    try:
        message, _ = refusal(comfy_server, trainer(served_setup, "etc_runs/disk_full", max_steps=6,
                                                   checkpoint_every=2))
    finally:
        comfy_server.run({"fake": {"class_type": "ETCVCUTTestFakeDiskFree",
                                   "inputs": {"marker": "disk_full", "after_calls": 0, "free_mib": -1}}})
    assert message.startswith("training stopped at step 4: the disk of output_dir has 1 MiB free and a checkpoint "
                              "needs about ")
    assert message.endswith("MiB; checkpoint checkpoint-2 is kept. Free disk space (or lower keep_checkpoints) "
                            "and run again with resume on")
    assert sorted(os.listdir(run)) == ["checkpoint-2", "launch_config.json", "run.json"]  # no partial write
    text = comfy_server.run(trainer(served_setup, "etc_runs/disk_full", max_steps=6, checkpoint_every=2,
                                    resume=True))["train"]["text"]
    assert text[0].startswith("6 steps -> ")


# 3. Shutdown


def test_sigterm_loses_at_most_the_time_since_the_time_based_checkpoint(tmp_path_factory, setup):
    """A server stopped by SIGTERM mid-run exits without a last checkpoint (ComfyUI owns the signal); the
    time-based checkpoint written every checkpoint_minutes is what a restarted server resumes from."""
    pretrained, data = setup
    server = ComfyServer(str(tmp_path_factory.mktemp("sigterm")))
    shutil.copytree(pretrained, f"{server.base}/models/diffusers/train-sd")
    shutil.copytree(os.path.dirname(data["video_manifest"]), f"{server.base}/input/train_data")
    served = {key: "train_data/" + os.path.basename(value) for key, value in data.items()}
    graph = trainer(served, "etc_runs/sigterm", max_steps=100000, checkpoint_every=100000,
                    checkpoint_minutes=0.01)
    run = os.path.join(server.base, "output", "etc_runs", "sigterm")
    server.start()
    try:
        server.queue(graph)
        deadline = time.time() + 300
        while time.time() < deadline and not (os.path.isdir(run) and checkpoint_steps(run)):
            time.sleep(0.2)
        time.sleep(1.5)  # a few more steps and time-based checkpoints
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(60)
    finally:
        server.stop()
    steps = checkpoint_steps(run)
    assert steps and steps[-1] >= 1, os.listdir(run)
    latest = steps[-1]
    assert sorted(os.listdir(os.path.join(run, f"checkpoint-{latest}"))) == [
        "model.safetensors", "optimizer.safetensors", "rng_0.safetensors", "trainer_state.json"]
    server.start()
    try:
        text = server.run(dict(trainer(served, "etc_runs/sigterm", max_steps=latest + 1, checkpoint_every=100000,
                                       checkpoint_minutes=0.01, resume=True)))["train"]["text"]
    finally:
        server.stop()
    assert text[0].startswith(f"{latest + 1} steps -> ")


# 4. Decompression bombs


def png_declaring(path, width: int, height: int):
    """A valid grey PNG of ``width x height`` black pixels: a few hundred kB that decode to width*height bytes."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bomb_images(comfy_server, served_setup):
    """input/bombs: a captioned 9000x9000 PNG (81 Mpixel, above the default limit) beside a normal image."""
    folder = os.path.join(comfy_server.base, "input", "bombs")
    os.makedirs(folder, exist_ok=True)
    png_declaring(os.path.join(folder, "bomb.png"), 9000, 9000)
    shutil.copy(os.path.join(comfy_server.base, "input", "train_data", "red.png"), folder)
    for name in ("bomb", "red"):
        with open(os.path.join(folder, f"{name}.txt"), "w") as f:
            f.write("a red square")
    return folder


def test_an_image_above_the_pixel_limit_is_left_out_from_its_header(comfy_server, served_setup, bomb_images):
    assert os.path.getsize(os.path.join(bomb_images, "bomb.png")) < 1 * MiB
    reason = "9000x9000 pixels, above max_frame_pixels=67108864"
    strict = trainer(served_setup, "etc_runs/bomb_refused", image_manifest="bombs", video_manifest="",
                     label_folder="", skip_unreadable=False)
    (message, _), growth = peak_rss_growth(comfy_server, lambda: refusal(comfy_server, strict))
    assert message == (f"1 unreadable or uncaptioned files left out: input/bombs/bomb.png ({reason}); fix or remove "
                       "them, or set skip_unreadable")
    assert growth < 150 * MiB, f"the server grew by {growth / MiB:.0f} MiB"  # decoding it takes 243 MB

    graph = trainer(served_setup, "etc_runs/bomb_skipped", max_steps=1, checkpoint_every=1, image_manifest="bombs",
                    video_manifest="", label_folder="")
    left_out = f"data: 1 unreadable or uncaptioned files left out: input/bombs/bomb.png ({reason})"
    assert comfy_server.run(graph)["train"]["text"][1] == left_out


def test_video_frames_above_the_pixel_limit_are_left_out_from_the_container(comfy_server, served_setup):
    """The synthetic clips are 32x32: with max_frame_pixels 1000 each is left out before a frame is decoded."""
    graph = trainer(served_setup, "etc_runs/video_limit", max_steps=1, checkpoint_every=1, image_manifest="",
                    label_folder="", skip_unreadable=False, max_frame_pixels=1000)
    message, _ = refusal(comfy_server, graph)
    assert message == ("3 unreadable or uncaptioned files left out: "
                       + ", ".join(f"input/train_data/{name}.mp4 (frames of 32x32 pixels, above "
                                   "max_frame_pixels=1000)" for name in ("red", "green", "blue"))
                       + "; fix or remove them, or set skip_unreadable")


def test_the_filter_node_leaves_out_videos_above_the_pixel_limit(comfy_server, served_setup, clip_dir):
    shutil.copytree(clip_dir, os.path.join(comfy_server.base, "models", "clip_vision", "tiny-clip"),
                    dirs_exist_ok=True)
    graph = {"f": {"class_type": "ETCVideoFilter", "inputs": {
        "manifest": served_setup["video_manifest"], "output": "etc_data/limit.jsonl", "alpha": 1.0,
        "clip": "tiny-clip", "frames": 2, "max_frame_pixels": 1000}}}
    assert comfy_server.run(graph)["f"]["text"] == ["kept 0 of 3"]
    from etc_core.data.manifest import read_jsonl
    rows = read_jsonl(comfy_server.output_path("etc_data", "limit.jsonl.scores.jsonl"))[1:]
    reasons = [row["error"].split(": ", 1)[1] for row in rows]
    assert reasons == ["frames of 32x32 pixels, above max_frame_pixels=1000"] * 3


# 5. Mixed embedding


def test_the_mixed_embedding_refuses_a_latent_of_another_grid_when_it_runs(comfy_server):
    """Set up for 4 frames as 2x2; the KSampler gets a 4x4 grid of 16 frames of the same size."""
    graph = etc_patch_graph(me=(1.0, 10000.0), frames=4, layout="2x2", size=64, steps=1, prefix="me_other_grid")
    graph["big"] = {"class_type": "ETCEmptyGridLatent", "inputs": {"frames": 16, "frame_width": 64,
                                                                   "frame_height": 64, "layout": "4x4",
                                                                   "batch_size": 1}}
    graph["sample"]["inputs"]["latent_image"] = ["big", 0]
    message, _ = refusal(comfy_server, graph)
    assert message == ("the mixed embedding was set up for a 2x2 grid of 4 frames of 8x8 latent pixels (16x16), and "
                       "the sampler gives it a 32x32 latent (a 4x4 grid, 16 frames of that size); connect the latent "
                       "the sampler gets to ETCMixedEmbedding, with the frames and layout it was made with")


# 6. Messages


@pytest.fixture(scope="module")
def damaged_run(comfy_server, served_setup):
    """output/etc_runs/messages: a run of one step whose checkpoint's model file is damaged."""
    comfy_server.run(trainer(served_setup, "etc_runs/messages", max_steps=1, checkpoint_every=1))
    with open(comfy_server.output_path("etc_runs", "messages", "checkpoint-1", "model.safetensors"), "wb") as f:
        f.write(b"\xff" * 64)  # a header length of 2**64 - 1: "header too large"
    return "etc_runs/messages"


def test_resume_and_damaged_checkpoints_are_named_as_a_node_user_sees_them(comfy_server, served_setup, damaged_run):
    message, _ = refusal(comfy_server, trainer(served_setup, damaged_run, max_steps=2, checkpoint_every=1))
    assert message == ("output_dir output/etc_runs/messages already has checkpoints; turn resume on to continue that "
                       "run, or pick a new output_dir")
    message, _ = refusal(comfy_server, trainer(served_setup, damaged_run, max_steps=2, checkpoint_every=1,
                                               resume=True))
    assert message == ("checkpoint checkpoint-1/model.safetensors in output_dir is damaged (it does not read back); "
                       "delete the folder checkpoint-1 to resume from the checkpoint before it, or start a new "
                       "output_dir")


def refusals(data):
    """``(node, inputs changed, start of the message)`` of each way the training nodes refuse a prompt."""
    return [
        ("ETCTrainer", {"output_dir": "x" * 300}, "output_dir holds a file or folder name of 300 bytes"),
        ("ETCTrainCommand", {"output_dir": "x" * 300}, "output_dir holds a file or folder name of 300 bytes"),
        ("ETCTrainer", {"output_dir": "/tmp/run"}, "output_dir must be a path relative to ComfyUI's output/"),
        ("ETCTrainer", {"output_dir": "../run"}, "output_dir may not contain '..'"),
        ("ETCTrainer", {"video_manifest": "nowhere.jsonl"}, "video_manifest 'nowhere.jsonl' is not in ComfyUI's"),
        ("ETCTrainer", {"video_manifest": "train_data/notes.jsonl"}, "input/train_data/notes.jsonl line 1: "),
        ("ETCTrainer", {"layout": "3x3"}, "config field 'layout': layout 3x3 holds 9 frames"),
        ("ETCTrainer", {"output_dir": "etc_runs/messages", "lr": 5e-4}, "output_dir output/etc_runs/messages holds "
                                                                         "a different run"),
        ("ETCTrainCommand", {"output_dir": "etc_runs/messages"}, "output_dir output/etc_runs/messages already has "
                                                                  "checkpoints; turn resume on"),
        ("ETCTrainer", {"output_dir": "etc_runs/messages", "resume": True, "max_steps": 3},
         "checkpoint checkpoint-1/model.safetensors in output_dir is damaged"),
        ("ETCTrainer", {"output_dir": "etc_runs/not_a_run_folder"}, "output_dir output/etc_runs/not_a_run_folder is "
                                                                    "not empty"),
        ("ETCTrainer", {"video_manifest": "train_data/gone.jsonl", "skip_unreadable": False},
         "1 unreadable or uncaptioned files left out: input/train_data/gone.mp4 (missing)"),
        ("ETCTrainer", {"frames": 1024, "layout": "auto", "resolution": 2048}, "ETCTrainer: 1024 frames"),
    ]


def test_every_refusal_of_the_training_nodes_names_inputs_and_no_server_path(comfy_server, served_setup,
                                                                            damaged_run):
    with open(os.path.join(comfy_server.base, "input", "train_data", "notes.jsonl"), "w") as f:
        f.write("not json\n")
    with open(os.path.join(comfy_server.base, "input", "train_data", "gone.jsonl"), "w") as f:
        f.write('{"video": "gone.mp4", "caption": "gone"}\n')
    os.makedirs(comfy_server.output_path("etc_runs", "not_a_run_folder"), exist_ok=True)
    with open(comfy_server.output_path("etc_runs", "not_a_run_folder", "notes.txt"), "w") as f:
        f.write("the user's notes\n")
    server_paths = {comfy_server.base, os.path.realpath(comfy_server.base), REPO, os.path.realpath(REPO)}
    for node, changed, start in refusals(served_setup):
        graph = trainer(served_setup, "etc_runs/refused", **{"max_steps": 1, "checkpoint_every": 1, **changed})
        graph["train"]["class_type"] = node
        if node == "ETCTrainCommand":
            graph["train"]["inputs"].update(num_processes=1, deepspeed=False)
        try:
            message, _ = refusal(comfy_server, graph)
        except PromptError as e:  # refused when the prompt is validated
            message = str(e)
        assert message.startswith(start), (node, changed, message)
        assert not any(path in message for path in server_paths), (node, changed, message)
        assert "--" not in message and "Errno" not in message, (node, changed, message)
