"""ETC + VCUT video diffusion nodes for ComfyUI (classic node API, see docs/node-api.md)."""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# The nodes' help pages (web/docs/<node id>.md), served at /extensions/<this folder>/docs/ for the frontend.
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
