"""What the package declares it supports, and what CI runs, agree (issue 12, items 2 and 3).

The rest of packaging is checked on the built files by scripts/check_dist.py (.ci/run): the
licence inside the wheel and the sdist, the suite from the unpacked sdist, each docs page in
a fresh venv with only its install line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def classified_minors() -> list[str]:
    found = [
        m.group(1)
        for c in PROJECT["classifiers"]
        if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c))
    ]
    return sorted(found, key=lambda v: int(v.split(".")[1]))


def test_requires_python_is_exactly_the_classified_versions() -> None:
    minors = classified_minors()
    assert minors, "no 'Programming Language :: Python :: 3.X' classifier"
    spec = SpecifierSet(PROJECT["requires-python"])
    first, last = (int(m.split(".")[1]) for m in (minors[0], minors[-1]))
    assert [f"3.{n}" for n in range(first, last + 1)] == minors, "a gap in the classifiers"
    for n in range(first, last + 1):
        assert spec.contains(f"3.{n}.0"), f"3.{n} excluded"
        assert spec.contains(f"3.{n}.99"), f"3.{n} excluded"
    assert not spec.contains(f"3.{first - 1}.99"), "requires-python admits an older Python"
    assert not spec.contains(f"3.{last + 1}.0"), (
        f"requires-python promises 3.{last + 1}, which no CI run tests"
    )


def test_running_python_is_supported() -> None:
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in classified_minors()


def test_ci_runs_every_classified_python() -> None:
    """.ci/run takes its list of Pythons from the classifiers (so the two cannot drift)."""
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run"), "--list-pythons"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        # GitHub's CI jobs set CI_PYTHONS to their one Python: the full list is without it
        env={k: v for k, v in os.environ.items() if k != "CI_PYTHONS"},
    )
    assert proc.stdout.split() == classified_minors()


def test_licence_is_declared_and_shipped() -> None:
    assert PROJECT["license"] == "MIT"
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert PROJECT["license-files"] == ["LICENSE"]
    sdist = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    assert "LICENSE" in sdist["hatch"]["build"]["targets"]["sdist"]["include"]
