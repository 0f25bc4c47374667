"""The shipped workflows: every API workflow runs on the real server (loaders swapped for the tiny
fixtures, sizes reduced), every UI workflow converts to exactly its API twin, and every template says what
to get first (Note, properties.models), trains only a short run and samples the first command's ETC model."""
import glob
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from etc_vcut_dev import demo_model
from etc_vcut_dev.comfy_host import PACK_DIR_NAME
from etc_vcut_dev.tiny_workflows import DEMO_OVERRIDES, swap_loaders, tiny_training_inputs, write_example_image
from etc_vcut_dev.client import apply_overrides
from etc_vcut_dev.templates import TEMPLATES, model_files
from etc_vcut_dev.workflow_format import VIRTUAL_NODES, declared_only, renumber, ui_to_api

API = sorted(glob.glob(os.path.join(REPO, "workflows", "api", "*.json")))
EXAMPLES = sorted(glob.glob(os.path.join(REPO, "example_workflows", "*.json")))
MAX_TRAINING_STEPS = 500  # "a few hundred": what Run may start from a template


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


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
    assert {n["type"] for n in ui["nodes"]} - VIRTUAL_NODES <= set(object_info), "a node type the host does not list"
    assert declared_only(ui_to_api(ui, object_info), object_info) == declared_only(renumber(api), object_info)
    linked = {link[0] for link in ui["links"]}
    # An unwired optional input (ETCSaveVideo's audio) has link None.
    assert all(i["link"] is None or i["link"] in linked for n in ui["nodes"] for i in n["inputs"])


def test_example_workflows_are_the_ui_workflows_under_their_titles():
    """example_workflows/ (what ComfyUI's template browser reads; it titles a pack's template by its file name)
    holds copies of workflows/ui/, each under a title, with a square card-sized JPEG thumbnail."""
    ui = sorted(os.path.basename(p)[:-len(".json")] for p in glob.glob(os.path.join(REPO, "workflows", "ui", "*.json")))
    assert sorted(TEMPLATES) == ui
    assert sorted(os.path.basename(p) for p in EXAMPLES) == sorted(title + ".json" for title, _ in TEMPLATES.values())
    for name, (title, _) in TEMPLATES.items():
        assert "_" not in title and " " in title, f"{title!r} does not read as a title"
        with open(os.path.join(REPO, "workflows", "ui", name + ".json"), "rb") as a, \
                open(os.path.join(REPO, "example_workflows", title + ".json"), "rb") as b:
            assert a.read() == b.read(), f"example_workflows/{title}.json differs: run scripts/make_templates.py"
        with Image.open(os.path.join(REPO, "example_workflows", title + ".jpg")) as thumbnail:
            assert thumbnail.format == "JPEG" and thumbnail.size == (512, 512)


