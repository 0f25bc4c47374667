"""VCUT under core's torch.compile wrapper (what TorchCompileModel sets), counted with dynamo's counters.

Each graph runs in a process of its own (etc_vcut_dev.dynamo_counts: ComfyUI's executor in-process, eager
backend, PyTorch attention), so every count starts from zero. VCUT adds no graph break and no graph;
the cutoff adds the one recompile its batch change (cond + uncond -> one pass) needs, as without VCUT.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from etc_vcut_dev.comfy_host import comfyui_path

pytestmark = pytest.mark.comfyui  # ComfyUI's executor, in child processes


def _counts(tmp_path, name, *flags):
    out = tmp_path / name
    out.mkdir()
    done = subprocess.run([sys.executable, "-m", "etc_vcut_dev.dynamo_counts", str(out), *flags], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    counts["latent"] = load_file(counts["latent"])["latent"]
    return counts


@pytest.fixture(scope="module")
def has_compile_wrapper():
    if not os.path.exists(os.path.join(comfyui_path(), "comfy_api", "torch_helpers", "torch_compile.py")):
        pytest.skip("this ComfyUI has no torch.compile wrapper (TorchCompileModel)")


def test_vcut_adds_no_graph_break_or_recompile(has_compile_wrapper, tmp_path):
    alone = _counts(tmp_path, "alone")
    vcut = _counts(tmp_path, "vcut", "--vcut")
    cut = _counts(tmp_path, "vcut_cut", "--vcut", "--cutoff", "2")
    assert (alone["graph_breaks"], alone["unique_graphs"]) == (0, 1), alone
    assert (vcut["graph_breaks"], vcut["unique_graphs"]) == (0, 1), vcut["break_reasons"]
    # One more graph: the cut steps run one pass of half the batch.
    assert (cut["graph_breaks"], cut["unique_graphs"]) == (0, 2), cut["break_reasons"]
    relative = ((vcut["latent"] - alone["latent"]).abs().max() / alone["latent"].abs().max()).item()
    assert relative < 1e-5 and not torch.equal(cut["latent"], vcut["latent"])
