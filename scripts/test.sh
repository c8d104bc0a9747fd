#!/usr/bin/env bash
# Install the package (editable) with its test dependencies into a venv, then run the suite.
# Usage: bash scripts/test.sh [pytest args...]
#   PYTHON=python3.12 VENV=.venv-3.12 bash scripts/test.sh   # another interpreter, its own venv
# Defaults: PYTHON=python3, VENV=.venv. .ci/run calls this once per supported Python.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[test]"
exec "$VENV/bin/python" -m pytest "$@"
