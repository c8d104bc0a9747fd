"""What the package declares it supports, and what CI runs, agree.

The rest of packaging is checked on the built files by scripts/check_dist.py (.ci/run): the
licence inside the wheel and the sdist, the suite from the unpacked sdist, each docs page in
a fresh venv with only its install line.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

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


def _requirements(extra: str) -> set[tuple[str, str, str]]:
    return {
        (canonicalize_name(r.name), str(r.specifier), str(r.marker or ""))
        for r in map(Requirement, PROJECT["optional-dependencies"][extra])
    }


def test_all_extra_installs_every_other_users_extra() -> None:
    """`[all]` means all: both frameworks, the CLI and its evaluation, the Redis client."""
    extras = PROJECT["optional-dependencies"]
    assert {"llama-index", "langchain", "cli", "redis"} <= set(extras)
    everything = _requirements("all")
    for extra in set(extras) - {"all", "test"}:
        missing = _requirements(extra) - everything
        assert not missing, f"[all] lacks what [{extra}] installs: {sorted(missing)}"


def test_install_hints_name_the_line_that_works_today() -> None:
    """The package is not on PyPI yet: every message in src/ that suggests installing an
    extra gives the line that works from a clone (`pip install ".[cli]"`), from one place."""
    from together_rerank_plugins._install import install_hint

    assert install_hint("cli") == '`pip install ".[cli]"` in your clone of together-rerank-plugins'
    unpublished = re.compile(r"install\W+together-rerank-plugins\[")
    # Every string the code holds, as Python joins it: a message split over two source
    # lines ("...: pip install " '"together-rerank-plugins[x]"') is one constant here.
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sorted((ROOT / "src").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and unpublished.search(node.value)
    ]
    assert offenders == [], "use together_rerank_plugins._install.install_hint()"
