"""VCUT on the other one-token models ComfyUI ships (SV3D_u, SV3D_p, Stable Zero123), on a real server.

Tiny models built from ComfyUI's own classes, conditioned by the core nodes (SV3D_Conditioning,
StableZero123_Conditioning). The model is recognised from its structure (SV3D: spatio-temporal UNet;
Zero123: a context projection as wide as the UNet's context), never from its name.
"""
import re

import pytest
import torch
from safetensors.torch import load_file

from etc_vcut_dev.graphs import svd_graph, unet_calls

STEPS, CUTOFF, FRAMES = 6, 3, 4
# (family, video CFG node, whether the UNet has temporal cross-attentions)
FAMILIES = [("sv3d_u", "VideoTriangleCFGGuidance", True), ("sv3d_p", "VideoTriangleCFGGuidance", True),
            ("zero123", None, False)]


def _run(server, family, guidance, prefix, **kwargs):
    server.run(svd_graph(steps=STEPS, frames=FRAMES, prefix=prefix, family=family, guidance=guidance, **kwargs))
    return load_file(server.output_path(f"{prefix}.safetensors"))["latent"]


def _relative(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("family,guidance,temporal", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_vcut_exact_and_cutoff(comfy_server, family, guidance, temporal):
    base = _run(comfy_server, family, guidance, f"{family}_base")
    assert base.shape[0] == FRAMES and not torch.equal(base, torch.zeros_like(base))
    linear = _run(comfy_server, family, guidance, f"{family}_linear", vcut=("linear", "linear"))
    assert _relative(linear, base) < 1e-5
    # The node's log line: every cross-attention served from the cache (the tiny UNets have 7 per kind).
    said = re.findall(r"VCUT: (\d+) of (\d+) spatial .*?; (\d+) of (\d+) temporal", comfy_server.log())[-1]
    assert said == (("7", "7", "7", "7") if temporal else ("7", "7", "0", "0"))

    cut = _run(comfy_server, family, guidance, f"{family}_cut", vcut=("linear", "linear"), cutoff=CUTOFF,
               count_file=f"{family}_passes.json")
    calls = unet_calls(comfy_server, f"{family}_passes.json")
    assert [(sorted(c["cond_or_uncond"]), c["batch"]) for c in calls] == \
        [([0, 1], 2 * FRAMES)] * CUTOFF + [([0], FRAMES)] * (STEPS - CUTOFF)
    assert _relative(cut, base) > 1e-4, "the cut steps must change a model whose cond and uncond differ"
    # Cutoff at the last step: every step guided, the result is the exact VCUT one.
    full = _run(comfy_server, family, guidance, f"{family}_cut_all", vcut=("linear", "linear"), cutoff=STEPS)
    assert _relative(full, base) < 1e-5


def test_zero123_apart_equals_batched(comfy_server):
    """Low memory (cond and uncond run apart) gives the batched cutoff's result on Zero123 too."""
    batched = _run(comfy_server, "zero123", None, "z123_batched", vcut=("linear", "drop"), cutoff=CUTOFF)
    apart = _run(comfy_server, "zero123", None, "z123_apart", vcut=("linear", "drop"), cutoff=CUTOFF,
                 low_memory=True)
    assert _relative(apart, batched) < 1e-5
