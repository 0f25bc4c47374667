"""ETC's grid tasks in a real ComfyUI (HTTP API) on the tiny SD 2.x fixture: kept keyframe cells,
video-to-video's denoise, per-frame prompts reaching only their cells, the guidance cutoff on a many-token
model, and the refusals of bad input."""
import pytest
import torch
from safetensors.torch import load_file

from etc_core import unpack
from etc_vcut_dev.graphs import recorded_events
from etc_vcut_dev.grid_tasks import color_images, grid_task_graph
from test_server_sessions import CASES, _host_samplers, check_cutoff_batches

SIZE = 64


def _run(server, graph, prefix):
    server.run(graph)
    return load_file(server.output_path(f"{prefix}.safetensors"))


def _keyframe_graph(prefix, numbers="0, 3", colors=(0xFF0000, 0x00FF00), **kwargs):
    g = grid_task_graph(prefix=prefix, **kwargs, keyframes=(numbers, ["kf_img", 0]))
    g["kf_img"] = {"class_type": "ImageScale", "inputs": {"image": color_images(g, "key", colors, SIZE),
                                                          "upscale_method": "nearest-exact", "width": SIZE,
                                                          "height": SIZE, "crop": "disabled"}}
    g["save_keys"] = {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": prefix + "_keys",
                                                                         "latent": ["keys", 0]}}
    return g


# The stock KSampler keeps the masked latent as exactly as its last step lands on the (masked) prediction:
# exactly for k-diffusion samplers, not for UniPC; ETC Sampler puts the kept cells back after any sampler.
@pytest.mark.parametrize("stock,sampler", [(False, "euler"), (False, "uni_pc"), (True, "euler"),
                                           (True, "dpmpp_2m_sde")])
def test_keyframe_cells_are_kept_and_the_others_generated(comfy_server, stock, sampler):
    prefix = f"keys_{int(stock)}_{sampler}"
    out = _run(comfy_server, _keyframe_graph(prefix, stock=stock, sampler=sampler, batch=2), prefix)["latent"]
    given = load_file(comfy_server.output_path(f"{prefix}_keys.safetensors"))["latent"]
    assert out.shape == given.shape == (2, 4, 16, 16)
    cells, given_cells = unpack(out, 2, 2), unpack(given, 2, 2)
    for k in (0, 3):
        assert (cells[:, k] - given_cells[:, k]).abs().max() <= 1e-5 * given_cells[:, k].abs().max()
    assert given_cells[:, 0].abs().mean() > 0 and torch.equal(given_cells[:, 1], torch.zeros_like(given_cells[:, 1]))
    for k in (1, 2):
        assert cells[:, k].abs().mean() > 1e-3, "a generated cell stayed empty"
    assert (cells[0, 1:3] - cells[1, 1:3]).abs().max() > 1e-3, "the two clips of the batch got the same noise"


def test_keyframes_go_into_a_given_latent(comfy_server):
    """Keyframes on a packed source clip: the kept cells hold the keyframe, the others the source."""
    g = _keyframe_graph("keys_src", numbers="2", colors=(0x0000FF,), source=["src_img", 0], denoise=1.0)
    g["src_img"] = {"class_type": "ImageBatch", "inputs": {"image1": color_images(g, "s1", [0x808080] * 2, SIZE),
                                                           "image2": color_images(g, "s2", [0xFFFF00] * 2, SIZE)}}
    g["save_src"] = {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": "keys_src_src",
                                                                        "latent": ["src_pack", 0]}}
    _run(comfy_server, g, "keys_src")
    keys = unpack(load_file(comfy_server.output_path("keys_src_keys.safetensors"))["latent"], 2, 2)
    source = unpack(load_file(comfy_server.output_path("keys_src_src.safetensors"))["latent"], 2, 2)
    assert torch.equal(keys[:, [0, 1, 3]], source[:, [0, 1, 3]])
    assert (keys[:, 2] - source[:, 2]).abs().max() > 1e-3


