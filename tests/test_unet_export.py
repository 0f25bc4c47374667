"""etc_core.train.export writes every UNet layout the demo can train (tiny_base.UNET_LAYOUTS: attention on
SD 2.1's levels or on the first only) so that ComfyUI's own UNet, built from the config ComfyUI detects in
the file, takes every weight: no missing key (left uninitialised by the loader) and no unexpected one."""
import json
import subprocess
import sys

import pytest

from etc_vcut_dev.comfy_host import comfyui_path

pytestmark = pytest.mark.comfyui

CHECK = """
import json, sys
sys.path.insert(0, sys.argv[1])
from comfy.cli_args import args
args.cpu = True  # before comfy.model_management is imported: it looks for a GPU
from diffusers import UNet2DConditionModel
import comfy.model_detection, comfy.ops
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
from etc_core.train.export import unet_to_ldm
from etc_vcut_dev import tiny_base
found = {}
for name, config in tiny_base.UNET_LAYOUTS.items():
    state = unet_to_ldm(UNet2DConditionModel(**config).state_dict())
    model_config = comfy.model_detection.model_config_from_unet_config(comfy.model_detection.detect_unet_config(state, ""))
    unet = UNetModel(**model_config.unet_config, operations=comfy.ops.disable_weight_init)  # as BaseModel builds it
    result = unet.load_state_dict(state, strict=False)
    found[name] = [type(model_config).__name__, sorted(result.missing_keys), sorted(result.unexpected_keys)]
print(json.dumps(found))
"""


def test_every_demo_unet_layout_loads_whole_into_comfyuis_unet():
    done = subprocess.run([sys.executable, "-c", CHECK, comfyui_path()], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(found) == {"sd21", "level0", "level0_nomid", "level01"}
    for name, (family, missing, unexpected) in found.items():
        assert (family, missing, unexpected) == ("SD20", [], []), name
