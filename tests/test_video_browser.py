"""ETCSaveVideo's files in the browser, in headless Chromium with ComfyUI's own frontend (whichever the host
serves: the current one, or the early-2024 one bundled with the 2024 host):

- each format plays from the server's /view URL (MP4/WebM in a <video> whose time advances; WEBP and the
  GIF preview as <img>);
- after a run queued from the frontend, the save node shows a preview (screenshot under docs/screenshots/
  when ETCVCUT_WRITE_SCREENSHOTS=1);
- the saved file, given to the frontend's own loader (app.handleFile, what a drop on the canvas calls),
  restores the graph that made it. The 2024 frontend reads workflows from PNG, WEBP, JSON and
  .latent/.safetensors only; a test pins that it ignores MP4/WebM files.
"""
import json
import os
import time

import pytest

from etc_vcut_dev.browser import ADVANCED, CHROMIUM, FIT_GRAPH, PLAY, frontend_page, view_url
from etc_vcut_dev.tiny_workflows import TINY_PARTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (scripts/setup.sh --tests does)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/setup.sh --tests installs it)")
MIME = {"h264-mp4": "video/mp4", "vp9-webm": "video/webm", "webp": "image/webp"}
T2V = os.path.join(REPO, "workflows", "ui", "etc_text_to_video.json")
with open(T2V) as _f:
    SAVE_NODE = next(n["id"] for n in json.load(_f)["nodes"] if n["type"] == "ETCSaveVideo")

IMAGE = """async (url) => {
  const img = new Image();
  img.src = url;
  await img.decode();
  return [img.naturalWidth, img.naturalHeight];
}"""
# The shipped text-to-video graph with the test pack's tiny SD 2.x model in place of the UNet, CLIP and VAE
# loaders, at a size a CPU runs in seconds.
RUN = """async ({workflow, format}) => {
  await window.app.loadGraphData(workflow);
  const graph = window.app.graph;
  const nodes = graph._nodes ?? graph.nodes;
  const set = (node, values) => Object.entries(values).forEach(([name, value]) => {
    node.widgets.find(w => w.name === name).value = value;
  });
  set(nodes.find(n => n.type === "ETCSampler"), {frames: 8, layout: "2x4", frame_width: 64, frame_height: 64,
                                                 steps: 3, fps_weights: "none"});
  set(nodes.find(n => n.type === "ImageScale"), {width: 64, height: 64});
  set(nodes.find(n => n.type === "ETCSaveVideo"), {format, filename_prefix: "ETC/browser"});
  const workflowNow = graph.serialize();
  await window.app.queuePrompt(0, 1);
  return workflowNow;
}"""
PREVIEW = """(id) => {
  const node = window.app.graph.getNodeById(id);
  const video = node?.videoContainer?.querySelector("video");
  if (video && video.readyState >= HTMLMediaElement.HAVE_CURRENT_DATA) return {kind: "video", src: video.src};
  const img = node?.imgs?.find(i => i.naturalWidth > 0);
  return img ? {kind: "img", src: img.src} : null;
}"""
DROP = """async ({url, name, type}) => {
  const blob = await (await fetch(url)).blob();
  window.app.graph.clear();
  await window.app.handleFile(new File([blob], name, {type}));
  await new Promise(r => setTimeout(r, 1000));  // the 2024 frontend does not await its loadGraphData
  return window.app.graph.serialize();
}"""


def tiny_workflow() -> dict:
    """Each of the UNet, CLIP and VAE loaders becomes a tiny SD 2.x loader wired from its output of that kind."""
    with open(T2V) as f:
        workflow = json.load(f)
    links = {link[0]: link for link in workflow["links"]}
    for node in workflow["nodes"]:
        if node["type"] in TINY_PARTS:
            outputs = [{"name": kind, "type": kind, "links": [], "slot_index": i}
                       for i, kind in enumerate(("MODEL", "CLIP", "VAE"))]
            slot = TINY_PARTS[node["type"]]
            outputs[slot]["links"] = node["outputs"][0]["links"]
            for link in outputs[slot]["links"]:
                links[link][2] = slot
            node.update(type="ETCVCUTTestTinySD2", widgets_values=[0], outputs=outputs,
                        properties={"Node name for S&R": "ETCVCUTTestTinySD2"})
    return workflow


