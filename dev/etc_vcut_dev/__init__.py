"""Development tools of the pack (never shipped): real ComfyUI hosts for tests (comfy_host, inprocess),
tiny models and data (tiny_diffusers, tiny_base, synthetic), test graphs and checks (graphs, refusals,
browser, ws_watch, accelerate_launch), the demo (demo, demo_model, svd_timing, tiny_workflows), the headless
client and bench timing."""
