"""Help on every pack node as a ComfyUI user meets it: tooltips and descriptions in the real server's
/object_info, and a help page per node served where the current frontend fetches it."""
import glob
import os
import urllib.parse
import urllib.request

import pytest

from etc_vcut_dev.comfy_host import PACK_DIR_NAME, REPO
from etc_vcut_dev.help_pages import page_path, updated
from etc_vcut_dev.pack import import_pack

EXPERIMENTAL = {"ETCTrainer", "ETCTrainCommand", "ETCVideoFilter"}


def _pack_nodes(info: dict) -> dict:
    nodes = {name: entry for name, entry in info.items() if entry["category"].startswith(("video/ETC", "video/VCUT"))}
    assert len(nodes) == 16
    return nodes


def test_every_input_has_a_tooltip_and_every_node_a_description(comfy_server):
    for name, entry in _pack_nodes(comfy_server.get("/object_info")).items():
        assert entry["description"].strip(), f"{name} has no description"
        for section in ("required", "optional"):
            for input_name, spec in entry["input"].get(section, {}).items():
                tooltip = spec[1].get("tooltip", "") if len(spec) > 1 else ""
                assert tooltip.strip(), f"{name}.{input_name} has no tooltip"


def test_every_output_has_a_tooltip_and_the_trainer_and_filter_are_experimental(comfy_server):
    info = comfy_server.get("/object_info")
    if "output_tooltips" not in info["KSampler"]:
        pytest.skip("this ComfyUI lists no output tooltips (nor the experimental flag) in /object_info")
    for name, entry in _pack_nodes(info).items():
        assert len(entry["output_tooltips"]) == len(entry["output"]), name
        assert all(t and t.strip() for t in entry["output_tooltips"]), f"{name} has an output without tooltip"
        assert entry.get("experimental", False) is (name in EXPERIMENTAL), name


def _help_url(server, name: str, entry: dict) -> str:
    """Where the current frontend fetches a custom node's help: /extensions/<pack folder>/docs/<node>.md, the
    folder taken from python_module (custom_nodes.<folder>); hosts that do not list it serve the same path."""
    module = entry.get("python_module", f"custom_nodes.{PACK_DIR_NAME}").split(".")
    assert module[:2] == ["custom_nodes", PACK_DIR_NAME]
    return f"{server.url}/extensions/{urllib.parse.quote(module[1])}/docs/{name}.md"


def test_help_page_of_every_node_is_served_and_names_every_input_and_output(comfy_server):
    for name, entry in _pack_nodes(comfy_server.get("/object_info")).items():
        with urllib.request.urlopen(_help_url(comfy_server, name, entry), timeout=30) as response:
            page = response.read().decode("utf-8")
        assert page.startswith(f"# {entry['display_name']}\n"), name
        inputs = [n for section in ("required", "optional") for n in entry["input"].get(section, {})]
        for item in inputs + list(entry["output_name"]):
            assert f"- **{item}** (" in page, f"{name}'s help page does not explain {item}"
        assert "\n## Example\n" in page, name


def test_help_pages_say_what_the_specs_say_and_web_ships_only_them():
    """Inputs and Outputs of each page are made from the node's spec (python -m etc_vcut_dev.help_pages);
    web/ holds one page per node and nothing else (no script runs in the frontend, only Markdown ships)."""
    nodes = import_pack().NODE_CLASS_MAPPINGS
    for name, node_class in nodes.items():
        with open(page_path(name)) as f:
            page = f.read()
        assert updated(page, node_class.SPEC) == page, f"{name}.md is stale: python -m etc_vcut_dev.help_pages"
    shipped = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "web", "**"), recursive=True)
                     if os.path.isfile(p))
    assert shipped == sorted(os.path.relpath(page_path(name), REPO) for name in nodes)
