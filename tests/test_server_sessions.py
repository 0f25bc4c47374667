"""The pack as a long-running ComfyUI server runs it: models stay loaded between prompts (on the
early-2024 host with the last prompt's object patches still applied), cond and uncond run as separate
UNet calls when free memory is short, and every sampler ComfyUI ships."""
import os

import pytest
import torch
from safetensors.torch import load_file

from etc_vcut_dev.comfy_host import ComfyServer
from etc_core import FPSEmbedding, save_fps_module
from etc_vcut_dev.graphs import etc_graph, etc_patch_graph, recorded_events, svd_graph, unet_calls

TINY_SD2 = "sd-unet:in=4,ch=32,temb=128"


def _write_fps_files(server):
    for seed in (1, 2):
        torch.manual_seed(seed)
        module = FPSEmbedding(128)
        torch.nn.init.normal_(module.mlp[-1].weight, std=0.5)
        save_fps_module(os.path.join(server.base, "models", "etc", f"session_fps_{seed}.safetensors"), module,
                        frames=4, layout="2x2", theta=10000.0, base_model=TINY_SD2)


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory):
    """A second server; every graph on it runs with no model loaded and nothing cached."""
    server = ComfyServer(str(tmp_path_factory.mktemp("fresh")))
    _write_fps_files(server)
    server.start()
    yield server
    server.stop()


def _tensors(server, graph, prefix):
    server.run(graph)
    return load_file(server.output_path(f"{prefix}.safetensors"))


# (name, graph before the change, graph after): one setting of one pack node changed between two prompts.
CHANGES = [
    ("me_strength", lambda p: etc_patch_graph(me=(1.0, 10000.0), prefix=p),
     lambda p: etc_patch_graph(me=(0.5, 10000.0), prefix=p)),
    ("me_theta", lambda p: etc_patch_graph(me=(1.0, 10000.0), prefix=p),
     lambda p: etc_patch_graph(me=(1.0, 50.0), prefix=p)),
    ("fps", lambda p: etc_patch_graph(fps=(8, "session_fps_1.safetensors"), prefix=p),
     lambda p: etc_patch_graph(fps=(24, "session_fps_1.safetensors"), prefix=p)),
    ("fps_weights", lambda p: etc_patch_graph(fps=(8, "session_fps_1.safetensors"), prefix=p),
     lambda p: etc_patch_graph(fps=(8, "session_fps_2.safetensors"), prefix=p)),
    ("me_then_fps", lambda p: etc_patch_graph(me=(1.0, 10000.0), fps=(8, "session_fps_1.safetensors"), prefix=p),
     lambda p: etc_patch_graph(me=(2.0, 10000.0), fps=(30, "session_fps_2.safetensors"), prefix=p)),
    ("vcut_modes", lambda p: svd_graph(vcut=("linear", "drop"), prefix=p),
     lambda p: svd_graph(vcut=("keep", "linear"), prefix=p)),
    ("vcut_again", lambda p: svd_graph(vcut=("linear", "linear"), prefix=p),
     lambda p: svd_graph(vcut=("linear", "drop"), prefix=p)),
    ("cutoff_step", lambda p: svd_graph(vcut=("linear", "drop"), cutoff=2, prefix=p),
     lambda p: svd_graph(vcut=("linear", "drop"), cutoff=4, prefix=p)),
    ("etc_sampler_layout", lambda p: etc_graph(layout="2x2", prefix=p, video=False),
     lambda p: etc_graph(layout="1x4", prefix=p, video=False)),
    ("etc_sampler_theta", lambda p: etc_graph(prefix=p, video=False),
     lambda p: etc_graph(theta=100.0, prefix=p, video=False)),
    ("etc_sampler_fps", lambda p: etc_graph(fps=8, fps_weights="session_fps_1.safetensors", prefix=p, video=False),
     lambda p: etc_graph(fps=24, fps_weights="session_fps_1.safetensors", prefix=p, video=False)),
]


