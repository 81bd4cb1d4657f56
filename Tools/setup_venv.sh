#!/usr/bin/env bash
# Create (or bring up to date) the Python reference environment for the fixture generators:
# Tools/.venv with exactly the packages pinned in Tools/requirements.txt.
#
# Idempotent: when the venv already holds exactly the pinned set, nothing is installed.
# Works from any directory. DARKROOM_VENV=/path overrides the venv location (e.g. to share one
# venv between git worktrees). ftfy must never be in it: transformers' CLIPTokenizer cleans text
# differently when ftfy is importable, and the goldens assume it is not.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DARKROOM_VENV:-$ROOT/Tools/.venv}"
REQ="$ROOT/Tools/requirements.txt"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
    echo "setup_venv: creating $VENV"
    python3 -m venv "$VENV"
fi

# The pinned set, normalised like `pip freeze` prints it (comments and blank lines dropped).
wanted() { grep -v -e '^\s*#' -e '^\s*$' "$REQ" | tr 'A-Z_' 'a-z-' | sort; }
have() { "$PY" -m pip freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_' 'a-z-' | sort; }

if [ "$(wanted)" != "$(have)" ]; then
    echo "setup_venv: installing $REQ into $VENV"
    extra=()
    # torch's +cpu wheel is not on PyPI; use a local wheel folder when the machine has one.
    if [ -d /opt/wheels ]; then extra+=(--find-links /opt/wheels); fi
    "$PY" -m pip install --disable-pip-version-check -q "${extra[@]}" -r "$REQ"
    # A package that is not pinned (e.g. left over from an older set) is not removed, only reported.
    if [ "$(wanted)" != "$(have)" ]; then
        echo "setup_venv: note: the venv differs from $REQ:" >&2
        diff <(wanted) <(have) >&2 || true
    fi
fi

if "$PY" -c 'import ftfy' 2>/dev/null; then
    echo "setup_venv: removing ftfy (it changes CLIPTokenizer's text cleaning)" >&2
    "$PY" -m pip uninstall --disable-pip-version-check -q -y ftfy
fi

echo "setup_venv: ok ($PY)"
