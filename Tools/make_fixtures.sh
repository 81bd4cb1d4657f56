#!/usr/bin/env bash
# Regenerate every committed fixture: the tiny models under Models/tiny-sd{1,2} and the goldens
# under Tests/DarkroomTests/Fixtures. One command, from any directory:
#
#     Tools/make_fixtures.sh
#
# Steps: Tools/setup_venv.sh (idempotent), then Tools/make_tiny_models.py, then every
# Tools/fixtures_*.py in name order, each run as `python Tools/fixtures_X.py` from the repo root.
# The output is byte-identical from run to run (fixed seeds, one thread, sorted JSON).
# DARKROOM_VENV=/path uses another venv (see setup_venv.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${DARKROOM_VENV:-$ROOT/Tools/.venv}"

bash Tools/setup_venv.sh

# No model hub, no telemetry, caches inside the (git-ignored) Tools/.cache, one thread.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1
export HF_HOME="$ROOT/Tools/.cache/huggingface"
export TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 LC_ALL=C

run() {
    echo "== $1"
    "$VENV/bin/python" "$1"
}

run Tools/make_tiny_models.py
for script in Tools/fixtures_*.py; do
    [ -e "$script" ] || continue
    run "$script"
done
echo "make_fixtures: done"