def _beside(first: dict, second: dict) -> dict:
    """One prompt holding both graphs: the second's nodes renamed, the shared model loader kept. The
    first graph's nodes are unchanged, so the server reuses their cached outputs and its patched model
    stays loaded while the second graph's pack nodes run (a user comparing two settings side by side)."""
    shared = {key for key, node in second.items() if node["class_type"].startswith("ETCVCUTTestTiny")}
    rename = {key: key if key in shared else f"b_{key}" for key in second}
    graph = dict(first)
    for key, node in second.items():
        if key not in shared:
            inputs = {k: [rename[v[0]], v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
            graph[rename[key]] = dict(node, inputs=inputs)
    return graph


@pytest.mark.parametrize("name,before,after", CHANGES, ids=[c[0] for c in CHANGES])
def test_requeued_setting_equals_fresh_server(comfy_server, fresh_server, name, before, after):
    if not os.path.exists(os.path.join(comfy_server.base, "models", "etc", "session_fps_1.safetensors")):
        _write_fps_files(comfy_server)
    first = _tensors(comfy_server, before(f"{name}_before"), f"{name}_before")
    requeued = _tensors(comfy_server, _beside(before(f"{name}_before"), after(f"{name}_after")), f"{name}_after")
    fresh_server.unload_models()
    fresh = _tensors(fresh_server, after(f"{name}_fresh"), f"{name}_fresh")
    for key in fresh:
        assert torch.equal(requeued[key], fresh[key]), f"{name}: {key} differs from a fresh server's"
    assert any(not torch.equal(first[key], fresh[key]) for key in fresh), "the change must change the output"


def _steps_of_calls(events):
    """Sampler step of each recorded UNet call, from the progress steps interleaved with them: a
    call directly followed by progress i + 1 is step i's first; other calls belong to the last step."""
    steps, last = [], 0
    for k, event in enumerate(events):
        if "progress" in event:
            last = event["progress"] - 1
        else:
            following = events[k + 1] if k + 1 < len(events) else {}
            steps.append(following["progress"] - 1 if "progress" in following else last)
    return steps


def test_low_memory_cutoff_makes_one_pass_per_step_and_matches_batched(comfy_server):
    steps, cutoff = 6, 3
    batched = _tensors(comfy_server, svd_graph(steps=steps, vcut=("linear", "linear"), cutoff=cutoff,
                                               prefix="lowmem_batched"), "lowmem_batched")["latent"]
    graph = svd_graph(steps=steps, vcut=("linear", "linear"), cutoff=cutoff, low_memory=True,
                      count_file="lowmem_passes.json", prefix="lowmem_apart")
    apart = _tensors(comfy_server, graph, "lowmem_apart")["latent"]
    calls = unet_calls(comfy_server, "lowmem_passes.json")
    assert [(c["batch"], c["cond_or_uncond"]) for c in calls] == \
        [(4, [1]), (4, [0])] * cutoff + [(4, [0])] * (steps - cutoff)
    guided = _tensors(comfy_server, svd_graph(steps=steps, vcut=("linear", "linear"), low_memory=True,
                                              prefix="lowmem_guided"), "lowmem_guided")["latent"]
    assert (apart - batched).abs().max() <= 1e-5 * batched.abs().max()
    assert (guided - batched).abs().max() > 1e-3 * batched.abs().max()


@pytest.mark.parametrize("guidance", ["VideoLinearCFGGuidance", "VideoTriangleCFGGuidance"])
def test_cutoff_composes_with_video_cfg_in_either_order(comfy_server, guidance):
    def run(prefix, after, **kwargs):
        graph = svd_graph(vcut=("linear", "drop"), cutoff=3, guidance=guidance, cutoff_after_guidance=after,
                          prefix=prefix, **kwargs)
        return _tensors(comfy_server, graph, prefix)["latent"]

    before = run(f"order_{guidance}_before", False)
    after = run(f"order_{guidance}_after", True, count_file=f"order_{guidance}.json")
    assert torch.equal(before, after)
    assert [c["batch"] for c in unet_calls(comfy_server, f"order_{guidance}.json")] == [8, 8, 8, 4, 4, 4]


# Every sampler the CI hosts and ComfyUI 0.8.0 ship (each list holds the one before); a test below fails when a
# host lists one that is not here, so a new sampler is never left untested.
SAMPLERS = ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0",
            "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
            "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde",
            "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu",
            "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp",
            "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
            "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim",
            "uni_pc", "uni_pc_bh2"]
# Guidance depends on the model's output only for this one: its steps are not known before it runs.
ADAPTIVE = {"dpm_adaptive"}


# Model calls in each of the 4 steps, read off the samplers' loops (comfy/k_diffusion/sampling.py and
# comfy/extra_samplers/uni_pc.py; a sampler's loop is the same on every host that has it), not from the
# oracle. Once per step: the multistep, ancestral and exponential samplers reuse earlier outputs, and
# UniPC's corrector evaluation is the next step's model value.
ONE_CALL = ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "lms", "dpmpp_2m", "dpmpp_2m_cfg_pp",
            "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde",
            "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "ddim", "res_multistep",
            "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
            "gradient_estimation_cfg_pp", "er_sde", "sa_solver", "uni_pc", "uni_pc_bh2"]