def test_video_to_video_denoise_reaches_the_sampler(comfy_server):
    """ETC Sampler at denoise d equals the stock KSampler at d on the same packed clip and model patch, and a
    lower denoise stays nearer the source."""
    def graph(prefix, denoise, stock=False):
        g = grid_task_graph(prefix=prefix, source=["src_img", 0], denoise=denoise, stock=stock, steps=4)
        g["src_img"] = {"class_type": "ImageBatch", "inputs": {
            "image1": color_images(g, "a", [0xFF0000, 0x00FF00], SIZE),
            "image2": color_images(g, "b", [0x0000FF, 0xFFFFFF], SIZE)}}
        g["save_src"] = {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": prefix + "_src",
                                                                            "latent": ["src_pack", 0]}}
        return g

    ours = _run(comfy_server, graph("v2v_ours", 0.4), "v2v_ours")["latent"]
    stock = _run(comfy_server, graph("v2v_stock", 0.4, stock=True), "v2v_stock")["latent"]
    full = _run(comfy_server, graph("v2v_full", 1.0), "v2v_full")["latent"]
    source = load_file(comfy_server.output_path("v2v_ours_src.safetensors"))["latent"]
    assert (ours - stock).abs().max() <= 1e-5 * stock.abs().max()
    assert (ours - source).norm() < (full - source).norm()


def _three_runs(server, name, stock, sampler):
    """One euler step (the first evaluation sees the same noisy grid in every run): global prompt B with
    frames 1-2 prompted A, and A and B alone."""
    def run(prefix, **kwargs):
        return _run(server, grid_task_graph(prefix=prefix, steps=1, stock=stock, sampler=sampler, **kwargs),
                    prefix)["latent"]

    mixed = run(f"{name}_mixed", text="a blue cube", frame_prompts=[("1-2", "a red ball bouncing")])
    only_a = run(f"{name}_a", text="a red ball bouncing", frame_prompts=[("0-3", "a red ball bouncing")])
    only_b = run(f"{name}_b", text="a blue cube", frame_prompts=[("0-3", "a blue cube")])
    return [unpack(t, 2, 2) for t in (mixed, only_a, only_b)]


@pytest.mark.parametrize("stock,sampler", [(False, "euler"), (True, "euler"), (True, "dpmpp_2m")])
def test_per_frame_prompt_reaches_only_its_cells(comfy_server, stock, sampler):
    mixed, only_a, only_b = _three_runs(comfy_server, f"pf_{int(stock)}_{sampler}", stock, sampler)
    scale = only_b.abs().max()
    assert (only_a - only_b).abs().max() > 1e-3 * scale, "the two prompts must give different predictions"
    assert (mixed[:, [1, 2]] - only_a[:, [1, 2]]).abs().max() <= 1e-5 * scale
    assert (mixed[:, [0, 3]] - only_b[:, [0, 3]]).abs().max() <= 1e-5 * scale


def _cutoff_run(server, name, cfg=30.0, **kwargs):
    """cfg 30: the tiny random text model's cond and uncond differ little, guidance makes it show."""
    return _run(server, grid_task_graph(prefix=name, steps=4, cfg=cfg, **kwargs), name)["latent"]


def test_cutoff_on_a_text_model_runs_the_conditional_branch_alone(comfy_server):
    """After c: one pass per step (the cond), batched or apart alike; c = 0 is the cond's prediction (cfg 1),
    c = steps is plain guidance."""
    batched = _cutoff_run(comfy_server, "sd2_cut_batched", cutoff=2, count_file="sd2_cut_batched.json")
    apart = _cutoff_run(comfy_server, "sd2_cut_apart", cutoff=2, low_memory=True, count_file="sd2_cut_apart.json")
    calls = [(e["batch"], e["cond_or_uncond"]) for e in recorded_events(comfy_server, "sd2_cut_batched.json")
             if "batch" in e]
    assert [(b, sorted(k)) for b, k in calls] == [(2, [0, 1])] * 2 + [(1, [0])] * 2
    calls = [(e["batch"], e["cond_or_uncond"]) for e in recorded_events(comfy_server, "sd2_cut_apart.json")
             if "batch" in e]
    assert calls == [(1, [1]), (1, [0])] * 2 + [(1, [0])] * 2
    # Batch 2 against 1 in the guided steps differs in float rounding, which cfg 30 magnifies.
    tolerance = 3e-5 * batched.abs().max()
    assert (apart - batched).abs().max() <= tolerance
    guided = _cutoff_run(comfy_server, "sd2_guided")
    assert (guided - batched).abs().max() > 10 * tolerance, "the cut steps must change the result"
    assert (_cutoff_run(comfy_server, "sd2_cut_all", cutoff=4) - guided).abs().max() <= tolerance
    cond_alone = _cutoff_run(comfy_server, "sd2_cfg1", cfg=1.0)
    assert (_cutoff_run(comfy_server, "sd2_cut_0", cutoff=0) - cond_alone).abs().max() <= tolerance


