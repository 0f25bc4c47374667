"""Hostile and heavy inputs on a real server (issue 19): each prompt gets an error that names the input (or
the right result), nothing is written where nothing should be, the refusals of huge sizes stay small in the
server's resident memory (psutil on the server process), and the server then answers the next normal
prompt with the same result as before."""
import json
import os
import shutil

import numpy as np
import psutil
import pytest
import torch
from safetensors.torch import load_file, save_file

from etc_core import FPSEmbedding, save_fps_module
from etc_core.data.video_filter import read_jsonl
from etc_core.files.video_io import write_video
from etc_vcut_dev.graphs import etc_graph, etc_patch_graph, svd_graph
from etc_vcut_dev.grid_tasks import grid_task_graph
from etc_vcut_dev.refusals import audio_samples, refusal, tree_digest
from etc_vcut_dev.peak_memory import PeakMemory
from etc_vcut_dev.tiny_diffusers import write_moving_square as _moving_square

TINY_BASE = "sd-unet:in=4,ch=32,temb=128"
MiB = 2**20


class PeakRSS(PeakMemory):
    """The server's peak resident memory above its level at the start, sampled every 10 ms."""

    def __init__(self, server):
        process = psutil.Process(server.process.pid)
        super().__init__(lambda: process.memory_info().rss)


def _normal(server, prefix):
    """The tiny ETC prompt from a fresh state (models unloaded, no cached outputs): its frames."""
    server.unload_models()
    server.run(etc_graph(video=False, prefix=prefix))
    return load_file(server.output_path(f"{prefix}.safetensors"))["image"]


@pytest.fixture(scope="module")
def normal(comfy_server):
    """Asserts, after each test, that the next normal prompt gives the frames it gave before."""
    before = _normal(comfy_server, "hostile_normal_before")
    runs = iter(range(1000))

    def check():
        after = _normal(comfy_server, f"hostile_normal_after_{next(runs)}")
        assert torch.equal(after, before)
    return check


def _video_only(prefix, **save_inputs):
    """The tiny ETC prompt whose only output is ETCSaveVideo."""
    graph = etc_graph(prefix="hostile_video")
    del graph["save"]
    graph["video"]["inputs"].update(filename_prefix=prefix, **save_inputs)
    return graph


def _folders(server):
    return [server.output_path(), os.path.join(server.base, "temp")]


# Data loss


@pytest.mark.parametrize("prefix", ["victim.mp4\x00", "a\x00b", "ETC/\x00/x"])
def test_a_nul_in_filename_prefix_is_refused_before_anything_is_written(comfy_server, normal, prefix):
    victim = comfy_server.output_path("victim.mp4")
    with open(victim, "wb") as f:
        f.write(b"the user's video")
    before = tree_digest(*_folders(comfy_server))
    message, _ = refusal(comfy_server, _video_only(prefix))
    assert message == f"filename_prefix {prefix!r} contains a NUL byte (\\x00); remove it"
    assert tree_digest(*_folders(comfy_server)) == before
    normal()


# One prompt takes the server down


def _fps_file(server, name, metadata, tensors):
    path = os.path.join(server.base, "models", "etc", name)
    save_file(tensors, path, {"format": "etc-fps-embedding/1", "base_model": TINY_BASE, **metadata})
    return path


@pytest.mark.parametrize("width", ["16384", "65536"])
def test_an_fps_file_declaring_a_huge_width_is_refused_from_its_header(comfy_server, normal, width):
    name = f"huge_{width}.safetensors"
    path = _fps_file(comfy_server, name, {"width": width}, {"mlp.0.weight": torch.zeros(2, 2)})
    assert os.path.getsize(path) < 1000
    before = tree_digest(*_folders(comfy_server))
    with PeakRSS(comfy_server) as rss:
        message, _ = refusal(comfy_server, etc_graph(fps_weights=name, video=False, prefix="huge_fps"))
    assert tree_digest(*_folders(comfy_server)) == before
    assert message == (f"fps_weights {name} does not hold the weights of an FPS module of width '{width}' (wrong or "
                       "damaged file); replace it with the etc_fps.safetensors a run exported")
    assert rss.growth < 300 * MiB, f"the refusal grew the server by {rss.growth / MiB:.0f} MiB"
    normal()


def _huge_grid_sampler():
    graph = etc_graph(frames=1024, layout="auto", size=4096, video=False, prefix="huge_grid")
    graph["etc"]["inputs"]["batch_size"] = 4
    return graph


