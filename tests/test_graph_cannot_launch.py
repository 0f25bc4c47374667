"""A graph cannot start processes, reach the network or unpickle a file, tried as an attacker on a shared
server would: files uploaded through /upload/image (into input/ and output/) named in every text input
of every pack node, and a planted pickle in a run folder that the trainer is asked to resume."""
import json
import os
import pickle
import socket
import threading
import time

import psutil
import pytest

from etc_vcut_dev.comfy_host import PromptError
from etc_vcut_dev.tiny_diffusers import write_tiny_clip

YAML = "accelerate.yaml"
TINY_RUN = dict(pretrained="diffusers/train-sd", frames=4, layout="2x2", resolution=32, max_steps=1,
                checkpoint_every=1, gradient_checkpointing=False, output_dir="etc_runs/attack",
                video_manifest="train_data/videos.jsonl", image_manifest="", label_folder="")
# The tiny models and inputs the fixture pack and core give for the pack nodes' linked inputs.
LINKED = {"MODEL": ("load", 0), "CLIP": ("load", 1), "VAE": ("load", 2), "CONDITIONING": ("cond", 0),
          "IMAGE": ("image", 0), "LATENT": ("latent", 0)}
SOURCES = {"load": {"class_type": "ETCVCUTTestTinySD2", "inputs": {"seed": 0}},
           "cond": {"class_type": "ETCVCUTTestRandomConditioning", "inputs": {"seed": 1, "dim": 1024, "tokens": 77}},
           "image": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 4, "color": 0}},
           "latent": {"class_type": "ETCEmptyGridLatent", "inputs": {"frames": 4, "frame_width": 64,
                                                                     "frame_height": 64, "layout": "2x2",
                                                                     "batch_size": 1}}}


class Listener:
    """A local port that counts who connects to it."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.settimeout(0.1)
        self.port, self.connections, self._closing = self.socket.getsockname()[1], 0, False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._closing:
            try:
                connection, _ = self.socket.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            connection.close()

    def close(self):
        self._closing = True
        self._thread.join(5)
        self.socket.close()


class ChildWatch:
    """Samples the server's child processes every 20 ms while it is open."""

    def __init__(self, pid: int):
        self.server, self.seen, self._closing = psutil.Process(pid), set(), False
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._closing:
            self.seen |= {(c.pid, " ".join(c.cmdline()[:4])) for c in self.server.children(recursive=True)}
            time.sleep(0.02)

    def close(self):
        self._closing = True
        self._thread.join(5)


@pytest.fixture(scope="module")
def attack(comfy_server, served_setup):
    write_tiny_clip(f"{comfy_server.base}/models/clip_vision/attack-clip")
    listener = Listener()
    # the config that made a launch join a process group at the attacker's address
    yaml = (f"compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_machines: 2\nnum_processes: 2\n"
            f"machine_rank: 1\nmain_process_ip: 127.0.0.1\nmain_process_port: {listener.port}\n"
            "rdzv_backend: c10d\nuse_cpu: false\n").encode()
    for kind in ("input", "output"):
        comfy_server.upload(YAML, yaml, kind)
    yield comfy_server, listener
    listener.close()


def _graph(info: dict, name: str, text_input: str = None) -> dict:
    """``name`` with ``text_input`` set to the uploaded file's name, its other inputs at valid values."""
    graph, inputs = dict(SOURCES), {}
    spec = info[name]["input"]
    for section in ("required", "optional"):
        for key, (kind, *options) in spec.get(section, {}).items():
            default = (options[0] if options else {}).get("default")
            if isinstance(kind, list):
                inputs[key] = TINY_RUN.get(key, kind[0] if kind else "")
            elif kind in LINKED:
                if section == "required":
                    inputs[key] = list(LINKED[kind])
            elif key in TINY_RUN:
                inputs[key] = TINY_RUN[key]
            elif default is not None:
                inputs[key] = default
    if text_input:
        inputs[text_input] = YAML
    graph["node"] = {"class_type": name, "inputs": inputs}
    if not info[name]["output_node"]:  # something must use the output, or ComfyUI runs nothing
        first = info[name]["output"][0]
        if first == "MODEL":
            graph["sample"] = {"class_type": "KSampler", "inputs": {
                "model": ["node", 0], "seed": 0, "steps": 1, "cfg": 1.0, "sampler_name": "euler",
                "scheduler": "normal", "positive": ["cond", 0], "negative": ["cond", 0], "latent_image": ["latent", 0],
                "denoise": 1.0}}
            first, source = "LATENT", ["sample", 0]
        else:
            source = ["node", 0]
        graph["save"] = {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": "attack",
                                                                            first.lower(): source}}
    return graph


def test_no_pack_node_starts_a_process_or_connects_out(attack):
    server, listener = attack
    info = server.get("/object_info")
    pack = sorted(n for n, e in info.items() if e["category"].split("/")[:2] in (["video", "ETC"], ["video", "VCUT"]))
    cases = [(name, key) for name in pack for section in ("required", "optional")
             for key, (kind, *_) in info[name]["input"].get(section, {}).items() if kind == "STRING"]
    cases.append(("ETCTrainer", None))  # and one real in-process run
    assert {"ETCTrainer", "ETCTrainCommand", "ETCVideoFilter", "ETCSaveVideo", "ETCSampler"} <= {n for n, _ in cases}
    watch = ChildWatch(server.process.pid)
    outcomes = {}
    try:
        for name, key in cases:
            try:
                server.run(_graph(info, name, key), timeout=600)
                outcomes[(name, key)] = "ran"
            except PromptError as e:
                outcomes[(name, key)] = str(e)[:120]
        time.sleep(1.0)
    finally:
        watch.close()
    assert watch.seen == set(), outcomes
    assert listener.connections == 0, outcomes
    assert outcomes[("ETCTrainer", None)] == "ran"  # a real in-process run: still nothing started


class _Payload:
    """Unpickling this creates the marker file: proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("deepspeed", [False, True])
def test_resume_never_unpickles_a_planted_checkpoint(attack, tmp_path, deepspeed):
    server, _ = attack
    run = f"etc_runs/planted_{deepspeed}"
    inputs = _graph(server.get("/object_info"), "ETCTrainer")["node"]["inputs"]
    node = {"class_type": "ETCTrainer", "inputs": dict(inputs, output_dir=run, max_steps=2, checkpoint_every=2)}
    server.run({"train": node}, timeout=600)
    marker = str(tmp_path / "unpickled")
    payload = pickle.dumps(_Payload(marker))
    folder = f"{run}/checkpoint-5"
    for name in ("optimizer.bin", "scheduler.bin", "pytorch_model.bin", "random_states_0.pkl", "scaler.pt"):
        server.upload(name, payload, "output", folder)
    state = {"step": 5, "num_processes": 1, "deepspeed": deepspeed, "base_model": "x"}
    server.upload("trainer_state.json", json.dumps(state).encode(), "output", folder)
    resumed = {"train": {**node, "inputs": {**node["inputs"], "resume": True, "max_steps": 6}}}
    with pytest.raises(PromptError) as refused:
        server.run(resumed, timeout=600)
    expected = "was written by a DeepSpeed run" if deepspeed else "is not a checkpoint of this trainer"
    assert expected in str(refused.value)
    assert not os.path.exists(marker)
