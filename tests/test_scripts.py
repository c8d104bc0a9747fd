"""The README's two commands (scripts/test.sh, scripts/demo.sh) and the Python they use:
each says which interpreter and venv it uses, refuses an unsupported Python naming its
version, recreates a venv whose Python is not the one asked for, and announces each phase.

Cheap: SCRIPTS_DRY_RUN=1 makes the scripts check the Python and create or recreate the venv
for real (without pip), then print the install and run commands instead of running them.
Interpreters and venvs of other versions are small shell scripts in tmp_path that answer the
scripts' version question the way that Python would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("test.sh", "demo.sh")
HERE = ".".join(map(str, sys.version_info[:3]))
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def fake_python(path: Path, version: str, implementation: str = "cpython") -> Path:
    """An executable that answers like a Python of `version` to the scripts' question."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{implementation} {version}"\n', encoding="utf-8")
    path.chmod(0o755)
    return path


def fake_uv(bindir: Path) -> Path:
    """A `uv` on PATH that fails if it is ever run (the dry runs only name it)."""
    bindir.mkdir(parents=True, exist_ok=True)
    uv = bindir / "uv"
    uv.write_text("#!/bin/sh\necho 'fake uv was run' >&2; exit 3\n", encoding="utf-8")
    uv.chmod(0o755)
    return uv


