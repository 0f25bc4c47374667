"""ComfyUI's web frontend in headless Debian Chromium, driven by Playwright (for the browser tests)."""
import contextlib
import shutil
import urllib.request

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


@contextlib.contextmanager
def frontend_page(sync_playwright, url: str):
    """A page with ComfyUI's frontend loaded from ``url`` and its ``app`` ready (the current frontend's
    first-run template browser marked as seen, so it does not cover the canvas)."""
    request = urllib.request.Request(f"{url}/settings/Comfy.TutorialCompleted", data=b"true", method="POST")
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
