# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/demo.sh (not run on its own): choose the Python, make
# sure $VENV holds that Python, install into it, and say what happens, one line per phase, on
# stderr (stdout stays the tests' or the demo's own output).
#
#   PYTHON  the interpreter to use (default python3); must be a supported CPython (the
#           "Programming Language :: Python :: 3.X" classifiers of pyproject.toml)
#   VENV    the venv (default .venv, in the repository root)
#   INSTALLER  pip or uv (default: uv when `uv` is on PATH, else pip). uv installs the same
#           packages from PyPI, with bytecode compiled as pip does, in seconds instead of a minute
#   SCRIPTS_DRY_RUN=1  check the Python and create or recreate the venv as usual (without pip),
#           then print the install and run commands instead of running them (tests/test_scripts.py)
#
# An existing venv is reused when its Python is the one asked for. When PYTHON names another
# Python, or the venv's Python is broken or unsupported, the venv is recreated (and the script
# says so, naming both versions). Without PYTHON, a working venv of a supported Python is kept
# as it is (it was made by an earlier PYTHON=...), and the script says which Python that is.

_name=$(basename "$0")
say() { printf '%s: %s\n' "$_name" "$*" >&2; }
die() { say "$*"; exit 2; }

# "cpython 3.11.7" for an interpreter, or nothing if it does not run
_describe() {
  "$1" -c 'import sys; print(sys.implementation.name, "%d.%d.%d" % sys.version_info[:3])' \
    2>/dev/null
}

supported_minors() {
  sed -n 's/^ *"Programming Language :: Python :: \(3\.[0-9]*\)",$/\1/p' pyproject.toml
}

_supported() {  # "cpython 3.X.Y" -> 0 if supported
  local impl=${1%% *} version=${1#* } minor
  [ "$impl" = cpython ] || return 1
  minor=$(echo "$version" | cut -d. -f1,2)
  supported_minors | grep -qx "$minor"
}

_range() { echo "CPython $(supported_minors | head -n 1) to $(supported_minors | tail -n 1)"; }

# Sets PY (an absolute path) and VENV; creates or recreates the venv when needed.
prepare_venv() {
  local asked=${PYTHON:-python3} want have
  PY=$(command -v "$asked" 2>/dev/null) || die "PYTHON=$asked: no such interpreter on PATH." \
    "Install one of $(_range), or name it, e.g. PYTHON=python3.12 bash scripts/$_name"
  VENV=${VENV:-.venv}
  want=$(_describe "$PY") || die "$asked ($PY) does not run as a Python interpreter"
  have=""
  if [ -x "$VENV/bin/python" ]; then have=$(_describe "$VENV/bin/python") || have="broken"; fi
  if [ -z "${PYTHON:-}" ] && [ -n "$have" ] && _supported "$have"; then
    # no Python asked for: keep the venv an earlier PYTHON=... made, and say which it is
    [ "$have" = "$want" ] || say "keeping $VENV, made with Python ${have#* } (python3 here is" \
      "${want#* }; PYTHON=python3 bash scripts/$_name would recreate it)"
    PY=$VENV/bin/python
    want=$have
  else
    _supported "$want" || _refuse "$asked" "$want"
    if [ -z "$have" ]; then
      say "creating $VENV with Python ${want#* } ($PY)"
      _create
    elif [ "$have" != "$want" ]; then
      say "recreating $VENV: it has ${have/cpython /Python }, and ${PYTHON:+PYTHON=}$asked" \
        "is Python ${want#* } ($PY)"
      _create --clear
    fi
  fi
  say "Python ${want#* } ($PY), venv $VENV"
}

_refuse() {
  die "${PYTHON:+PYTHON=}$1 is ${2/cpython /Python } ($PY), which this package does not" \
    "support: it needs $(_range). Choose one with PYTHON, e.g." \
    "PYTHON=python$(supported_minors | tail -n 1) bash scripts/$_name (the venv is left as it is)"
}

_create() {
  if [ -n "${SCRIPTS_DRY_RUN:-}" ]; then
    "$PY" -m venv --without-pip "$@" "$VENV"
  else
    "$PY" -m venv "$@" "$VENV"
  fi
}

# The installer: INSTALLER, else uv when it is on PATH, else pip
_installer() {
  case ${INSTALLER:-} in
    pip|uv) echo "$INSTALLER" ;;
    "") if command -v uv >/dev/null 2>&1; then echo uv; else echo pip; fi ;;
    *) die "INSTALLER=$INSTALLER: use pip or uv" ;;
  esac
}

# install SPEC WHAT [lazy]: install SPEC (editable) into the venv with pip or uv, timed.
# Bytecode is compiled at install time (pip's default), so the venv starts fast even where
# PYTHONDONTWRITEBYTECODE is set; with "lazy", it is left to Python to write on first import,
# for a caller that runs with bytecode writing on (scripts/test.sh): the suite imports a part
# of what it installs, and compiling all of it took longer than the install itself.
install() {
  local spec=$1 what=$2 lazy=${3:-} t0 tool cmd
  t0=$(date +%s)
  tool=$(_installer) || exit 2
  if [ "$tool" = uv ]; then
    command -v uv >/dev/null 2>&1 || die "INSTALLER=uv, but there is no uv on PATH" \
      "(pip install uv, or INSTALLER=pip)"
    cmd=(uv pip install --quiet --python "$VENV/bin/python")
    [ -n "$lazy" ] || cmd+=(--compile-bytecode)
    cmd+=(-e "$spec")
    say "installing $what into $VENV (uv pip install -e \"$spec\"; seconds once uv's" \
      "cache holds the packages)..."
  else
    cmd=("$VENV/bin/python" -m pip install --quiet)
    [ -z "$lazy" ] || cmd+=(--no-compile)
    cmd+=(-e "$spec")
    say "installing $what into $VENV (pip install -e \"$spec\"; about 1-2 minutes the" \
      "first time, seconds after; uv on PATH makes it faster)..."
  fi
  if [ -n "${SCRIPTS_DRY_RUN:-}" ]; then
    [ "$tool" = pip ] && say "dry run: $VENV/bin/python -m pip install --quiet --upgrade pip"
    say "dry run: ${cmd[*]}"
    return
  fi
  [ "$tool" = pip ] && "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "${cmd[@]}"
  say "installed with $tool in $(( $(date +%s) - t0 )) s"
}

# run_in_venv WHAT ARGS...: exec ARGS with the venv's python
run_in_venv() {
  local what=$1; shift
  say "$what: $VENV/bin/python $*"
  if [ -n "${SCRIPTS_DRY_RUN:-}" ]; then
    say "dry run: not running it"
    exit 0
  fi
  exec "$VENV/bin/python" "$@"
}
