#!/usr/bin/env bash
# Set up a fresh virtual environment and run the whole test suite (the README's test command).
# Usage: bash scripts/test.sh [pytest args...]     (VENV=path to choose where the venv goes)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-test}"
PY="${PYTHON:-python3}"

rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first and pinned, so the CPU wheel is used and no CUDA packages are pulled in.
"$VENV/bin/python" -m pip install -q "torch==2.13.0" || "$VENV/bin/python" -m pip install -q "torch>=2.1,<2.14"
"$VENV/bin/python" -m pip install -q -e ".[dev]"

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # see src/napari_tokenunify/threads.py
set +e
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "error: no test ran" >&2
  exit 1
fi
exit "$rc"
