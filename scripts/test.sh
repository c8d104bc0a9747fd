#!/usr/bin/env bash
# Install the package (editable) with its test dependencies into a venv, then run the suite in
# parallel (pytest-xdist, two workers per core; see README for how long it takes).
# Usage: bash scripts/test.sh [pytest args...]
#        bash scripts/test.sh --prepare     # create, install and compile; run no test
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
install ".[test]" "the package and its test dependencies" lazy
# Bytecode cached as Python does by default, even where PYTHONDONTWRITEBYTECODE is set: the
# suite runs thousands of imports of this package in fresh processes (docs examples, the CLI)
# and every worker rewrites every test module's asserts; without the cache each one compiles
# them again (about a fifth of the suite's time). The __pycache__ folders are git-ignored.
if [ -n "${PYTHONDONTWRITEBYTECODE:-}" ]; then
  say "PYTHONDONTWRITEBYTECODE is set: unset for the tests, so bytecode is cached"
  unset PYTHONDONTWRITEBYTECODE
fi
# A venv's first run collects the whole suite once, in one process, before the workers start:
# Python compiles a module on its first import and caches the bytecode, and N workers starting
# together on a new venv each compile the same ~1,500 modules (on 2 cores, 4 workers: 149 s and
# 278 CPU-s for the suite; 17 s for this collection, then 123 s and 232 CPU-s; one run each).
compiled=$VENV/.tests-compiled
if [ ! -e "$compiled" ]; then
  say "first run in $VENV: collecting the tests in one process, so the workers find their" \
    "imports compiled (once per venv)"
  if [ -n "${SCRIPTS_DRY_RUN:-}" ]; then
    say "dry run: $VENV/bin/python -m pytest --collect-only -q -p no:xdist tests"
  elif "$VENV/bin/python" -m pytest --collect-only -q -p no:xdist -p no:cacheprovider tests \
      >/dev/null 2>&1; then
    touch "$compiled"
  fi  # (a collection error is left for the run itself to report)
fi
if [ "${1:-}" = "--prepare" ]; then
  say "prepared $VENV (bash scripts/test.sh runs the tests)"
  exit 0
fi
# Two pytest-xdist workers per core: about half of the suite's time is spent waiting on real
# sockets and clocks (servers that hang, deadlines, retries), so one per core leaves the cores
# idle half the time (2 cores: 147 s with 2 workers, 117 s with 4, measured in one run).
# PYTEST_XDIST_AUTO_NUM_WORKERS, or -n N among the arguments, chooses another number.
cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
export PYTEST_XDIST_AUTO_NUM_WORKERS=${PYTEST_XDIST_AUTO_NUM_WORKERS:-$(( cores * 2 ))}
run_in_venv "running the tests ($PYTEST_XDIST_AUTO_NUM_WORKERS workers)" \
  -m pytest -n auto --dist worksteal "$@"
