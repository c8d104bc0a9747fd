#!/usr/bin/env bash
# Install the package (editable) with its test dependencies into a venv, then run the suite in
# parallel (pytest-xdist, one worker per core: about 3 minutes on 2 cores, see README).
# Usage: bash scripts/test.sh [pytest args...]
#   PYTHON=python3.12 bash scripts/test.sh                   # another interpreter (recreates
#                                                            # ./.venv if it holds another one)
#   PYTHON=python3.12 VENV=.venv-3.12 bash scripts/test.sh   # ... in a venv of its own
#   bash scripts/test.sh -n 0 tests/test_core.py             # one process, some files
# Defaults: PYTHON=python3, VENV=.venv. .ci/run calls this once per supported Python.
# Each phase (venv, install, tests) is announced on stderr; scripts/_venv.sh has the rules.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_venv.sh
. scripts/_venv.sh
prepare_venv
install ".[test]" "the package and its test dependencies"
# Bytecode cached as Python does by default, even where PYTHONDONTWRITEBYTECODE is set: the
# suite runs thousands of imports of this package in fresh processes (docs examples, the CLI)
# and every worker rewrites every test module's asserts; without the cache each one compiles
# them again (about a fifth of the suite's time). The __pycache__ folders are git-ignored.
if [ -n "${PYTHONDONTWRITEBYTECODE:-}" ]; then
  say "PYTHONDONTWRITEBYTECODE is set: unset for the tests, so bytecode is cached"
  unset PYTHONDONTWRITEBYTECODE
fi
run_in_venv "running the tests" -m pytest -n auto --dist worksteal "$@"
