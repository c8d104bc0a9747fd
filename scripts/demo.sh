#!/usr/bin/env bash
# Install the package with both framework extras into ./.venv, then run the demo:
# retrieve 20 candidates per question through LlamaIndex and LangChain, rerank to the top 5.
# Without TOGETHER_API_KEY it runs offline against the embedded test endpoint (and says so).
# Usage: bash scripts/demo.sh [--offline] [--questions N] [--top-n N]
# The install is editable, like scripts/test.sh's in the same ./.venv: either script may run
# first, and the tests keep testing this checkout's source.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[all]"
exec "$VENV/bin/python" -m together_rerank_plugins.demo "$@"