@pytest.mark.parametrize("path", API, ids=os.path.basename)
def test_template_has_a_note_and_the_models_of_its_loaders(path):
    """The Note says what to get first (every model file the graph loads, where it goes), and every node that
    loads a published file lists it in properties.models as the frontend reads it: the widget's value by
    name, its folder and the download URL (the frontend's schema requires one, so unpublished ETC files,
    which the Note explains, have no entry)."""
    api = _load(path)
    name = os.path.basename(path)[:-len(".json")]
    workflow = _load(os.path.join(REPO, "example_workflows", TEMPLATES[name][0] + ".json"))
    notes = [n for n in workflow["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1 and notes[0]["widgets_values"][0].strip()
    text = notes[0]["widgets_values"][0]
    loaded = 0
    for api_node, node in zip(api.values(), workflow["nodes"]):
        assert node["type"] == api_node["class_type"]
        listed = node["properties"].get("models", [])
        files = model_files(api_node)
        loaded += len(files)
        assert all(m["name"] in node["widgets_values"] for m in listed)  # how the frontend picks the entries
        published = [(f, d) for f, d in files if f.startswith(("svd", "sv3d", "stable_zero123", "v2-1_512"))]
        assert sorted((m["name"], m["directory"]) for m in listed) == sorted(published), f"{node['type']}: {listed}"
        for model in listed:
            assert model["url"].startswith("https://huggingface.co/stabilityai/")
            assert model["url"].endswith("/resolve/main/" + model["name"])
            assert model["url"].rsplit("/resolve/", 1)[0] in text, f"the Note does not give {model['url']}"
        for file, _ in files:
            assert file in text, f"the Note does not say where {file} comes from"
        if len(published) < len(files):
            assert "No ETC weights are published" in text or "first command" in text
    assert loaded > 0


def test_model_urls_are_the_published_repositories():
    """The repositories Stability AI published each file in (SVD, SVD-XT, SV3D, Stable Zero123, SD 2.1 base)."""
    urls = {m["name"]: m["url"] for path in EXAMPLES for n in _load(path)["nodes"]
            for m in n["properties"].get("models", []) if "url" in m}
    repos = {name: url.split("/resolve/")[0].rsplit("/", 1)[1] for name, url in urls.items()}
    assert repos == {"svd_xt.safetensors": "stable-video-diffusion-img2vid-xt", "sv3d_p.safetensors": "sv3d",
                     "stable_zero123.ckpt": "stable-zero123",
                     "v2-1_512-ema-pruned.safetensors": "stable-diffusion-2-1-base"}


@pytest.mark.parametrize("path", API + EXAMPLES, ids=os.path.basename)
def test_no_template_trains_more_than_a_few_hundred_steps(comfy_server, path):
    """Run on a template starts a short run: ETCTrainer's max_steps, read as the host reads the graph."""
    workflow = _load(path)
    object_info = comfy_server.get("/object_info")
    prompt = ui_to_api(workflow, object_info) if "nodes" in workflow else workflow
    steps = [n["inputs"]["max_steps"] for n in prompt.values() if n["class_type"] == "ETCTrainer"]
    assert all(0 < s <= MAX_TRAINING_STEPS for s in steps), steps


def test_etc_template_samples_the_first_commands_model():
    """etc_text_to_video loads the files the first command installs, by the names it installs them under, at
    the demo's frames, layout, frame size and frame rate (the demo samples its model through this graph)."""
    prompt = _load(os.path.join(REPO, "workflows", "api", "etc_text_to_video.json"))
    files = demo_model.etc_file_names("etc_demo")
    assert demo_model.install_etc.__defaults__ == ("etc_demo",)
    named = {(n["class_type"], k): v for n in prompt.values() for k, v in n["inputs"].items()}
    assert {named[("UNETLoader", "unet_name")], named[("CLIPLoader", "clip_name")], named[("VAELoader", "vae_name")],
            named[("ETCSampler", "fps_weights")]} == set(files.values())
    assert (named[("ETCSampler", "frames")], named[("ETCSampler", "layout")], named[("ETCSampler", "frame_width")],
            named[("ETCSampler", "frame_height")], named[("ETCSampler", "fps")]) == \
        (demo_model.FRAMES, demo_model.LAYOUT, demo_model.SIZE, demo_model.SIZE, demo_model.FPS)
    assert demo_model.etc_prompt(files, "a red square moving left", 3)["7"]["inputs"]["fps_weights"] == files["fps"]


def test_template_browser_lists_the_example_workflows(comfy_server):
    """ComfyUI serves a custom node pack's example_workflows/ (JSON + .jpg thumbnail) to its template browser."""
    try:
        templates = comfy_server.get("/api/workflow_templates")
    except urllib.error.HTTPError as e:
        pytest.skip(f"this ComfyUI has no /api/workflow_templates route (HTTP {e.code})")
    names = sorted(os.path.basename(p)[:-len(".json")] for p in EXAMPLES)
    assert sorted(templates[PACK_DIR_NAME]) == names
    for name in names:
        base = f"{comfy_server.url}/api/workflow_templates/{PACK_DIR_NAME}/{urllib.parse.quote(name)}"
        with urllib.request.urlopen(base + ".json", timeout=30) as r:
            with open(os.path.join(REPO, "example_workflows", name + ".json"), "rb") as f:
                assert r.read() == f.read()
        with urllib.request.urlopen(base + ".jpg", timeout=30) as r:
            assert r.read(3) == b"\xff\xd8\xff"  # a JPEG