# Twice in every step but the last (a plain step to sigma 0): Heun's corrector on the next sigma (also
# 0.8.0's exp_heun_2_x0 pair: SEEDS-2 with its stage at r = 1), the others' midpoint (SEEDS-2's stage).
TWO_STAGE = ["heun", "dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde",
             "dpmpp_sde_gpu", "seeds_2", "exp_heun_2_x0", "exp_heun_2_x0_sde"]
CALLS_PER_STEP = {
    **{s: [1, 1, 1, 1] for s in ONE_CALL},
    **{s: [2, 2, 2, 1] for s in TWO_STAGE},
    "seeds_3": [3, 3, 3, 1],  # two intermediate stages, none in the last step
    "heunpp2": [3, 3, 2, 1],  # Heun++ evaluates two sigmas ahead while there are two, then Heun, then Euler
    "sa_solver_pece": [1, 2, 2, 2],  # PECE evaluates the corrected state in every step but the first
    "dpm_fast": [3, 1],  # 4 evaluations make DPM-Solver-Fast's two steps, of orders 3 and 1
}
EXPECTED = {s: {c: [8 if step < c else 4 for step, n in enumerate(calls) for _ in range(n)] for c in (1, 2)}
            for s, calls in CALLS_PER_STEP.items()}


def _host_samplers(server) -> list:
    spec = server.get("/object_info/KSampler")["KSampler"]["input"]["required"]["sampler_name"]
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def test_every_host_sampler_is_in_the_sampler_list(comfy_server):
    assert [s for s in _host_samplers(comfy_server) if s not in SAMPLERS] == []


# Every sampler at c = 2 of 4 steps; c = 1 (the first boundary, where a corrector or midpoint is easiest to
# mistake for the next step) for euler and those that evaluate more than once in a step, or for all with
# ETCVCUT_ALL_SAMPLER_CASES=1.
CASES = [(sampler, 2) for sampler in SAMPLERS] + [
    (sampler, 1) for sampler in SAMPLERS
    if os.environ.get("ETCVCUT_ALL_SAMPLER_CASES") or sampler == "euler" or max(CALLS_PER_STEP.get(sampler, [1])) > 1]


@pytest.mark.parametrize("sampler,cutoff", CASES)
def test_cutoff_counts_steps_for_every_sampler(comfy_server, sampler, cutoff):
    if sampler not in _host_samplers(comfy_server):
        pytest.skip(f"this ComfyUI has no sampler {sampler}")
    steps, name = 4, f"sampler_{sampler}_{cutoff}"
    graph = svd_graph(steps=steps, vcut=("linear", "drop"), cutoff=cutoff, sampler=sampler, count_file=f"{name}.json",
                      prefix=name)
    comfy_server.run(graph)
    check_cutoff_batches(recorded_events(comfy_server, f"{name}.json"), sampler, cutoff, per_pass=4)


def check_cutoff_batches(events, sampler, cutoff, per_pass):
    """The recorded UNet calls batch cond and uncond (2 * ``per_pass``) in the steps before ``cutoff`` and
    one pass after, step by step as the progress events tell and as EXPECTED lists them."""
    batches = [e["batch"] for e in events if "batch" in e]
    if sampler in ADAPTIVE:
        assert set(batches) == {2 * per_pass}, batches
        return
    call_steps = _steps_of_calls(events)
    assert batches == [per_pass * (2 if step < cutoff else 1) for step in call_steps], \
        f"{sampler}: steps per call {call_steps}"
    assert batches == [b * per_pass // 4 for b in EXPECTED[sampler][cutoff]]


def test_every_sampler_with_known_steps_has_a_hand_derived_call_list():
    assert sorted(CALLS_PER_STEP) == sorted(set(SAMPLERS) - ADAPTIVE)
