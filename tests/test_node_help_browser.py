"""The help page of every pack node as the current ComfyUI frontend shows it: opened through the frontend's
own node-help store (which finds the page from the node's python_module), in headless Chromium."""
import html

import pytest

from etc_vcut_dev.browser import CHROMIUM, frontend_page

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (scripts/setup.sh --tests does)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/setup.sh --tests installs it)")

# What the node help panel shows: the store fetches the page (falling back to the description, with an
# error, when it cannot) and renders it as HTML.
OPEN_HELP = """async (names) => {
  const vue = document.querySelector('#vue-app')?.__vue_app__;
  const stores = vue?.config.globalProperties.$pinia?._s;
  if (!stores?.get('nodeHelp')) return null;
  const help = stores.get('nodeHelp'), defs = stores.get('nodeDef').nodeDefsByName, shown = {};
  for (const name of names) {
    help.openHelp(defs[name]);
    await new Promise(r => setTimeout(r, 20));
    for (let i = 0; i < 500 && help.isLoading; i++) await new Promise(r => setTimeout(r, 20));
    shown[name] = {error: help.error, html: help.renderedHelpHtml};
    help.closeHelp();
  }
  return shown;
}"""


def test_frontend_help_panel_shows_each_nodes_page(comfy_server):
    info = comfy_server.get("/object_info")
    pack = {n: e for n, e in info.items() if e["category"].startswith(("video/ETC", "video/VCUT"))}
    assert len(pack) == 16
    with frontend_page(playwright.sync_playwright, comfy_server.url) as page:
        shown = page.evaluate(OPEN_HELP, sorted(pack))
    if shown is None:
        pytest.skip("this frontend has no node help panel (the early-2024 one)")
    for name, entry in pack.items():
        assert shown[name]["error"] is None, f"{name}: {shown[name]['error']}"
        rendered = shown[name]["html"]
        assert rendered.startswith(f"<h1>{html.escape(entry['display_name'], quote=False)}</h1>"), name
        for item in [*entry["input"]["required"], *entry["input"].get("optional", {}), *entry["output_name"]]:
            assert f"<strong>{item}</strong>" in rendered, f"{name}'s help panel does not explain {item}"
