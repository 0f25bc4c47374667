"""The shipped workflows: every API workflow runs on the real server (loaders swapped for the tiny
fixtures, sizes reduced), and every UI workflow converts to exactly its API twin."""
import glob
import json
import os
import urllib.error
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from etc_vcut_dev.comfy_host import PACK_DIR_NAME
from etc_vcut_dev.demo import DEMO_OVERRIDES, swap_loaders, tiny_training_inputs, write_example_image
from etc_vcut_dev.client import apply_overrides
from etc_vcut_dev.workflow_format import FRONTEND_ONLY, renumber, ui_to_api

API = sorted(glob.glob(os.path.join(REPO, "workflows", "api", "*.json")))


@pytest.mark.parametrize("path", API, ids=os.path.basename)
def test_api_workflow_runs_and_writes_its_output(comfy_server, path, tmp_path):
    write_example_image(os.path.join(comfy_server.base, "input", "example.png"))
    name = os.path.basename(path)
    overrides = list(DEMO_OVERRIDES.get(name, []))
    if name == "etc_training_launch.json":
        overrides += tiny_training_inputs(comfy_server.base, f"etc_runs/{tmp_path.name}")
    with open(path) as f:
        prompt = apply_overrides(swap_loaders(json.load(f)), overrides)
    outputs = comfy_server.run(prompt, timeout=900)
    files = [v for o in outputs.values() for v in o.get("images", []) if v["type"] == "output"]
    assert len(files) == 1
    written = comfy_server.output_path(files[0]["subfolder"], files[0]["filename"])
    assert os.path.getsize(written) > 1000
    if name == "etc_training_launch.json":
        assert os.path.exists(comfy_server.output_path("etc_runs", tmp_path.name, "final", "etc_fps.safetensors"))


@pytest.mark.parametrize("path", API, ids=os.path.basename)
def test_ui_workflow_agrees_with_api_workflow(comfy_server, path):
    ui_path = path.replace(os.path.join("workflows", "api"), os.path.join("workflows", "ui"))
    with open(path) as f:
        api = json.load(f)
    with open(ui_path) as f:
        ui = json.load(f)
    object_info = comfy_server.get("/object_info")
    assert {n["type"] for n in ui["nodes"]} - set(FRONTEND_ONLY) <= set(object_info), "a node type the host does not list"
    assert ui_to_api(ui, object_info) == renumber(api)
    linked = {link[0] for link in ui["links"]}
    # An unwired optional input (ETCSaveVideo's audio) has link None.
    assert all(i["link"] is None or i["link"] in linked for n in ui["nodes"] for i in n["inputs"])


def test_example_workflows_are_the_ui_workflows():
    """example_workflows/ (what ComfyUI's template browser reads) holds copies of workflows/ui/."""
    ui = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "workflows", "ui", "*.json")))
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "example_workflows", "*.json"))) == ui
    for name in ui:
        with open(os.path.join(REPO, "workflows", "ui", name), "rb") as a, \
                open(os.path.join(REPO, "example_workflows", name), "rb") as b:
            assert a.read() == b.read(), f"example_workflows/{name} differs: cp workflows/ui/{name} example_workflows/"


def test_template_browser_lists_the_example_workflows(comfy_server):
    """ComfyUI serves a custom node pack's example_workflows/ (JSON + .jpg thumbnail) to its template browser."""
    try:
        templates = comfy_server.get("/api/workflow_templates")
    except urllib.error.HTTPError as e:
        pytest.skip(f"this ComfyUI has no /api/workflow_templates route (HTTP {e.code})")
    names = sorted(os.path.basename(p)[:-len(".json")] for p in glob.glob(os.path.join(REPO, "example_workflows",
                                                                                       "*.json")))
    assert sorted(templates[PACK_DIR_NAME]) == names
    for name in names:
        base = f"{comfy_server.url}/api/workflow_templates/{PACK_DIR_NAME}/{name}"
        with urllib.request.urlopen(base + ".json", timeout=30) as r:
            with open(os.path.join(REPO, "example_workflows", name + ".json"), "rb") as f:
                assert r.read() == f.read()
        with urllib.request.urlopen(base + ".jpg", timeout=30) as r:
            assert r.read(3) == b"\xff\xd8\xff"  # a JPEG