def test_cutoff_with_per_frame_prompts_runs_every_cond_entry_and_no_uncond(comfy_server):
    prompts = [("0-1", "a red ball bouncing"), ("2-3", "a blue cube")]
    cut = _cutoff_run(comfy_server, "pf_cut_0", cutoff=0, frame_prompts=prompts, count_file="pf_cut.json")
    calls = [e for e in recorded_events(comfy_server, "pf_cut.json") if "batch" in e]
    assert calls and all(1 not in e["cond_or_uncond"] for e in calls)
    assert sum(e["batch"] for e in calls) == 2 * 4, "two prompt entries, four steps"
    cond_alone = _cutoff_run(comfy_server, "pf_cfg1", cfg=1.0, frame_prompts=prompts)
    assert (cut - cond_alone).abs().max() <= 1e-4 * cond_alone.abs().max()


@pytest.mark.parametrize("sampler,cutoff", CASES)
def test_text_model_cutoff_counts_steps_for_every_sampler(comfy_server, sampler, cutoff):
    """The SVD cutoff's sampler coverage (tests/test_server_sessions.py) on the many-token model: batch 2
    (cond and uncond) before c, the cond's 1 after."""
    if sampler not in _host_samplers(comfy_server):
        pytest.skip(f"this ComfyUI has no sampler {sampler}")
    name = f"sd2_sampler_{sampler}_{cutoff}"
    comfy_server.run(grid_task_graph(prefix=name, steps=4, size=32, frames=1, layout="1x1", sampler=sampler,
                                     scheduler="karras", cutoff=cutoff, count_file=f"{name}.json"))
    check_cutoff_batches(recorded_events(comfy_server, f"{name}.json"), sampler, cutoff, per_pass=1)


def _refused(server, graph, match):
    with pytest.raises(Exception, match=match):
        server.run(graph)


@pytest.mark.parametrize("numbers,colors,match", [
    ("4", (0xFF0000,), "frame_numbers: frame 4 is out of range"),
    ("1, 1", (0xFF0000, 0xFF0000), "frame 1 is given more than once"),
    ("0", (0xFF0000, 0x00FF00), "2 images for 1 frame numbers"),
])
def test_bad_keyframes_are_refused(comfy_server, numbers, colors, match):
    _refused(comfy_server, _keyframe_graph(f"bad_keys_{len(colors)}", numbers=numbers, colors=colors), match)


def test_keyframes_of_another_size_are_refused(comfy_server):
    g = _keyframe_graph("bad_key_size")
    g["kf_img"]["inputs"].update(width=48)
    _refused(comfy_server, g, r"the images are 48x64, the grid's frames 64x64; scale them")


def test_a_latent_of_another_grid_is_refused(comfy_server):
    g = _keyframe_graph("bad_grid", numbers="0", colors=(0xFF0000,))
    g["sample"]["inputs"].update(frames=2, layout="1x2")
    _refused(comfy_server, g, "made as a 2x2 grid of 4 frames; set frames=4 and layout=2x2")


@pytest.mark.parametrize("prompts,match", [([("0-2", "a"), ("2-3", "b")], "frame 2 already has its own prompt"),
                                           ([("3-1", "a")], "leaves no frame"), ([(",", "a")], "names no frame")])
def test_bad_frame_ranges_are_refused(comfy_server, prompts, match):
    _refused(comfy_server, grid_task_graph(prefix="bad_ranges", frame_prompts=prompts), match)


@pytest.mark.parametrize("denoise,source,match", [(float("nan"), True, "denoise"), (0.5, False, "needs a latent")])
def test_bad_denoise_is_refused(comfy_server, denoise, source, match):
    g = grid_task_graph(prefix="bad_denoise", denoise=denoise, source=["src", 0] if source else None)
    if source:
        g["src"] = {"class_type": "ImageBatch", "inputs": {"image1": color_images(g, "a", [0] * 2, SIZE),
                                                           "image2": color_images(g, "b", [0] * 2, SIZE)}}
    _refused(comfy_server, g, match)
