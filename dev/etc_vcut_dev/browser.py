"""ComfyUI's web frontend in headless Debian Chromium, driven by Playwright (for the browser tests)."""
import contextlib
import shutil
import urllib.parse
import urllib.request

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]

# A <video> playing ``url``; ADVANCED holds once its time has moved on.
PLAY = """async (url) => {
  const video = document.createElement("video");
  Object.assign(video, {muted: true, loop: true, src: url});
  document.body.appendChild(video);
  await video.play();
  window.__played = video;
  return video.readyState;
}"""
ADVANCED = ("() => window.__played.readyState >= HTMLMediaElement.HAVE_FUTURE_DATA"
            " && window.__played.currentTime > 0.1")


def view_url(entry: dict) -> str:
    return "/view?" + urllib.parse.urlencode({k: entry[k] for k in ("filename", "subfolder", "type")})


# The whole graph in view, clear of the current frontend's side bar, tab bar and run button.
FIT_GRAPH = """() => {
  const app = window.app, nodes = app.graph._nodes ?? app.graph.nodes;
  const [left, top] = window.comfyAPI ? [70, 135] : [20, 20];
  const xs = nodes.flatMap(n => [n.pos[0], n.pos[0] + n.size[0]]);
  const ys = nodes.flatMap(n => [n.pos[1] - 30, n.pos[1] + n.size[1]]);
  const [x0, y0] = [Math.min(...xs), Math.min(...ys)];
  const element = app.canvas.canvas;
  const scale = Math.min(1, (element.clientWidth - left - 20) / (Math.max(...xs) - x0),
                         (element.clientHeight - top - 20) / (Math.max(...ys) - y0));
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset = [left / scale - x0, top / scale - y0];
  app.canvas.setDirty(true, true);
}"""


@contextlib.contextmanager
def frontend_page(sync_playwright, url: str):
    """A page with ComfyUI's frontend loaded from ``url`` and its ``app`` ready (the current frontend's
    first-run template browser marked as seen and its minimap off, so they do not cover the canvas, and text
    drawn at every zoom, so that a screenshot of a whole graph shows its widgets)."""
    for setting, value in (("Comfy.TutorialCompleted", b"true"), ("Comfy.Minimap.Visible", b"false"),
                           ("LiteGraph.Canvas.MinFontSizeForLOD", b"0")):
        request = urllib.request.Request(f"{url}/settings/{setting}", data=value, method="POST")
        urllib.request.urlopen(request, timeout=30).close()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1800, "height": 1000})
        page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")  # the current one's banner
        page.goto(url)
        page.wait_for_function("!!(window.app && window.app.graph && typeof window.app.graphToPrompt === 'function')",
                               timeout=120000)
        try:
            yield page
        finally:
            browser.close()