def _huge_grid_patch():
    """ETCMixedEmbedding given a 4 x 4 x 16384 x 16384 grid latent (1024 frames of 4096x4096) that holds no
    memory (a fixture latent), so only the node's own check can take memory."""
    graph = etc_patch_graph(me=(1.0, 10000.0), frames=1024, layout="32x32", prefix="huge_patch")
    graph["grid"] = {"class_type": "ETCVCUTTestShapeLatent", "inputs": {"batch": 4, "height": 16384,
                                                                         "width": 16384}}
    return graph


def _huge_empty_latent():
    graph = etc_patch_graph(frames=1024, layout="auto", size=4096, prefix="huge_latent")
    graph["grid"]["inputs"]["batch_size"] = 64
    return graph


def _huge_keyframes():
    """ETCKeyframes asked for 1024 frames of 4096x4096 (batch 64) with one small image: refused on the grid's
    memory before the image's size is looked at."""
    graph = grid_task_graph(prefix="huge_keys", frames=1024, layout="auto", size=4096, batch=64,
                            keyframes=("0", ["key", 0]))
    graph["key"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}
    return graph


def _huge_latent_sampler():
    """ETCSampler given a fixture latent of 4 grids of 1024 frames of 4096x4096 (holding no memory)."""
    graph = grid_task_graph(prefix="huge_latent_sampler", frames=1024, layout="32x32", size=4096, batch=4,
                            source=["unused", 0])
    del graph["src_enc"], graph["src_pack"]
    graph["grid"] = {"class_type": "ETCVCUTTestShapeLatent", "inputs": {"batch": 4, "height": 16384,
                                                                         "width": 16384}}
    graph["sample"]["inputs"]["latent"] = ["grid", 0]
    return graph


@pytest.mark.parametrize("node, graph, batch", [("ETCSampler", _huge_grid_sampler, 4),
                                                ("ETCMixedEmbedding", _huge_grid_patch, 4),
                                                ("ETCEmptyGridLatent", _huge_empty_latent, 64),
                                                ("ETCKeyframes", _huge_keyframes, 64),
                                                ("ETCSampler", _huge_latent_sampler, 4)])
def test_a_grid_too_big_for_memory_is_refused_before_it_is_allocated(comfy_server, normal, node, graph, batch):
    before = tree_digest(*_folders(comfy_server))
    with PeakRSS(comfy_server) as rss:
        message, _ = refusal(comfy_server, graph())
    assert tree_digest(*_folders(comfy_server)) == before
    assert message.startswith(f"{node}: 1024 frames of 4096x4096 (batch {batch}) need about ")
    needed, free = (float(part.split(" GiB")[0].split()[-1]) for part in message.split(", and "))
    assert needed > free > 0 and " is free; sizes that fit: frames=" in message
    fewer = int(message.split("sizes that fit: frames=")[1].split()[0])
    assert 1 <= fewer < 1024
    assert rss.growth < 300 * MiB, f"the refusal grew the server by {rss.growth / MiB:.0f} MiB"
    normal()


SD21_256_FRAMES_GIB = 28.9  # etc_core.memory's floor for SD 2.1, 256 frames of 512x512, fp32, batch 1


@pytest.mark.parametrize("node", ["ETCSampler", "ETCMixedEmbedding"])
def test_sd21_at_256_frames_of_512x512_is_refused_where_it_cannot_fit(comfy_server, normal, node):
    """The issue's second size, with SD 2.1's real UNet layout (a meta-device model: shapes, no weights)."""
    free = psutil.virtual_memory().available
    if free > SD21_256_FRAMES_GIB * 2**30:
        pytest.skip(f"{free / 2**30:.1f} GiB free: SD 2.1 at 256 frames of 512x512 may fit here")
    if node == "ETCSampler":
        graph = etc_graph(frames=256, layout="auto", size=512, video=False, prefix="sd21_grid")
        graph["etc"]["inputs"]["model"] = ["load_meta", 0]
    else:
        graph = etc_patch_graph(me=(1.0, 10000.0), frames=256, layout="16x16", prefix="sd21_patch")
        graph["grid"] = {"class_type": "ETCVCUTTestShapeLatent", "inputs": {"batch": 1, "height": 1024,
                                                                             "width": 1024}}
        graph["me"]["inputs"]["model"] = ["load_meta", 0]
    graph["load_meta"] = {"class_type": "ETCVCUTTestMetaSD21", "inputs": {}}
    with PeakRSS(comfy_server) as rss:
        message, _ = refusal(comfy_server, graph)
    assert message.startswith(f"{node}: 256 frames of 512x512 need about ")
    needed = float(message.split(" need about ")[1].split(" GiB")[0])
    assert needed >= SD21_256_FRAMES_GIB and "sizes that fit: frames=" in message
    assert rss.growth < 300 * MiB, f"the refusal grew the server by {rss.growth / MiB:.0f} MiB"
    normal()


