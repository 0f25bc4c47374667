"""VCUT inside a real ComfyUI (server over HTTP), tiny SVD fixture, fp32."""
import pytest
import torch
from safetensors.torch import load_file

from etc_vcut_dev.graphs import sd2_through, svd_graph, unet_calls

STEPS = 6


def _run(server, **kwargs):
    server.run(svd_graph(steps=STEPS, **kwargs))
    return load_file(server.output_path(f"{kwargs['prefix']}.safetensors"))["latent"]


def _close(a, b, tol=1e-5):
    return (a - b).abs().max().item() <= tol


@pytest.fixture(scope="module")
def baseline(comfy_server):
    return _run(comfy_server, prefix="baseline")


def test_linear_sca_and_tca_equal_unpatched_run(comfy_server, baseline):
    patched = _run(comfy_server, prefix="linear", vcut=("linear", "linear"))
    assert patched.shape == baseline.shape == (4, 4, 8, 8)
    assert _close(baseline, patched)
    assert not torch.equal(baseline, torch.zeros_like(baseline))


def test_tca_drop_equals_zeroed_tca_reference(comfy_server, baseline):
    dropped = _run(comfy_server, prefix="drop", vcut=("keep", "drop"))
    reference = _run(comfy_server, prefix="drop_ref", loader={"class_type": "ETCVCUTTestZeroTCA",
                                                               "inputs": {"seed": 0}})
    assert _close(reference, dropped)
    assert not _close(baseline, dropped, tol=1e-3), "dropping TCA must change a model whose TCA is not zero"


@pytest.mark.parametrize("cutoff", [0, 3, STEPS])
def test_cutoff_one_pass_per_step_after_c(comfy_server, baseline, cutoff):
    latent = _run(comfy_server, prefix=f"cut{cutoff}", vcut=("linear", "linear"), cutoff=cutoff,
                  count_file=f"passes{cutoff}.json")
    passes = unet_calls(comfy_server, f"passes{cutoff}.json")
    assert len(passes) == STEPS, passes          # exactly one UNet forward per step
    for step, call in enumerate(passes):
        if step < cutoff:
            assert sorted(call["cond_or_uncond"]) == [0, 1] and call["batch"] == 8
        else:
            assert call["cond_or_uncond"] == [0] and call["batch"] == 4
    if cutoff == STEPS:
        assert _close(baseline, latent)
    else:
        assert not _close(baseline, latent, tol=1e-3)


def test_cutoff_steps_before_c_equal_baseline(comfy_server):
    """Per-call sums of UNet inputs and outputs: identical to the baseline before c."""
    def passes(prefix, cutoff):
        _run(comfy_server, prefix=prefix, vcut=("linear", "linear"), cutoff=cutoff, count_file=f"{prefix}.json")
        return unet_calls(comfy_server, f"{prefix}.json")

    base, cut = passes("sums_base", STEPS), passes("sums_cut", 3)
    for step in range(3):
        assert cut[step]["input_sum"] == base[step]["input_sum"]
        assert cut[step]["output_sums"] == base[step]["output_sums"]
    assert cut[3]["input_sum"] == base[3]["input_sum"]
    assert cut[3]["output_sums"][0] != base[3]["output_sums"][0]


def test_two_images_in_one_session_have_no_stale_cache(comfy_server, baseline):
    other_base = _run(comfy_server, prefix="other_base", color=0xCC3311)
    other_vcut = _run(comfy_server, prefix="other_vcut", color=0xCC3311, vcut=("linear", "linear"))
    first_vcut = _run(comfy_server, prefix="first_vcut_again", vcut=("linear", "linear"))
    assert not _close(baseline, other_base, tol=1e-3)
    assert _close(other_base, other_vcut)
    assert _close(baseline, first_vcut)
    # The shared model object is unchanged: the plain graph still gives the baseline bit for bit.
    assert torch.equal(_run(comfy_server, prefix="baseline_again"), baseline)


def test_not_svd_model_gets_clear_error(comfy_server):
    g = sd2_through("VCUTPatchSVD", {"sca_mode": "linear", "tca_mode": "drop"}, "x")
    with pytest.raises(Exception, match="not a Stable Video Diffusion UNet"):
        comfy_server.run(g)


def _with_sampler(graph, kind):
    """Swap the graph's KSampler for KSamplerAdvanced or SamplerCustom (same model, noise and schedule)."""
    inputs = graph["sample"]["inputs"]
    common = {"model": inputs["model"], "cfg": inputs["cfg"], "positive": inputs["positive"],
              "negative": inputs["negative"], "latent_image": inputs["latent_image"]}
    if kind == "KSamplerAdvanced":
        graph["sample"] = {"class_type": kind, "inputs": dict(
            common, add_noise="enable", noise_seed=inputs["seed"], steps=inputs["steps"],
            sampler_name=inputs["sampler_name"], scheduler=inputs["scheduler"], start_at_step=0,
            end_at_step=10000, return_with_leftover_noise="disable")}
    else:
        graph["sigmas"] = {"class_type": "KarrasScheduler", "inputs": {"steps": inputs["steps"], "sigma_max": 700.0,
                                                                       "sigma_min": 0.002, "rho": 7.0}}
        graph["select"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": inputs["sampler_name"]}}
        graph["sample"] = {"class_type": kind, "inputs": dict(common, add_noise=True, noise_seed=inputs["seed"],
                                                              sampler=["select", 0], sigmas=["sigmas", 0])}
    return graph


@pytest.mark.parametrize("kind", ["KSamplerAdvanced", "SamplerCustom"])
def test_other_samplers_exact_linear_and_cutoff_passes(comfy_server, kind):
    def run(prefix, **kwargs):
        comfy_server.run(_with_sampler(svd_graph(steps=STEPS, prefix=prefix, **kwargs), kind))
        return load_file(comfy_server.output_path(f"{prefix}.safetensors"))["latent"]

    base = run(f"{kind}_base")
    assert _close(base, run(f"{kind}_linear", vcut=("linear", "linear")))
    run(f"{kind}_cut", vcut=("linear", "drop"), cutoff=2, count_file=f"{kind}_passes.json")
    batches = [call["batch"] for call in unet_calls(comfy_server, f"{kind}_passes.json")]
    assert batches == [8, 8] + [4] * (STEPS - 2)
