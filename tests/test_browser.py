"""Every UI workflow loads in ComfyUI's real web frontend, in headless Chromium driven by Playwright:
no missing node type, every link in place, and the frontend's own graphToPrompt() gives the API twin; every
template opened from the template route passes the frontend's workflow schema and shows in the
missing-models dialog exactly the published files its Note names, and nothing else.
Screenshots go to docs/screenshots/ when ETCVCUT_WRITE_SCREENSHOTS=1 (for the README), else to tmp; the
template browser's thumbnails show what a graph makes, not the editor (scripts/make_templates.py)."""
import glob
import json
import os
import urllib.parse

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from etc_vcut_dev.browser import CHROMIUM, FIT_GRAPH, frontend_page
from etc_vcut_dev.comfy_host import PACK_DIR_NAME
from etc_vcut_dev.templates import TEMPLATES
from etc_vcut_dev.workflow_format import declared_only, renumber

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (scripts/setup.sh --tests does)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/setup.sh --tests installs it)")
UI = sorted(glob.glob(os.path.join(REPO, "workflows", "ui", "*.json")))

LOAD = """async (workflow) => {
  const LG = window.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph;
  const registered = LG ? Object.keys(LG.registered_node_types) : [];
  await window.app.loadGraphData(workflow, true, true, null, {showMissingModelsDialog: false});
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
    # The 2024 frontend also sends its image-upload widget ("upload"), and the 2024 host ignores the newer
    # hosts' widgets in the workflow (UNETLoader's weight_dtype): compare what the server reads.
    assert declared_only(result["output"], info) == declared_only(renumber(api), info)
    page.evaluate(FIT_GRAPH)
    page.wait_for_timeout(500)
    out_dir = os.path.join(REPO, "docs", "screenshots") if os.environ.get("ETCVCUT_WRITE_SCREENSHOTS") else tmp_path
    os.makedirs(out_dir, exist_ok=True)
    screenshot = os.path.join(out_dir, os.path.basename(path).replace(".json", ".png"))
    page.screenshot(path=screenshot)


# The template as the template browser opens it (fetched from the pack's template route), then what the
# current frontend's missing-models dialog lists ("<folder> / <file>" per row).
OPEN_TEMPLATE = """async (url) => {
  document.querySelectorAll(".p-toast-message").forEach(e => e.remove());  // an earlier load's alerts
  const workflow = await (await fetch(url)).json();
  await window.app.loadGraphData(workflow, true, true, null, {openSource: "template"});
  await new Promise(r => setTimeout(r, 1000));
  const dialogs = [...document.querySelectorAll(".p-dialog")].map(d => d.innerText);
  const registered = Object.keys(window.LiteGraph.registered_node_types);
  return {dialogs, missing: workflow.nodes.map(n => n.type).filter(t => !registered.includes(t)),
          invalid: document.body.innerText.includes("Invalid workflow")};
}"""


@pytest.mark.parametrize("name", sorted(TEMPLATES), ids=str)
def test_template_opens_with_only_the_missing_models_its_note_explains(page, comfy_server, name):
    if not page.evaluate("() => !!window.comfyAPI"):
        pytest.skip("the 2024 frontend has no template browser and no missing-models dialog")
    title = TEMPLATES[name][0]
    url = f"/api/workflow_templates/{PACK_DIR_NAME}/{title}.json"
    with open(os.path.join(REPO, "example_workflows", title + ".json")) as f:
        workflow = json.load(f)
    published = {f"{m['directory']} / {m['name']}" for n in workflow["nodes"]
                 for m in n["properties"].get("models", []) if "url" in m}
    result = page.evaluate(OPEN_TEMPLATE, url)
    try:
        assert result["missing"] == [] and not result["invalid"]  # no missing node, no schema alert
        shown = [d for d in result["dialogs"] if "/" in d and any(p in d for p in published)]
        if published:  # the tests' ComfyUI has none of the published files
            assert len(shown) == 1 and all(p in shown[0] for p in published), result["dialogs"]
            listed = {line.strip() for line in shown[0].splitlines() if " / " in line}
            assert listed == published, listed
        else:
            assert not any(" / " in d and ".safetensors" in d for d in result["dialogs"]), result["dialogs"]
    finally:
        page.keyboard.press("Escape")
        page.wait_for_function("() => document.querySelectorAll('.p-dialog').length === 0", timeout=10000)



# The thumbnails in the open dialog (the frontend shows them from blob: URLs of what it fetched).
CARDS = """() => [...document.querySelectorAll(".p-dialog img")].map(img => [img.naturalWidth, img.naturalHeight])"""


def test_template_browser_shows_every_template_with_its_thumbnail(page, tmp_path):
    """The current frontend's template browser, the pack's category: it fetches each template's thumbnail
    from the pack's template route and shows one 512x512 card per template, titled by its file name."""
    if not page.evaluate("() => !!window.comfyAPI"):
        pytest.skip("the 2024 frontend has no template browser")
    fetched = []
    route = f"/api/workflow_templates/{PACK_DIR_NAME}/"

    def record(response):
        if route in response.url and response.url.endswith(".jpg"):
            fetched.append((urllib.parse.unquote(response.url.rsplit("/", 1)[1]), response.status))
    page.on("response", record)
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": 2400})  # the dialog renders only the cards in view
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    try:
        page.get_by_text(PACK_DIR_NAME).first.click(timeout=30000)
        titles = [title for title, _ in TEMPLATES.values()]
        page.wait_for_function(f"({CARDS})().length === {len(titles)} && ({CARDS})().every(([w]) => w > 0)",
                               timeout=30000)
        assert page.evaluate(CARDS) == [[512, 512]] * len(titles)
        assert sorted(set(fetched)) == sorted((t + ".jpg", 200) for t in titles)
        for title in titles:
            assert page.get_by_text(title, exact=True).count() >= 1
        out_dir = os.path.join(REPO, "docs", "screenshots") if os.environ.get("ETCVCUT_WRITE_SCREENSHOTS") else tmp_path
        os.makedirs(out_dir, exist_ok=True)
        page.screenshot(path=os.path.join(out_dir, "template_browser.png"))
    finally:  # the dialog does not close on Escape: a fresh page for the next test
        page.remove_listener("response", record)
        page.set_viewport_size(size)
        page.reload()
        page.wait_for_function("!!(window.app && window.app.graph && window.app.graphToPrompt)", timeout=120000)