def graph_shape(workflow: dict):
    """What a restored graph must equal: nodes (id, type, widget values, input links) and links."""
    nodes = sorted((n["id"], n["type"], json.dumps([v for v in n.get("widgets_values", []) if v is not None]),
                    json.dumps([i.get("link") for i in n.get("inputs", [])])) for n in workflow["nodes"])
    links = sorted(tuple(link[:5]) if isinstance(link, list) else
                   (link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"])
                   for link in workflow["links"])
    return nodes, links


@pytest.fixture(scope="module")
def page(comfy_server):
    with frontend_page(playwright.sync_playwright, comfy_server.url) as page:
        yield page


@pytest.fixture(scope="module")
def legacy(page):
    """The early-2024 frontend (no window.comfyAPI), which shows outputs as images only."""
    return page.evaluate("() => !window.comfyAPI")


def newest_output(server, known: set, node: str, timeout: float = 300) -> dict:
    """The ui output of ``node`` in the first history entry not in ``known``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = server.get("/history")
        for prompt_id in set(history) - known:
            status = history[prompt_id].get("status", {})
            assert status.get("status_str") != "error", json.dumps(status)[-2000:]
            if str(node) in history[prompt_id]["outputs"]:
                return history[prompt_id]["outputs"][str(node)]
        time.sleep(0.5)
    raise TimeoutError(f"no new output of node {node} within {timeout}s:\n{server.log()[-3000:]}")


@pytest.fixture(scope="module")
def runs(page, comfy_server):
    """For each format: (the workflow queued from the frontend, the save node's ui output)."""
    done = {}
    for fmt in MIME:
        known = set(comfy_server.get("/history"))
        workflow = page.evaluate(RUN, {"workflow": tiny_workflow(), "format": fmt})
        page.evaluate(FIT_GRAPH)  # the template opens at full size, the save node off screen: no preview drawn
        done[fmt] = workflow, newest_output(comfy_server, known, SAVE_NODE)
        page.wait_for_function(f"({PREVIEW})({SAVE_NODE})", timeout=60000)
    return done


@pytest.mark.parametrize("fmt", MIME)
def test_each_format_plays_from_the_view_url(page, runs, fmt):
    saved, *previews = runs[fmt][1]["images"]
    if fmt == "webp":
        assert page.evaluate(IMAGE, view_url(saved)) == [64, 64]
    else:
        page.evaluate(PLAY, view_url(saved))
        page.wait_for_function(ADVANCED, timeout=30000)
    for preview in previews:  # the GIF for image-only frontends
        assert preview["filename"].endswith(".gif") and page.evaluate(IMAGE, view_url(preview)) == [64, 64]


def test_the_save_node_shows_a_preview_after_a_run(page, runs, legacy, tmp_path):
    page.evaluate(RUN, {"workflow": tiny_workflow(), "format": "h264-mp4"})
    page.evaluate(FIT_GRAPH)
    page.wait_for_function(f"['.mp4', '.gif'].some(x => ({PREVIEW})({SAVE_NODE})?.src.includes(x))", timeout=300000)
    preview = page.evaluate(f"({PREVIEW})({SAVE_NODE})")
    if legacy:  # images only: the MP4 fails as an <img>, the GIF from temp/ shows
        assert preview["kind"] == "img" and ".gif" in preview["src"] and "type=temp" in preview["src"]
    else:  # the MP4 itself in a <video>
        assert preview["kind"] == "video" and ".mp4" in preview["src"] and "type=output" in preview["src"]
    page.evaluate(FIT_GRAPH)
    page.wait_for_timeout(1000)
    out_dir = os.path.join(REPO, "docs", "screenshots") if os.environ.get("ETCVCUT_WRITE_SCREENSHOTS") else tmp_path
    os.makedirs(out_dir, exist_ok=True)
    page.screenshot(path=os.path.join(out_dir, f"etc_video_preview{'_2024' if legacy else ''}.png"))


@pytest.mark.parametrize("fmt", MIME)
def test_dropping_the_saved_file_restores_the_graph(page, runs, legacy, fmt):
    if legacy and fmt != "webp":
        pytest.skip("the 2024 frontend reads no workflow from video files "
                    "(test_2024_frontend_ignores_video_files); its drop works with the WEBP format")
    workflow, ui = runs[fmt]
    saved = ui["images"][0]
    restored = page.evaluate(DROP, {"url": view_url(saved), "name": saved["filename"], "type": MIME[fmt]})
    assert graph_shape(restored) == graph_shape(workflow)


def test_2024_frontend_ignores_video_files(page, runs, legacy):
    if not legacy:
        pytest.skip("the current frontend reads workflows from MP4 and WebM (tested above)")
    for fmt in ("h264-mp4", "vp9-webm"):
        saved = runs[fmt][1]["images"][0]
        restored = page.evaluate(DROP, {"url": view_url(saved), "name": saved["filename"], "type": MIME[fmt]})
        assert restored["nodes"] == []
