"""nodes/guidance_cutoff.py without a host: the pack imported as ComfyUI's loader imports it, fake model calls."""
import subprocess
import sys

import pytest
import torch

from etc_vcut_dev.pack import pack_submodule

SIGMAS = (3.0, 2.0, 1.0)
COND_CONTEXT, UNCOND_CONTEXT = torch.zeros(1, 1, 4), torch.ones(1, 1, 4)


@pytest.fixture(scope="module")
def cutoff_module():
    return pack_submodule("nodes.guidance_cutoff")


def _plan(sigmas):
    """One evaluation per step, as the pack's own copy of vcut_core (the one its nodes use) plans them."""
    return [pack_submodule("vcut_core").Evaluation(sigma, step) for step, sigma in enumerate(sigmas)]


def test_importing_the_pack_imports_nothing_of_comfyui():
    """In a fresh process, so an earlier test's in-process host cannot have loaded ComfyUI first."""
    host_modules = ("comfy", "comfy_extras", "comfy_api", "folder_paths", "nodes", "server", "execution")
    done = subprocess.run([sys.executable, "-c", "import sys; from etc_vcut_dev.pack import import_pack; "
                           "pack = import_pack(); assert len(pack.NODE_CLASS_MAPPINGS) >= 14; "
                           f"print(sorted(m for m in sys.modules if m.split('.')[0] in {host_modules!r}))"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def _model(seen):
    """A model whose output is its context's mean (plus the input), recording what each call received."""
    def apply_model(x, t, **c):
        seen.append((x.shape[0], c["transformer_options"]["uuids"], c["transformer_options"]["cond_or_uncond"]))
        return x + c["c_crossattn"].mean(dim=(1, 2)).view(-1, 1)
    return apply_model


def _call(cutoff, model, sigma, order, uuids):
    """One model call of ``order`` (ComfyUI's cond_or_uncond: 0 cond, 1 uncond), chunks stacked in that order."""
    contexts = {0: COND_CONTEXT, 1: UNCOND_CONTEXT}
    c = {"c_crossattn": torch.cat([contexts[k] for k in order]),
         "transformer_options": {"uuids": uuids, "cond_or_uncond": list(order)}}
    return cutoff(model, {"input": torch.zeros(len(order), 3), "timestep": torch.full((len(order),), sigma),
                          "c": c, "cond_or_uncond": list(order)})


def _sample(cutoff_module, batched, cutoff_step=1, plan_sigmas=SIGMAS):
    """Outputs of each evaluation (post-CFG result) and what reached the model, batched or run apart."""
    cutoff = cutoff_module.ComfyGuidanceCutoff(cutoff_step)
    cutoff.set_plan(_plan(plan_sigmas))
    seen, outputs = [], []
    model = _model(seen)
    for sigma in SIGMAS:
        if batched:
            out = _call(cutoff, model, sigma, (1, 0), ["u", "c"])
            uncond, cond = out[:1], out[1:]
        else:
            uncond = _call(cutoff, model, sigma, (1,), ["u"])
            cond = _call(cutoff, model, sigma, (0,), ["c"])
        guided = uncond + 2.0 * (cond - uncond)
        outputs.append(cutoff.post_cfg({"sigma": torch.tensor([sigma]), "cond_denoised": cond, "denoised": guided}))
    return outputs, seen


def test_cut_steps_run_once_with_the_mean_context_batched_or_apart(cutoff_module):
    batched, seen_batched = _sample(cutoff_module, batched=True)
    apart, seen_apart = _sample(cutoff_module, batched=False)
    # Step 0 guided: cond 0 and uncond 1 combine to 1 + 2 * (0 - 1) = -1; steps 1, 2: one pass, mean context 0.5.
    expected = [torch.full((1, 3), -1.0), torch.full((1, 3), 0.5), torch.full((1, 3), 0.5)]
    for out_batched, out_apart, want in zip(batched, apart, expected):
        assert torch.equal(out_batched, want) and torch.equal(out_apart, want)
    assert seen_batched == [(2, ["u", "c"], [1, 0]), (1, ["u"], [0]), (1, ["u"], [0])]
    assert seen_apart == [(1, ["u"], [1]), (1, ["c"], [0]), (1, ["u"], [0]), (1, ["u"], [0])]


def test_a_sampler_that_leaves_the_plan_keeps_guidance(cutoff_module, caplog):
    outputs, seen = _sample(cutoff_module, batched=True, plan_sigmas=(3.0, 2.5, 1.0))
    assert all(torch.equal(out, torch.full((1, 3), -1.0)) for out in outputs)
    assert [batch for batch, _, _ in seen] == [2, 2, 2]
    assert "left its planned schedule" in caplog.text


def test_cutoff_pass_carries_the_first_uuid_and_sampler_counting_survives_skipped_evaluations(cutoff_module):
    """The one pass is labelled with the batch's first uuid (EasyCache slices by len(uuids)); counted by the
    sampler, an evaluation a cache answers without any model call (LazyCache) keeps the plan in step."""
    cutoff = cutoff_module.ComfyGuidanceCutoff(cutoff_step=1)
    cutoff.set_plan(_plan(SIGMAS), counted_by_sampler=True)
    seen = []
    for sigma in SIGMAS:
        cutoff.start_evaluation()
        if sigma == 2.0:
            continue  # answered from a cache: no model call, no post-CFG call
        out = _call(cutoff, _model(seen), sigma, (1, 0), ["u", "c"])
        cutoff.post_cfg({"sigma": torch.tensor([sigma]), "cond_denoised": out[:1], "denoised": out[:1]})
    assert seen == [(2, ["u", "c"], [1, 0]), (1, ["u"], [0])]
    assert torch.equal(out, torch.full_like(out, 0.5))  # the mean of the cond and uncond contexts


def test_an_earlier_wrapper_runs_in_place_of_the_model(cutoff_module):
    calls = []

    def previous(apply_model, args):
        calls.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    cutoff = cutoff_module.ComfyGuidanceCutoff(1, previous=previous)
    cutoff.set_plan(_plan(SIGMAS))
    for sigma in SIGMAS[:2]:
        out = _call(cutoff, _model([]), sigma, (1, 0), ["u", "c"])
        cutoff.post_cfg({"sigma": torch.tensor([sigma]), "cond_denoised": out[1:], "denoised": out[1:]})
    assert calls == [[1, 0], [0]]


def test_many_token_cutoff_runs_every_cond_chunk_and_no_uncond(cutoff_module):
    """``average_context=False`` (a text model): a cut call runs the cond chunks only (two masked prompt entries
    here), each uncond chunk gets the first cond's output; run apart, the uncond call reaches no model."""
    seen = []
    cutoff = cutoff_module.ComfyGuidanceCutoff(1, average_context=False)
    cutoff.set_plan(_plan(SIGMAS))

    def call(order, uuids, sigma=2.0):
        contexts = {0: COND_CONTEXT, 1: UNCOND_CONTEXT}
        x = torch.arange(len(order) * 3, dtype=torch.float32).view(len(order), 3)
        c = {"c_crossattn": torch.cat([contexts[k] for k in order]),
             "transformer_options": {"uuids": uuids, "cond_or_uncond": list(order)}}
        return x, cutoff(_model(seen), {"input": x, "timestep": torch.full((len(order),), sigma), "c": c,
                                        "cond_or_uncond": list(order)})

    cutoff.post_cfg({"sigma": torch.tensor([3.0]), "cond_denoised": None, "denoised": torch.zeros(1)})  # step 0
    x, out = call((1, 0, 0), ["u", "a", "b"])
    assert seen == [(2, ["a", "b"], [0, 0])]
    assert torch.equal(out[1:], x[1:]) and torch.equal(out[0], x[1])  # the model adds the cond context, 0
    cond = torch.ones(1, 3)
    assert torch.equal(cutoff.post_cfg({"sigma": torch.tensor([2.0]), "cond_denoised": cond, "denoised": -cond}),
                       cond)
    seen.clear()
    _, out = call((1,), ["u"], sigma=1.0)  # step 2, cond and uncond apart: the uncond comes first
    assert seen == [] and torch.equal(out, torch.zeros(1, 3))
