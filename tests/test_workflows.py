"""The GitHub workflows: CI runs .ci/run on every supported Python, the
release builds, checks and publishes with PyPI trusted publishing (no token), and both pass
actionlint and zizmor, the linters .ci/run's lint step runs (both come with the `test` extra).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_packaging import classified_minors

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent


def load(name: str) -> dict[Any, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]' brings it"
    return found


def test_ci_runs_ci_run_on_every_supported_python() -> None:
    ci = load("ci.yml")
    (job,) = ci["jobs"].values()
    assert job["strategy"]["matrix"]["python"] == classified_minors()
    assert job["strategy"]["fail-fast"] is False
    runs = [s for s in steps(job) if "run" in s]
    dot_ci = [s for s in runs if s["run"].strip() == "bash .ci/run"]
    assert dot_ci, "CI must run the same script as a local run"
    assert dot_ci[0]["env"]["CI_PYTHONS"] == "${{ matrix.python }}"
    setup = next(s for s in steps(job) if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["python-version"] == "${{ matrix.python }}"
    # `on` parses as True in YAML 1.1
    triggers = ci[True]
    assert "pull_request" in triggers
    assert triggers["push"]["branches"] == ["main"]


def test_ci_run_limits_itself_to_the_pythons_asked_for(tmp_path: Path) -> None:
    """CI_PYTHONS (what each CI job sets) must name supported Pythons only."""
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run"), "--list-pythons"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "CI_PYTHONS": "3.12"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3.12"]
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run"), "--list-pythons"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "CI_PYTHONS": "3.9 3.12"},
    )
    assert proc.returncode == 2
    assert "CI_PYTHONS names 3.9, which pyproject.toml does not support" in proc.stderr


def test_release_publishes_on_a_version_tag_with_trusted_publishing() -> None:
    release = load("release.yml")
    assert release[True] == {"push": {"tags": ["v*"]}}
    assert release["permissions"] == {}, "nothing granted by default"
    build, publish = release["jobs"]["build"], release["jobs"]["publish"]
    build_runs = "\n".join(s.get("run", "") for s in steps(build))
    assert "scripts/check_dist.py build dist" in build_runs
    assert "twine check --strict" in build_runs
    assert 'if [ "$TAG" != "v$version" ]' in build_runs
    assert "id-token" not in build.get("permissions", {})
    assert publish["needs"] == "build"
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    uses = [s["uses"] for s in steps(publish) if "uses" in s]
    assert uses[-1].startswith("pypa/gh-action-pypi-publish@")
    text = (WORKFLOWS / "release.yml").read_text(encoding="utf-8")
    assert "password:" not in text, "a token, not trusted publishing"
    assert "${{ secrets." not in text, "a token, not trusted publishing"


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_every_action_is_pinned_to_a_commit(name: str) -> None:
    text = (WORKFLOWS / name).read_text(encoding="utf-8")
    uses = re.findall(r"uses:\s*(\S+)(.*)", text)
    assert uses
    for ref, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), ref
        assert re.fullmatch(r" # v\d+\.\d+\.\d+", comment), f"{ref}: say which version"


def test_actionlint_and_zizmor_pass_on_the_workflows() -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) == 2
    lint = subprocess.run([tool("actionlint"), *files], capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    audit = subprocess.run(
        [tool("zizmor"), "--offline", str(WORKFLOWS)], capture_output=True, text=True, timeout=120
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_the_linters_catch_what_they_are_there_for(tmp_path: Path) -> None:
    """The same tools fail on a workflow with a typo and one that leaks a token to a script,
    so a green lint step means something."""
    bad = tmp_path / ".github" / "workflows"
    bad.mkdir(parents=True)
    (bad / "bad.yml").write_text(
        "on: pull_request_target\n"
        "jobs:\n"
        "  x:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
        "      - run: echo ${{ matrix.nope }}\n",
        encoding="utf-8",
    )
    lint = subprocess.run(
        [tool("actionlint"), str(bad / "bad.yml")], capture_output=True, text=True, timeout=120
    )
    assert lint.returncode != 0
    assert "matrix" in lint.stdout
    audit = subprocess.run(
        [tool("zizmor"), "--offline", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert audit.returncode != 0
    assert "template-injection" in audit.stdout + audit.stderr


def test_ci_run_lints_the_workflows() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    found = re.search(r"step lint bash -c '([^']*)'", script)
    assert found
    lint = found.group(1)
    assert "actionlint" in lint
    assert "zizmor --offline" in lint
