"""Every ```python example in README.md and docs/*.md runs on its own, as a reader would run it.

The conventions (also in docs/testing.md, for whoever writes docs):

- Each ```python block runs alone, in a process of its own (forked from a parent that has
  imported the slow modules the block imports or its calls load, and nothing else:
  tests/warm_python.py; ``DOCS_EXAMPLES_COLD=1`` for a fresh interpreter), in an empty
  directory, with the
  reader's environment: nothing of TOGETHER_*, LANGSMITH_*, LANGCHAIN_*, OPENAI_* and no
  hidden set-up code. So a block imports what it uses and configures what it needs (for
  LlamaIndex indexes: ``Settings.llm = MockLLM()`` / ``Settings.embed_model = ...`` shown).
- Offline, either way:
  * self-contained: ``transport=LexicalRerankEndpoint()`` and ``api_key="placeholder"``; or
  * after the page's serve command: a ```bash block on the page, before the examples,
    with the line ``python -m together_rerank_plugins.testing`` (it serves the embedded
    endpoint on 127.0.0.1 and prints ``export TOGETHER_BASE_URL=...`` and
    ``export TOGETHER_API_KEY=...``). The test runs that command as written and gives every
    later block of the page the variables it printed, as a reader who pasted them would have.
- ``<!-- continues -->`` on the line just before a fence: the block continues the previous
  python block of the page; it runs with that block (and what it continues) first.
- ``<!-- needs: redis-server -->`` on the line just before a fence: the block gets
  ``REDIS_URL`` of a real redis-server on 127.0.0.1 (started for it; skipped, saying how to
  get one, without a binary), as a reader with a Redis sets it.
- ``<!-- skip: why -->`` on the line just before a fence: not run (a real key, a download);
  reported as a skipped test with the reason.
- A page with examples names, in its first ``pip install`` line, everything they import
  (checked here against the installed metadata; scripts/check_dist.py runs each page in a
  fresh venv with only that line installed).
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.docs_examples import (
    PAGES,
    Example,
    ExampleRedis,
    all_examples,
    examples,
    install_command,
    parse_install,
    reader_env,
    run,
    served,
)
from tests.redis_server import NO_REDIS_REASON

EXAMPLES = all_examples()


@pytest.fixture(scope="session")
def serve_env() -> Iterator[Callable[[str], dict[str, str]]]:
    """Each distinct serve command, started once (as written), stopped after the session."""
    with ExitStack() as stack:
        started: dict[str, dict[str, str]] = {}

        def env_for(command: str) -> dict[str, str]:
            if command not in started:
                started[command] = stack.enter_context(served(command, sys.executable))
            return started[command]

        yield env_for


@pytest.fixture(scope="session")
def example_redis() -> Iterator[ExampleRedis]:
    """One real redis-server for the examples that need one, started by the first of them."""
    redis = ExampleRedis()
    yield redis
    redis.close()


@pytest.mark.loopback
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_doc_example_runs(
    example: Example,
    tmp_path: Path,
    serve_env: Callable[[str], dict[str, str]],
    example_redis: ExampleRedis,
) -> None:
    if example.skip:
        pytest.skip(f"{example.name}: {example.skip}")
    exported = serve_env(example.serve) if example.serve else {}
    if example.redis:
        redis_env = example_redis.env()
        if redis_env is None:
            pytest.skip(f"{example.name}: needs a Redis: {NO_REDIS_REASON}")
        exported = exported | redis_env
    proc = run(example, sys.executable, tmp_path, reader_env(exported))
    assert proc.returncode == 0, (
        f"{example.name} failed when run on its own"
        f"{' after the page serve command' if example.serve else ''}:\n"
        f"{proc.stdout}\n{proc.stderr}"
    )


def test_markers_are_understood() -> None:
    """A misspelled marker would silently change how a block runs: only the known ones."""
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            text = line.strip()
            if text.startswith("<!--") and any(w in text for w in ("continue", "skip", "need")):
                known = text in ("<!-- continues -->", "<!-- needs: redis-server -->")
                assert known or text.startswith("<!-- skip: "), (
                    f"{page.name}:{number}: unknown marker {text!r}"
                )


def test_a_block_that_needs_redis_gets_a_real_one(tmp_path: Path) -> None:
    """The marker reaches the block and what continues it, and the runner's server is a
    real redis-server that answers on the URL the block reads (or there is no binary)."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- needs: redis-server -->\n```python\nA = 1\n```\n\n"
        "<!-- continues -->\n```python\nB = A\n```\n\n```python\nC = 1\n```\n",
        encoding="utf-8",
    )
    assert [e.redis for e in examples(page)] == [True, True, False]
    redis = ExampleRedis()
    try:
        env = redis.env()
        if env is None:
            pytest.skip(NO_REDIS_REASON)
        import redis as redis_client

        assert redis_client.Redis.from_url(env["REDIS_URL"]).ping() is True
        assert redis.env() == env  # one server, started once
    finally:
        redis.close()


