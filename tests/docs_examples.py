"""Find the ```python examples of README.md and docs/*.md and run them as a reader would.

Used by tests/test_docs.py (with the test suite's interpreter) and by
scripts/check_dist.py (with a fresh venv holding only what each page's install line installs).
The conventions are written at the top of tests/test_docs.py and in docs/testing.md.
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import os
import queue
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.redis_server import RedisServer, find_redis_server
from tests.warm_python import WarmPython

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"^<!--\s*(continues|needs: redis-server|skip:\s*(?P<reason>.+?))\s*-->$")
#: what a block marked ``<!-- needs: redis-server -->`` gets: the URL of a real Redis, as a
#: reader who has one sets it (the runner starts a redis-server on 127.0.0.1 for it)
REDIS_URL_VARIABLE = "REDIS_URL"
SERVE_COMMAND = "python -m together_rerank_plugins.testing"
SHELLS = {"bash", "sh", "shell", "console"}
# What a reader's shell might hold that an example must not silently depend on.
READER_ENV_DROPPED = ("TOGETHER_", "LANGSMITH_", "LANGCHAIN_", "OPENAI_", "PYTEST_")


@dataclass(frozen=True)
class Example:
    """One ```python block. ``code`` is the block as written; ``program`` is what runs."""

    page: Path
    line: int  # of the opening fence, 1-based
    code: str
    program: str  # the blocks it continues, then the block itself
    skip: str | None  # why it is not run (<!-- skip: ... -->), or None
    serve: str | None  # the page's serve command, when the block comes after it
    redis: bool = False  # <!-- needs: redis-server -->: REDIS_URL names a real Redis

    @property
    def name(self) -> str:
        return f"{self.page.name}:{self.line}"


def examples(page: Path) -> list[Example]:
    """The page's python examples, in order, with their markers applied."""
    text = page.read_text(encoding="utf-8")
    found: list[Example] = []
    serve: str | None = None
    for match in FENCE.finditer(text):
        lang, body = match.group(1), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        if lang in SHELLS and serve is None:
            serve = next(
                (c for c in _commands(body) if c.startswith(SERVE_COMMAND)),
                None,
            )
        if lang != "python":
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        marker = MARKER.match(before)
        skip = marker.group("reason") if marker and marker.group("reason") else None
        if body.startswith("# not run"):  # the older, visible form of <!-- skip: ... -->
            skip = body.split("\n", 1)[0].removeprefix("#").strip()
        program = body
        redis = bool(marker and marker.group(1) == "needs: redis-server")
        if marker and marker.group(1) == "continues":
            runs = [e for e in found if not e.skip]
            if not runs:
                raise ValueError(f"{page.name}:{line}: <!-- continues --> with no block before")
            previous = runs[-1]  # a skipped block is one the reader could not run
            program = previous.program + "\n\n" + body
            redis = previous.redis
        found.append(Example(page, line, body, program, skip, serve, redis))
    return found


class ExampleRedis:
    """A real redis-server on 127.0.0.1 for the examples marked ``<!-- needs: redis-server
    -->``, started when the first one runs (never for a run that has none) and stopped by
    :meth:`close`."""

    def __init__(self) -> None:
        self.binary = find_redis_server()
        self._server: RedisServer | None = None

    def env(self) -> dict[str, str] | None:
        """``{"REDIS_URL": url}`` of the running server, or None without a binary."""
        if self.binary is None:
            return None
        if self._server is None:
            self._server = RedisServer(self.binary).start()
        return {REDIS_URL_VARIABLE: self._server.url}

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


def all_examples() -> list[Example]:
    return [e for page in PAGES for e in examples(page)]


def _commands(shell: str) -> list[str]:
    """Shell lines without their comments."""
    lines = []
    for raw in shell.splitlines():
        try:
            words = shlex.split(raw, comments=True)
        except ValueError:
            continue
        if words:
            lines.append(shlex.join(words))
    return lines


def install_command(page: Path) -> list[str] | None:
    """The words of the page's first ``pip install`` line (the one its examples need)."""
    for match in FENCE.finditer(page.read_text(encoding="utf-8")):
        if match.group(1) not in SHELLS:
            continue
        for command in _commands(match.group(2)):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                return words[2:]
    return None


def parse_install(words: list[str]) -> tuple[set[str], list[str]]:
    """(extras of this package, other requirements) named by ``pip install`` arguments."""
    extras: set[str] = set()
    others: list[str] = []
    for word in words:
        if word.startswith("-"):
            continue
        project = re.fullmatch(r"(\.|together-rerank-plugins)(?:\[([\w,-]+)\])?", word)
        if project:
            extras |= set(filter(None, (project.group(2) or "").split(",")))
        else:
            others.append(word)
    return extras, others


def reader_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a reader who set nothing for this package (plus ``extra``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(READER_ENV_DROPPED)}
    return env | (extra or {})


@contextlib.contextmanager
def served(command: str, python: str, *, timeout: float = 60.0) -> Iterator[dict[str, str]]:
    """Run the docs' serve command as written (``python`` being ``python``); yield the
    variables its ``export`` lines set; stop it afterwards."""
    words = shlex.split(command)
    proc = subprocess.Popen(
        [python, *words[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=reader_env(),
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    exported: dict[str, str] = {}
    seen: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                raise RuntimeError(f"{command!r} printed nothing for {timeout} s") from None
            seen.append(line)
            if not line or line.startswith("#"):
                break
            name, _, value = line.removeprefix("export ").strip().partition("=")
            exported[name] = shlex.split(value)[0] if value else ""
        if not exported:
            raise RuntimeError(f"{command!r} printed no export lines: {''.join(seen)!r}")
        yield exported
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        stdout.close()


# The slow imports an example may make (about 2 s for llama_index.core, 1 s for
# langchain_classic, 0.5 s for the SDK), and what the warm parent imports for each. Imports of
# ``a.b.c`` import ``a.b`` first, so the parent holds nothing the example would not import.
# Two more are imported at run time by what the example does: LlamaIndex's LLM resolution
# (``Settings.llm = ...``, query engines) imports LangChain's language models when LangChain is
# installed (1 s), and this package's first call imports the SDK and its resources (0.9 s).
_SLOW = {"llama_index", "langchain_classic"}
_ALSO = {"llama_index.core": ("langchain_core.language_models.base",)}
_SDK = ("together", "together.resources")


def preloads(example: Example) -> tuple[str, ...]:
    """The modules a warm parent may import before forking ``example``: the first two parts
    of each slow module it imports, and what those load at run time (above): the SDK when it
    imports this package, which imports the SDK on its first call."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(example.program)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in _SLOW:
                module = ".".join(name.split(".")[:2])
                modules |= {module, *_ALSO.get(module, ())}
            elif top == "together_rerank_plugins":
                modules.update(_SDK)
    return tuple(sorted(modules))


_warm: dict[tuple[str, tuple[str, ...]], WarmPython] = {}
_warm_lock = threading.Lock()


def _warm_python(python: str, modules: tuple[str, ...]) -> WarmPython | None:
    """One warm parent per (python, modules), started on first use, closed at exit; None
    where there is no ``os.fork`` (the example then runs in a plain fresh interpreter)."""
    if not modules or not hasattr(os, "fork") or os.environ.get("DOCS_EXAMPLES_COLD"):
        return None
    with _warm_lock:
        key = (python, modules)
        if key not in _warm:
            if not _warm:
                atexit.register(_close_warm)
            _warm[key] = WarmPython(python, modules, reader_env())
        return _warm[key]


def _close_warm() -> None:
    with _warm_lock:
        for warm in _warm.values():
            warm.close()
        _warm.clear()


def run(
    example: Example, python: str, workdir: Path, env: dict[str, str], *, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the example's program as ``python script.py`` would, in ``workdir``: in a process
    of its own, forked from a warm parent that has imported the slow modules the example
    imports itself (tests/warm_python.py); ``DOCS_EXAMPLES_COLD=1`` starts each one from a
    fresh interpreter instead."""
    script = workdir / f"{example.page.stem}_line{example.line}.py"
    script.write_text(example.program, encoding="utf-8")
    warm = _warm_python(python, preloads(example))
    if warm is not None:
        return warm.run([script.name], cwd=workdir, env=env, timeout=timeout)
    return subprocess.run(
        [python, script.name],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
