"""Every UI workflow loads in ComfyUI's real web frontend, in headless Chromium driven by Playwright:
no missing node type, every link in place, and the frontend's own graphToPrompt() gives the API twin.
Screenshots go to docs/screenshots/ when ETCVCUT_WRITE_SCREENSHOTS=1 (for the README, with a .jpg
thumbnail next to each workflow for ComfyUI's template browser), else to tmp."""
import glob
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from etc_vcut_dev.browser import CHROMIUM, FIT_GRAPH, frontend_page
from etc_vcut_dev.workflow_format import renumber

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (scripts/setup.sh does)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/setup.sh installs it)")
UI = sorted(glob.glob(os.path.join(REPO, "workflows", "ui", "*.json")))

LOAD = """async (workflow) => {
  const LG = window.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph;
  const registered = LG ? Object.keys(LG.registered_node_types) : [];
  await window.app.loadGraphData(workflow);
  const nodes = window.app.graph._nodes ?? window.app.graph.nodes;
  const links = window.app.graph.links;
  const prompt = await window.app.graphToPrompt();
  return {missing: workflow.nodes.map(n => n.type).filter(t => !registered.includes(t)),
          registered: registered.length, nodes: nodes.length,
          links: links instanceof Map ? links.size : Object.keys(links).length,
          errors: nodes.filter(n => n.has_errors).map(n => n.type), output: prompt.output};
}"""


@pytest.fixture(scope="module")
def page(comfy_server):
    with frontend_page(playwright.sync_playwright, comfy_server.url) as page:
        yield page


@pytest.mark.parametrize("path", UI, ids=os.path.basename)
def test_ui_workflow_loads_in_the_web_frontend(page, comfy_server, path, tmp_path):
    with open(path) as f:
        workflow = json.load(f)
    with open(path.replace(os.path.join("workflows", "ui"), os.path.join("workflows", "api"))) as f:
        api = json.load(f)
    result = page.evaluate(LOAD, workflow)
    assert result["registered"] > 100 and result["missing"] == [] and result["errors"] == []
    assert result["nodes"] == len(workflow["nodes"]) and result["links"] == len(workflow["links"])
    info = comfy_server.get("/object_info")
    declared = {t: {**i["input"].get("required", {}), **i["input"].get("optional", {})} for t, i in info.items()}
    # The 2024 frontend also sends its image-upload widget ("upload"), which the server ignores.
    queued = {n: {"class_type": v["class_type"],
                  "inputs": {k: x for k, x in v["inputs"].items() if k in declared[v["class_type"]]}}
              for n, v in result["output"].items()}
    assert queued == renumber(api)
    page.evaluate(FIT_GRAPH)
    page.wait_for_timeout(500)
    out_dir = os.path.join(REPO, "docs", "screenshots") if os.environ.get("ETCVCUT_WRITE_SCREENSHOTS") else tmp_path
    os.makedirs(out_dir, exist_ok=True)
    screenshot = os.path.join(out_dir, os.path.basename(path).replace(".json", ".png"))
    page.screenshot(path=screenshot)
    if os.environ.get("ETCVCUT_WRITE_SCREENSHOTS"):  # the template browser's thumbnail, beside the copy it serves
        from PIL import Image
        thumbnail = os.path.join(REPO, "example_workflows", os.path.basename(path).replace(".json", ".jpg"))
        with Image.open(screenshot) as image:
            image.convert("RGB").resize((640, 640 * image.height // image.width), Image.LANCZOS).save(
                thumbnail, quality=85)
