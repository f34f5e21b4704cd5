#!/usr/bin/env bash
# Set up a virtual environment and run the main job on the bundled sample data and default model.
# Usage: bash scripts/demo.sh [OUTPUT_DIR]        (VENV=path to choose where the venv goes)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
OUT="${1:-out}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0" || "$VENV/bin/python" -m pip install -q "torch>=2.1,<2.14"
"$VENV/bin/python" -m pip install -q -e ".[qt]"
"$VENV/bin/tokenunify" demo "$OUT" --overwrite