def test_save_video_encodes_frame_by_frame(comfy_server, normal):
    """128 frames of 512x512 (384 MiB as float): saving them grows the server by far less than the 2.7x of a
    whole-batch conversion. The frames come from a first run (EmptyImage itself peaks at 2x while making
    them): the measured second run reuses them from the cache and runs only the save node."""
    def graph(prefix):
        return {"img": {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": 128,
                                                                "color": 0x3366CC}},
                "video": {"class_type": "ETCSaveVideo", "inputs": {"images": ["img", 0], "filename_prefix": prefix,
                                                                   "frame_rate": 8.0, "format": "h264-mp4",
                                                                   "crf": 30}}}
    size = 128 * 512 * 512 * 3 * 4
    comfy_server.run(graph("big_batch_first"))
    with PeakRSS(comfy_server) as rss:
        (saved, _) = comfy_server.run(graph("big_batch"))["video"]["images"]
    assert os.path.getsize(comfy_server.output_path(saved["subfolder"], saved["filename"])) > 0
    assert rss.growth < 0.5 * size, f"saving {size / MiB:.0f} MiB of frames grew the server {rss.growth / MiB:.0f} MiB"
    normal()


# Silent wrong results


# Nodes whose FLOAT inputs need linked inputs (MODEL, IMAGE, ...): (node id, graph). Every other pack node
# with a FLOAT input gets a graph of itself alone, its widgets at their defaults.
LINKED_GRAPHS = {
    "ETCSampler": ("etc", lambda: _video_only("nan_video")),
    "ETCSaveVideo": ("video", lambda: _video_only("nan_video")),
    "ETCMixedEmbedding": ("me", lambda: etc_patch_graph(me=(1.0, 10000.0), prefix="nan_me")),
}


def _pack_nodes(server):
    return {node: info for node, info in server.get("/object_info").items()
            if info.get("category") in ("video/ETC", "video/VCUT")}


def _float_inputs(info) -> dict:
    return {name: spec[1] for section in ("required", "optional") for name, spec in info["input"].get(section, {}).items()
            if spec[0] == "FLOAT"}