@pytest.mark.parametrize(
    ("installer", "uv_on_path", "chosen"),
    [(None, True, "uv"), (None, False, "pip"), ("pip", True, "pip"), ("uv", True, "uv")],
)
def test_the_installer_is_uv_when_on_path_unless_told(
    installer: str | None, uv_on_path: bool, chosen: str, tmp_path: Path
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    if uv_on_path:
        fake_uv(bindir)
    # PATH without any other uv: this directory, then the directories of python and bash
    path = os.pathsep.join([str(bindir), str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    env = {"PATH": path, "PYTHON": sys.executable, "VENV": str(tmp_path / "venv")}
    if installer:
        env["INSTALLER"] = installer
    rc, out = run("test.sh", **env)
    assert rc == 0, out
    dry = [line for line in out.splitlines() if "dry run:" in line and " install " in line]
    assert dry, out
    assert all(("uv pip install" in line) == (chosen == "uv") for line in dry), out


def test_an_installer_that_cannot_be_used_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    for installer, said in [("uv", "no uv on PATH"), ("conda", "use pip or uv")]:
        rc, out = run(
            "test.sh",
            PATH=path,
            PYTHON=sys.executable,
            VENV=str(tmp_path / "venv"),
            INSTALLER=installer,
        )
        assert rc == 2, out
        assert said in out, out
        assert "running the tests" not in out


def fake_venv(where: Path, version: str) -> Path:
    fake_python(where / "bin" / "python", version)
    (where / "marker").write_text("made earlier", encoding="utf-8")
    return where


def run(script: str, *args: str, path_first: Path | None = None, **env: str) -> tuple[int, str]:
    dropped = ("PYTHON", "VENV", "INSTALLER", "PYTEST_XDIST_AUTO_NUM_WORKERS")
    full = {k: v for k, v in os.environ.items() if k not in dropped}
    full["SCRIPTS_DRY_RUN"] = "1"
    if path_first is not None:
        full["PATH"] = f"{path_first}{os.pathsep}{full['PATH']}"
    full.update(env)
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


def venv_version(venv: Path) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sys; print(*sys.version_info[:3], sep='.')"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


@pytest.mark.parametrize("script", SCRIPTS)
def test_unsupported_python_is_refused_naming_its_version(script: str, tmp_path: Path) -> None:
    old = fake_python(tmp_path / "py39" / "python3.9", "3.9.18")
    venv = tmp_path / "venv"
    rc, out = run(script, PYTHON=str(old), VENV=str(venv))
    assert rc == 2, out
    assert "Python 3.9.18" in out
    assert "does not support" in out
    assert "CPython 3.10 to 3.13" in out
    assert "PYTHON=python3.13" in out  # what to do
    assert not venv.exists(), "a venv was made with a refused Python"
    assert "installing" not in out


@pytest.mark.parametrize("script", SCRIPTS)
def test_unsupported_python_leaves_an_existing_venv_alone(script: str, tmp_path: Path) -> None:
    venv = fake_venv(tmp_path / "venv", "3.12.1")
    other = fake_python(tmp_path / "pp" / "pypy3", "3.11.9", implementation="pypy")
    rc, out = run(script, PYTHON=str(other), VENV=str(venv))
    assert rc == 2, out
    assert "pypy 3.11.9" in out
    assert (venv / "marker").exists()


def test_missing_interpreter_is_named(tmp_path: Path) -> None:
    rc, out = run("test.sh", PYTHON="python3.99-not-here", VENV=str(tmp_path / "v"))
    assert rc == 2
    assert "PYTHON=python3.99-not-here: no such interpreter" in out


@pytest.mark.parametrize("script", SCRIPTS)
def test_venv_of_another_python_is_recreated_and_says_so(script: str, tmp_path: Path) -> None:
    venv = fake_venv(tmp_path / "venv", "3.10.4")
    rc, out = run(script, PYTHON=sys.executable, VENV=str(venv))
    assert rc == 0, out
    said = f"recreating {venv}: it has Python 3.10.4, and PYTHON={sys.executable} is Python {HERE}"
    assert said in out
    assert not (venv / "marker").exists()
    assert venv_version(venv) == HERE


def test_broken_venv_is_recreated(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 127\n", encoding="utf-8")
    (venv / "bin" / "python").chmod(0o755)
    rc, out = run("test.sh", PYTHON=sys.executable, VENV=str(venv))
    assert rc == 0, out
    assert "it has a broken Python" in out or "it has broken" in out
    assert venv_version(venv) == HERE


def test_unsupported_venv_is_recreated_with_python3(tmp_path: Path) -> None:
    """No PYTHON: a venv an unsupported Python made (3.9) is replaced with python3's."""
    venv = fake_venv(tmp_path / "venv", "3.9.18")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)
    rc, out = run("demo.sh", VENV=str(venv), path_first=bindir)
    assert rc == 0, out
    assert f"recreating {venv}: it has Python 3.9.18, and python3 is Python {HERE}" in out
    assert venv_version(venv) == HERE


def test_without_python_a_supported_venv_is_kept_and_named(tmp_path: Path) -> None:
    """No PYTHON: the venv an earlier PYTHON=... made is used as it is, and the script says
    which Python it holds (not python3's version)."""
    venv = fake_venv(tmp_path / "venv", "3.12.1")
    bindir = tmp_path / "bin"
    fake_python(bindir / "python3", "3.10.4")
    rc, out = run("test.sh", VENV=str(venv), path_first=bindir)
    assert rc == 0, out
    assert f"keeping {venv}, made with Python 3.12.1 (python3 here is 3.10.4" in out
    assert f"Python 3.12.1 ({venv}/bin/python), venv {venv}" in out
    assert (venv / "marker").exists()


WORKERS = 2 * (os.cpu_count() or 1)  # test.sh: two pytest-xdist workers per core


@pytest.mark.parametrize("installer", ["pip", "uv"])
@pytest.mark.parametrize(
    ("script", "extra", "last"),
    [
        ("test.sh", ".[test]", f"running the tests ({WORKERS} workers)"),
        ("demo.sh", ".[all]", "running the demo"),
    ],
)
def test_each_phase_is_announced_in_order(
    script: str, extra: str, last: str, installer: str, tmp_path: Path
) -> None:
    """The venv, the install and the run, in that order. The test command leaves bytecode to
    be written on first import (its tests run with bytecode writing on); the demo's venv is
    compiled at install, as pip does by default."""
    venv = tmp_path / "venv"
    bindir = tmp_path / "bin"
    fake_uv(bindir)  # INSTALLER=uv needs a uv on PATH; the dry run does not call it
    rc, out = run(
        script,
        "--some-arg",
        path_first=bindir,
        PYTHON=sys.executable,
        VENV=str(venv),
        INSTALLER=installer,
    )
    assert rc == 0, out
    lines = [line for line in out.splitlines() if line.startswith(f"{script}: ")]
    lazy = script == "test.sh"
    install = {
        "pip": f"{venv}/bin/python -m pip install --quiet{' --no-compile' if lazy else ''}"
        f" -e {extra}",
        "uv": f"uv pip install --quiet --python {venv}/bin/python"
        f"{'' if lazy else ' --compile-bytecode'} -e {extra}",
    }[installer]
    phases = [
        f"{script}: creating {venv} with Python {HERE} ({sys.executable})",
        f"{script}: Python {HERE} ({sys.executable}), venv {venv}",
        f"{script}: installing ",
        f"{script}: dry run: {install}",
        f"{script}: {last}: {venv}/bin/python -m ",
    ]
    at = 0
    for phase in phases:
        found = [i for i, line in enumerate(lines) if line.startswith(phase)]
        assert found, f"{phase!r} missing in:\n{out}"
        assert found[0] >= at, f"{phase!r} out of order in:\n{out}"
        at = found[0]
    assert lines[-2].endswith("--some-arg"), "the arguments are passed on"
    # a second run reuses the venv without a word about creating it
    rc, again = run(script, PYTHON=sys.executable, VENV=str(venv))
    assert rc == 0, again
    assert "creating" not in again
    assert f"Python {HERE} ({sys.executable}), venv {venv}" in again


def test_a_new_venv_compiles_the_tests_imports_once_and_prepare_stops_there(
    tmp_path: Path,
) -> None:
    """On a venv's first run, one process collects the suite before the workers start (so
    they do not all compile the same modules); ``--prepare`` stops after it, running no test;
    a venv marked as done is not collected twice."""
    venv = tmp_path / "v"
    rc, out = run("test.sh", "--prepare", PYTHON=sys.executable, VENV=str(venv))
    assert rc == 0, out
    first = f"test.sh: first run in {venv}: collecting the tests in one process"
    collect = f"dry run: {venv}/bin/python -m pytest --collect-only -q -p no:xdist tests"
    assert first in out
    assert collect in out
    assert f"test.sh: prepared {venv}" in out
    assert "running the tests" not in out
    rc, out = run("test.sh", "-q", PYTHON=sys.executable, VENV=str(venv))
    assert rc == 0, out
    assert out.index(first) < out.index("running the tests")
    (venv / ".tests-compiled").touch()  # what a real first run leaves
    rc, out = run("test.sh", "-q", PYTHON=sys.executable, VENV=str(venv))
    assert rc == 0, out
    assert "first run" not in out
    assert "--collect-only" not in out
    assert "running the tests" in out


def test_tests_run_in_parallel_with_xdist_from_the_test_extra(tmp_path: Path) -> None:
    rc, out = run("test.sh", "-q", PYTHON=sys.executable, VENV=str(tmp_path / "v"))
    assert rc == 0, out
    assert "-m pytest -n auto --dist worksteal -q" in out
    extras = PROJECT["optional-dependencies"]
    assert any(Requirement(r).name == "pytest-xdist" for r in extras["test"])


def test_readme_says_how_to_choose_a_python_and_use_the_venv() -> None:
    """Next to the two commands: PYTHON=..., and the venv's commands (which exist there)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    assert "PYTHON=python3.12 bash scripts/test.sh" in section
    assert "source .venv/bin/activate" in section
    named = set(re.findall(r"^\.venv/bin/([\w-]+)", section, flags=re.MULTILINE))
    assert {"together-rerank", "python", "pytest"} <= named
    # the suite runs from a venv the same install made (./.venv, or CI's sdist venv)
    for command in named:
        assert (Path(sys.executable).parent / command).exists(), f".venv/bin/{command}"
    duration = r"about \d+(\.\d+)? minutes on 2 (free )?cores"
    assert re.search(duration, section), "the expected duration"


# -- scripts/check_dist.py: the fresh venvs of .ci/run share what is already compiled ----------
def test_check_dist_shares_bytecode_only_for_the_very_same_module_file(tmp_path: Path) -> None:
    """A fresh venv takes a pyc of this venv only for a module that is the same file (one
    inode: uv hard-links both from its cache), and Python then uses it as it is."""
    import importlib.util
    import py_compile
    import shutil

    spec = importlib.util.spec_from_file_location("check_dist", ROOT / "scripts" / "check_dist.py")
    assert spec is not None
    assert spec.loader is not None
    check_dist = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_dist)
    source, target = tmp_path / "source", tmp_path / "target"
    for root in (source, target):
        (root / "pkg").mkdir(parents=True)
        (root / "pkg" / "__init__.py").write_text("")
    for name, text in (("same", "X = 1\n"), ("copied", "X = 2\n"), ("only_there", "X = 3\n")):
        module = source / "pkg" / f"{name}.py"
        module.write_text(text)
        py_compile.compile(str(module), cfile=importlib.util.cache_from_source(str(module)))
    os.link(source / "pkg" / "same.py", target / "pkg" / "same.py")
    shutil.copy2(source / "pkg" / "copied.py", target / "pkg" / "copied.py")  # another file
    tag = sys.implementation.cache_tag

    assert check_dist.share_bytecode(source, target, tag) == 1
    shared = target / "pkg" / "__pycache__" / f"same.{tag}.pyc"
    assert shared.samefile(source / "pkg" / "__pycache__" / f"same.{tag}.pyc")
    assert not (target / "pkg" / "__pycache__" / f"copied.{tag}.pyc").exists()
    assert not (target / "pkg" / "__pycache__" / f"only_there.{tag}.pyc").exists()
    assert check_dist.share_bytecode(source, target, "cpython-99") == 0  # another Python's
    assert check_dist.share_bytecode(source, target, tag) == 0  # already there: nothing twice
    # Python finds the shared pyc valid: it imports from it and writes no new one in its place
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(
        [sys.executable, "-c", "import pkg.same, pkg.copied; assert pkg.same.X == 1"],
        cwd=target,
        env=env,
        check=True,
        timeout=60,
    )
    assert shared.samefile(source / "pkg" / "__pycache__" / f"same.{tag}.pyc")
    assert (target / "pkg" / "__pycache__" / f"copied.{tag}.pyc").exists()  # compiled there