def _imports(code: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "together_rerank_plugins"}


def _closure(requirements: list[Requirement]) -> set[str]:
    """Distributions these requirements install (as recorded in the installed metadata)."""
    names: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(r, frozenset({""})) for r in requirements]  # (requirement, parent's extras)
    while todo:
        req, parent_extras = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in parent_extras):
            continue
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        names.add(name)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        extras = frozenset(req.extras) | {""}
        todo += [(Requirement(r), extras) for r in requires]
    return names


@functools.cache  # every installed distribution's file list, read once per process
def _providers() -> dict[str, list[str]]:
    """Top-level module -> distributions providing it. ``packages_distributions()`` of
    Python 3.10 reads only ``top_level.txt``, which wheels built without setuptools lack;
    3.11+ also infers it from the files, as done here."""
    found: dict[str, list[str]] = {}
    for dist in metadata.distributions():
        tops = set((dist.read_text("top_level.txt") or "").split())
        for file in dist.files or []:
            if file.suffix == ".py" and ".." not in file.parts:
                tops.add(file.parts[0] if len(file.parts) > 1 else file.stem)
        for top in tops:
            found.setdefault(top, []).append(dist.metadata["Name"])
    return found


@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(not e.skip for e in examples(p))], ids=lambda p: p.name
)
def test_install_line_covers_imports(page: Path) -> None:
    """The page's first ``pip install`` line installs every package its examples import."""
    words = install_command(page)
    assert words, f"{page.name} has examples but no `pip install` line saying what they need"
    extras, others = parse_install(words)
    assert extras, f'{page.name}: install this package (`pip install ".[extra]"`) first'
    ours = Requirement(f"together-rerank-plugins[{','.join(sorted(extras))}]")
    installs = _closure([ours, *(Requirement(o) for o in others)])
    modules = set().union(*(_imports(e.code) for e in examples(page) if not e.skip))
    providers = _providers()
    missing = {
        m: providers.get(m)
        for m in sorted(modules)
        if not {canonicalize_name(d) for d in providers.get(m, [m])} & installs
    }
    assert not missing, f"{page.name}: `pip install {' '.join(words)}` does not install {missing}"


@pytest.mark.loopback
def test_serve_command_prints_exports_that_work_and_stops_by_itself(tmp_path: Path) -> None:
    """The docs' serve command: its export lines reach the endpoint; --seconds bounds it."""
    command = "python -m together_rerank_plugins.testing --seconds 20"
    with served(command, sys.executable) as exported:
        assert set(exported) == {"TOGETHER_BASE_URL", "TOGETHER_API_KEY"}
        assert exported["TOGETHER_BASE_URL"].startswith("http://127.0.0.1:")
        code = (
            "from together_rerank_plugins import RerankClient\n"
            "print(RerankClient().rerank('pears', ['red apples', 'green pears'])[0].index)\n"
        )
        (tmp_path / "client.py").write_text(code)
        proc = subprocess.run(
            [sys.executable, "client.py"],
            cwd=tmp_path,
            env=reader_env(exported),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (proc.returncode, proc.stdout.strip()) == (0, "1"), proc.stderr
    timed = subprocess.run(
        [sys.executable, "-m", "together_rerank_plugins.testing", "--seconds", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert timed.returncode == 0
    assert timed.stdout.startswith("export TOGETHER_BASE_URL=http://127.0.0.1:")


ROOT = Path(__file__).resolve().parent.parent


def _documentation_list() -> set[str]:
    """The pages linked from the README's "## Documentation" list."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Documentation\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"\]\((docs/[^)#]+\.md)\)", section))


def test_every_docs_page_is_in_the_readme_documentation_list() -> None:
    """A page no list links to is found by nobody (docs/bad-inputs.md was linked only from
    errors.md). Whatever pages exist, each is in the README's list, and each entry exists."""
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")}
    listed = _documentation_list()
    assert pages - listed == set(), "add these to README.md's Documentation list"
    assert listed - pages == set(), "README.md's Documentation list links missing pages"
