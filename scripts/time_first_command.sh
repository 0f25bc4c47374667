#!/usr/bin/env bash
# Times the README's first command as a new user meets it: a fresh clone of this repository's HEAD into a
# new folder, empty pip and uv caches, `bash scripts/setup.sh && .venv/bin/python scripts/demo.py`, with the
# demo's extra arguments (default: --precision no, fp32 training as on a CPU without bf16 instructions;
# pass --precision auto for bf16 where the CPU has it). Prints the CPU, its bf16 flags, the load before and
# after, and the times of setup, demo and the whole; the demo's summary stays in <clone>/demo_output/.
#   bash scripts/time_first_command.sh [/tmp/first-command] [demo arguments...]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEST=${1:-/tmp/first-command}
shift || true
DEMO_ARGS=("$@")
[ ${#DEMO_ARGS[@]} -gt 0 ] || DEMO_ARGS=(--precision no)
rm -rf "$DEST"
git clone --quiet "$REPO" "$DEST"
cd "$DEST"
# nothing cached: every wheel is downloaded as on a new machine
export PIP_CACHE_DIR="$DEST/.pip-cache-empty" UV_CACHE_DIR="$DEST/.uv-cache-empty"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores"
echo "bf16 flags: $(grep -o -w -E 'avx512_bf16|amx_bf16|avx_ne_convert' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
bash scripts/setup.sh
setup_done=$(date +%s)
.venv/bin/python scripts/demo.py "${DEMO_ARGS[@]}"
end=$(date +%s)
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
fmt() { printf '%d min %02d s' $(($1 / 60)) $(($1 % 60)); }
echo "setup: $(fmt $((setup_done - start))), demo (${DEMO_ARGS[*]}): $(fmt $((end - setup_done))), first command: $(fmt $((end - start)))"
