#!/usr/bin/env python3
"""The headless client (etc_vcut_dev.client): queue an API-format workflow on a running ComfyUI and wait.

    .venv/bin/python scripts/queue_workflow.py workflows/api/svd_vcut.json --server http://127.0.0.1:8188

Outside this clone's .venv: pip install ./dev, then etc-vcut-queue with the same arguments."""
import sys

from etc_vcut_dev.client import main

if __name__ == "__main__":
    sys.exit(main())