def _alone(node, info):
    """``node`` alone, each required input at its default (a combo at its first option)."""
    inputs = {}
    for name, spec in info["input"]["required"].items():
        kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
        if isinstance(kind, list) or kind == "COMBO":
            choices = kind if isinstance(kind, list) else options.get("options", [])
            assert choices, f"{node}.{name} offers no choice on this server"
            inputs[name] = choices[0]
        elif kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
            inputs[name] = options.get("default", {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[kind])
        else:
            raise AssertionError(f"{node} takes a {kind}: add a graph for it to LINKED_GRAPHS")
    assert info.get("output_node"), f"{node} is not an output node: add a graph for it to LINKED_GRAPHS"
    return "n", {"n": {"class_type": node, "inputs": inputs}}


def test_nan_in_every_float_input_of_the_pack_is_refused_naming_it(comfy_server, normal, clip_dir, served_setup):
    """Every FLOAT input the server lists for the pack's nodes (ComfyUI's min/max check lets NaN through)."""
    shutil.copytree(clip_dir, os.path.join(comfy_server.base, "models", "clip_vision", "tiny-clip"),
                    dirs_exist_ok=True)  # ETCVideoFilter's list, as the trainer's needs a base model
    nodes = _pack_nodes(comfy_server)
    cases = [(node, name, options) for node, info in sorted(nodes.items())
             for name, options in sorted(_float_inputs(info).items())]
    assert {"ETCSampler", "ETCSaveVideo", "ETCMixedEmbedding", "ETCVideoFilter", "ETCTrainer"} <= {c[0] for c in cases}
    for node, name, options in cases:
        node_id, graph = (LINKED_GRAPHS[node][0], LINKED_GRAPHS[node][1]()) if node in LINKED_GRAPHS \
            else _alone(node, nodes[node])
        graph[node_id]["inputs"][name] = float("nan")
        before = tree_digest(*_folders(comfy_server))
        message, _ = refusal(comfy_server, graph)
        assert message == (f"{node}: {name} is nan, not a finite number; set it to a number in "
                           f"[{float(options['min'])}, {float(options['max'])}]"), (node, name)
        assert tree_digest(*_folders(comfy_server)) == before, (node, name)
    normal()


@pytest.mark.parametrize("fill, shown", [(float("nan"), "nan"), (1e30, "1e30")])
def test_fps_files_with_non_finite_or_huge_weights_are_refused(comfy_server, normal, fill, shown):
    name = f"weights_{shown}.safetensors"
    path = os.path.join(comfy_server.base, "models", "etc", name)
    module = FPSEmbedding(128)
    torch.nn.init.constant_(module.mlp[-1].weight, fill)
    save_fps_module(path, module, frames=4, layout="2x2", theta=1e4, base_model=TINY_BASE)
    message, _ = refusal(comfy_server, etc_graph(fps_weights=name, video=False, prefix="bad_weights"))
    assert message.startswith(f"fps_weights {name} holds NaN, infinite or huge (>= 10000) weights")
    normal()


def _saved_latent(server, graph, prefix):
    graph["save"]["inputs"]["prefix"] = prefix
    server.run(graph)
    return load_file(server.output_path(f"{prefix}.safetensors"))["latent"]


def _then(graph, node, after, inputs):
    """``graph`` with a second ``node`` (class of ``graph[after]``) right after ``after``."""
    graph[node] = {"class_type": graph[after]["class_type"], "inputs": dict(inputs, model=[after, 0])}
    graph["lincfg"]["inputs"]["model"] = [node, 0]
    return graph


def test_a_later_vcut_node_decides(comfy_server):
    def run(graph, prefix):
        return _saved_latent(comfy_server, graph, prefix)

    baseline = run(svd_graph(), "later_base")
    linear_drop = run(svd_graph(vcut=("linear", "drop")), "later_ld")
    assert not torch.equal(linear_drop, baseline)  # TCA drop changes the tiny SVD's result
    keep_after = _then(svd_graph(vcut=("linear", "drop")), "vcut2", "vcut", {"sca_mode": "keep", "tca_mode": "keep"})
    assert torch.equal(run(keep_after, "later_keep"), baseline)
    drop_after = _then(svd_graph(vcut=("keep", "keep")), "vcut2", "vcut", {"sca_mode": "linear", "tca_mode": "drop"})
    assert torch.equal(run(drop_after, "later_drop"), linear_drop)

    cut_1, cut_4 = run(svd_graph(cutoff=1), "later_c1"), run(svd_graph(cutoff=4), "later_c4")
    assert not torch.equal(cut_1, cut_4)
    assert torch.equal(run(_then(svd_graph(cutoff=1), "cutoff2", "cutoff", {"cutoff_step": 4}), "later_c1_4"), cut_4)
    assert torch.equal(run(_then(svd_graph(cutoff=4), "cutoff2", "cutoff", {"cutoff_step": 1}), "later_c4_1"), cut_1)


def test_video_filter_scores_each_caption_of_a_video(comfy_server, clip_dir, tmp_path):
    shutil.copytree(clip_dir, os.path.join(comfy_server.base, "models", "clip_vision", "tiny-clip"),
                    dirs_exist_ok=True)
    folder = os.path.join(comfy_server.base, "input", "pairs_one_video")
    os.makedirs(folder, exist_ok=True)
    _moving_square(os.path.join(folder, "red.mp4"), (255, 0, 0))
    captions = ["a red square", "yellow", "a white box moving left"]
    with open(os.path.join(folder, "pairs.jsonl"), "w") as f:
        f.writelines(json.dumps({"video": "red.mp4", "caption": c}) + "\n" for c in captions)
    comfy_server.run({"f": {"class_type": "ETCVideoFilter", "inputs": {
        "manifest": "pairs_one_video/pairs.jsonl", "output": "pairs_one_video/kept.jsonl", "alpha": 1.0,
        "clip": "tiny-clip", "frames": 2}}})
    _, *scores = read_jsonl(comfy_server.output_path("pairs_one_video", "kept.jsonl.scores.jsonl"))
    assert [s["caption"] for s in scores] == captions
    assert len({s["clip_score"] for s in scores}) == 3


def test_fps_conditioning_refuses_an_svd_model(comfy_server, normal):
    graph = {"load_svd": {"class_type": "ETCVCUTTestTinySVD", "inputs": {"seed": 0}},
             "fps": {"class_type": "ETCFPSConditioning", "inputs": {"model": ["load_svd", 0], "fps": 8,
                                                                    "fps_weights": "untrained (zero init, no-op)"}},
             "grid": {"class_type": "ETCEmptyGridLatent", "inputs": {"frames": 4, "frame_width": 32,
                                                                    "frame_height": 32, "layout": "auto",
                                                                    "batch_size": 1}},
             "cond": {"class_type": "ETCVCUTTestRandomConditioning", "inputs": {"seed": 1, "dim": 64, "tokens": 1}},
             "sample": {"class_type": "KSampler", "inputs": {
                 "model": ["fps", 0], "seed": 0, "steps": 1, "cfg": 1.0, "sampler_name": "euler",
                 "scheduler": "normal", "positive": ["cond", 0], "negative": ["cond", 0],
                 "latent_image": ["grid", 0], "denoise": 1.0}},
             "save": {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": "fps_svd",
                                                                         "latent": ["sample", 0]}}}
    message, _ = refusal(comfy_server, graph)
    assert message.startswith("ETCFPSConditioning: the MODEL is not an SD 2.x-like image UNet: it is a video UNet")
    normal()


