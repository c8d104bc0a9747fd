#!/usr/bin/env bash
# Install the package with both framework extras into ./.venv, then run the demo:
# retrieve 20 candidates per question through LlamaIndex and LangChain, rerank to the top 5.
# Without TOGETHER_API_KEY it runs offline against the embedded test endpoint (and says so).
# Usage: bash scripts/demo.sh [--offline] [--questions N] [--top-n N]
#   PYTHON=python3.12 bash scripts/demo.sh   # another interpreter (recreates ./.venv if it
#                                            # holds another one)
# The install is editable, like scripts/test.sh's in the same ./.venv: either script may run
# first, and the tests keep testing this checkout's source. Each phase (venv, install, demo)
# is announced on stderr; scripts/_venv.sh has the rules.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_venv.sh
. scripts/_venv.sh
prepare_venv
install ".[all]" "the package with both frameworks"
run_in_venv "running the demo" -m together_rerank_plugins.demo "$@"
