#!/usr/bin/env bash
# Install the package with both framework extras into ./.venv, then run the demo:
# retrieve 20 candidates per question through LlamaIndex and LangChain, rerank to the top 5.
# Without TOGETHER_API_KEY it runs offline against the embedded test endpoint (and says so).
# Usage: bash scripts/demo.sh [--offline] [--questions N] [--top-n N]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet ".[all]"
exec .venv/bin/python -m together_rerank_plugins.demo "$@"