# Unclear errors


def test_audio_at_a_rate_aac_lacks_is_resampled(comfy_server, tmp_path):
    graph = _video_only("odd_rate")
    graph["tone"] = {"class_type": "ETCVCUTTestTone", "inputs": {"seconds": 3.0, "sample_rate": 11111, "channels": 1}}
    graph["video"]["inputs"]["audio"] = ["tone", 0]
    entry = comfy_server.run(graph)["video"]["images"][0]
    rate, codec, seconds = audio_samples(comfy_server, entry, tmp_path)
    assert (rate, codec) == (8, "aac") and 0.45 < seconds < 0.7


def test_a_long_prefix_is_refused_naming_the_input_and_cut(comfy_server, normal):
    prefix = "p" * 300
    before = tree_digest(*_folders(comfy_server))
    message, _ = refusal(comfy_server, _video_only(prefix))
    assert message == (f"filename_prefix '{'p' * 39}... (300 characters): the part '{'p' * 39}... (300 characters) "
                       "is 300 bytes, longer than the 227 a file name can take here; shorten it")
    assert tree_digest(*_folders(comfy_server)) == before
    normal()


def test_a_huge_layout_is_not_echoed_back(comfy_server, normal):
    layout = "4x" + "4" * 100000
    message, history = refusal(comfy_server, etc_graph(layout=layout, video=False, prefix="huge_layout"))
    assert message == f"layout '4x{'4' * 37}... (100002 characters) is not 'auto' or 'RxC' (for example '4x4')"
    assert layout[:1000] not in history.replace(json.dumps(layout)[1:-1], "")  # only the prompt itself holds it
    normal()


@pytest.mark.parametrize("node", ["ETCSampler", "ETCEmptyGridLatent"])
def test_a_frame_size_that_is_not_a_multiple_of_8_is_refused(comfy_server, normal, node):
    if node == "ETCSampler":
        graph = etc_graph(video=False, prefix="size_12")
        graph["etc"]["inputs"]["frame_width"] = 12
    else:
        graph = etc_patch_graph(prefix="size_12")
        graph["grid"]["inputs"]["frame_width"] = 12
    message, _ = refusal(comfy_server, graph)
    assert message == "frame_width 12 is not a multiple of 8 (one latent pixel is 8x8 frame pixels); use 8 or 16"
    normal()


def test_video_written_from_image_frames_matches_the_array(tmp_path):
    """etc_core.files.video_io.ImageFrames (the node's frame-by-frame source) encodes what the uint8 array does."""
    from etc_core.files.video_io import ImageFrames
    from etc_vcut_dev.video_read import read_video_frames
    torch.manual_seed(0)
    images = torch.rand(5, 34, 30, 3)
    array = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    frames = ImageFrames(images)
    assert all((frames[i] == array[i]).all() for i in range(len(array)))  # the encoders get the same pixels
    for fmt in ("h264-mp4", "webp"):
        lazy = read_video_frames(write_video(str(tmp_path / f"lazy.{fmt}"), frames, 8.0, fmt))
        whole = read_video_frames(write_video(str(tmp_path / f"whole.{fmt}"), array, 8.0, fmt))
        # one run on the loaded 2-core machine decoded differently by a few levels: same pixels, coding noise
        assert lazy.shape == whole.shape and np.abs(lazy.astype(int) - whole.astype(int)).mean() < 2.0
