"""VCUT stacked with the speed-ups of core ComfyUI (EasyCache, LazyCache), on a real server, tiny SVD, fp32.

Every stacking runs batched (cond and uncond in one UNet call) and apart (low memory), in the node orders
users build. ``ETCVCUTTestCountPasses`` records the calls that reach the model function (with their
sigma, so each is placed on its step); ``ETCVCUTTestCountForwards`` records the UNet forwards that really
run, inside EasyCache's wrapper. Hosts without a cache node skip its tests.
"""
import pytest
from safetensors.torch import load_file

from etc_vcut_dev.graphs import calls_with_forwards, svd_graph

STEPS, CUTOFF = 10, 4
# (cache node, where it goes): "first" right after the loader (cache -> VCUT -> cutoff -> video CFG),
# "last" just before the sampler (VCUT -> cutoff -> video CFG -> cache), "cfg_first" with the video CFG
# node before the cutoff (video CFG -> VCUT + cutoff -> cache).
ORDERS = ("first", "last", "cfg_first")


def _needs(server, node):
    if node not in server.get("/object_info"):
        pytest.skip(f"this ComfyUI has no {node} node")


def _insert_after(graph, after, node_id, class_type, inputs):
    """Put a MODEL -> MODEL node right after ``after`` in the model chain."""
    for node in graph.values():
        if node["inputs"].get("model") == [after, 0]:
            node["inputs"]["model"] = [node_id, 0]
    graph[node_id] = {"class_type": class_type, "inputs": dict(inputs, model=[after, 0])}


def _graph(prefix, *, cache=None, order="first", threshold=0.2, cutoff=CUTOFF, low_memory=False):
    """Tiny SVD with VCUT (linear SCA and TCA), the cutoff and both counters; ``cache`` adds that node."""
    g = svd_graph(steps=STEPS, prefix=prefix, vcut=("linear", "linear"), cutoff=cutoff, low_memory=low_memory,
                  count_file=f"{prefix}.json", cutoff_after_guidance=order == "cfg_first")
    _insert_after(g, "count", "forwards", "ETCVCUTTestCountForwards", {})
    if cache:
        after = {"first": "forwards", "last": "lincfg", "cfg_first": "cutoff"}[order]
        _insert_after(g, after, "cache", cache, {"reuse_threshold": threshold, "start_percent": 0.15,
                                                 "end_percent": 0.95, "verbose": False})
    return g


def _run(server, prefix, **kwargs):
    """(latent, the calls that reached the model function, each with the UNet forwards that ran in it)."""
    server.run(_graph(prefix, **kwargs))
    return load_file(server.output_path(f"{prefix}.safetensors"))["latent"], calls_with_forwards(server, f"{prefix}.json")


def _close(a, b, tol=1e-5):
    return (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


@pytest.fixture(scope="module")
def schedule(comfy_server):
    """The sigma of each step (euler: one evaluation per step), from the run without cutoff or cache."""
    _, calls = _run(comfy_server, "stack_schedule", cutoff=STEPS)
    assert len(calls) == STEPS
    return [call["sigma"] for call in calls]


@pytest.fixture(scope="module")
def no_cache(comfy_server):
    """VCUT + cutoff without a cache, batched and apart: {low_memory: latent}."""
    return {low: _run(comfy_server, f"stack_nocache_{int(low)}", low_memory=low)[0] for low in (False, True)}


def _steps(calls, schedule):
    """{step: [calls]} of one run."""
    steps = {}
    for call in calls:
        steps.setdefault(schedule.index(call["sigma"]), []).append(call)
    return steps


def _assert_cut(calls, schedule, low_memory):
    """Guided steps: cond and uncond (one call of 8, or two of 4 apart); from the cutoff on: one cond pass
    of 4, also on the steps a cache lets through."""
    for step, step_calls in _steps(calls, schedule).items():
        if step >= CUTOFF:
            assert [(c["cond_or_uncond"], c["batch"]) for c in step_calls] == [([0], 4)], (step, step_calls)
        elif low_memory:
            assert sorted(c["cond_or_uncond"][0] for c in step_calls) == [0, 1], (step, step_calls)
        else:
            assert [(sorted(c["cond_or_uncond"]), c["batch"]) for c in step_calls] == [([0, 1], 8)], step_calls


def _skipped(calls, schedule):
    """Steps at least one of whose calls ran no UNet forward (EasyCache answered it), or that reached the
    model function not at all (LazyCache answered the whole evaluation)."""
    steps = _steps(calls, schedule)
    return sorted(set(range(STEPS)) - set(steps) | {s for s, cs in steps.items() if any(not c["ran"] for c in cs)})


def _stacking(server, schedule, no_cache, cache, order, low_memory):
    """Runs ``cache`` stacked with VCUT + cutoff and checks passes and results; returns the skipped steps."""
    tag = f"{cache}_{order}_{int(low_memory)}"
    # Threshold 0: the cache runs its bookkeeping but answers nothing, so the result is VCUT's own.
    latent, calls = _run(server, f"{tag}_t0", cache=cache, order=order, threshold=0.0, low_memory=low_memory)
    assert _skipped(calls, schedule) == []
    assert all(sum(c["ran"]) == c["batch"] for c in calls)
    _assert_cut(calls, schedule, low_memory)
    assert _close(latent, no_cache[low_memory])

    latent, calls = _run(server, tag, cache=cache, order=order, low_memory=low_memory)
    _assert_cut(calls, schedule, low_memory)
    skipped = _skipped(calls, schedule)
    assert [s for s in skipped if s >= CUTOFF], f"{cache} skipped no step after the cutoff: {skipped}"
    return latent, skipped


@pytest.fixture(scope="module")
def alone(comfy_server, schedule):
    """{cache: skipped steps} of the cache with VCUT but no cutoff, batched."""
    return {cache: _skipped(_run(comfy_server, f"{cache}_alone", cache=cache, cutoff=STEPS)[1], schedule)
            for cache in ("EasyCache", "LazyCache") if cache in comfy_server.get("/object_info")}


RESULTS = {}


@pytest.mark.parametrize("low_memory", [False, True], ids=["batched", "apart"])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("cache", ["EasyCache", "LazyCache"])
def test_cache_with_cutoff(comfy_server, schedule, no_cache, alone, cache, order, low_memory):
    _needs(comfy_server, cache)
    latent, skipped = _stacking(comfy_server, schedule, no_cache, cache, order, low_memory)
    print(f"{cache} {order} {'apart' if low_memory else 'batched'}: skipped steps {skipped}; "
          f"without the cutoff {alone[cache]}")
    # Every node order, batched or apart, makes the same decisions and the same latent.
    first = RESULTS.setdefault(cache, (latent, skipped))
    assert skipped == first[1]
    assert _close(latent, first[0])
