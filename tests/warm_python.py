"""A warm interpreter: import slow third-party modules once, then fork one fresh process per
script, so the tests that run docs examples as a reader would do not each spend two seconds
importing LlamaIndex.

Why by hand: :mod:`multiprocessing`'s forkserver runs pickled functions of the calling
interpreter; this runs *scripts*, as ``python script.py`` would, under any venv's Python (the
docs-extras check runs each page in a fresh venv), with the script's own cwd, environment,
argv, stdout, stderr and exit status. Nothing here is specific to this package.

Each script runs in its own process, forked from a parent that has imported only the modules
named on its command line (the caller passes the slow ones the script imports itself, so a
script sees nothing in ``sys.modules`` that it would not have imported anyway), then frozen
what they made (``gc.freeze()``, so a child's collections do not copy the heap). The child
then runs the script as ``__main__`` and ends the way
``python script.py`` ends: non-daemon threads joined, ``atexit`` handlers run, an uncaught
exception printed with exit status 1, ``SystemExit`` honoured.

Protocol (JSON, one object per line): the parent prints ``{"ready": [...], "missing": [...]}``
once its imports are done (a module that is not installed is left to the script to import,
and fail on, itself; threads left running by an import make it refuse: ``{"refused": why}``).
Then, for each request line ``{"argv", "cwd", "env", "stdout", "stderr"}`` (the last two:
files to write), it prints ``{"pid": N}`` when the child starts and ``{"returncode": N}``
when it ends (negative: killed by that signal, as :mod:`subprocess` says).
It exits when its stdin closes.

    python tests/warm_python.py MODULE [MODULE ...]     # run by WarmPython, below
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


# -- the parent process (this file run as a script) --------------------------------------------
def _serve() -> dict[str, Any]:
    """Import, then fork a child per request; return the request in the child only."""
    import importlib

    ready, missing = [], []
    for name in sys.argv[1:]:
        try:
            importlib.import_module(name)
            ready.append(name)
        except ImportError:
            missing.append(name)
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")

    def say(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")

    # forking a process with threads copies their locks in whatever state they are in
    if threading.active_count() != 1:
        say({"refused": f"{threading.active_count()} threads are running after the imports"})
        sys.exit(1)
    # Every object the imports made goes to the collector's permanent generation, as the gc
    # docs advise before fork(): a child's collections would otherwise write to each object's
    # header, copying every page of the parent's heap (about 0.9 CPU-s per child after
    # llama_index.core; 0.1 s with this). Nothing a script sees changes but gc.get_freeze_count().
    gc.freeze()
    say({"ready": ready, "missing": missing})
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            channel.close()
            return dict(request)
        say({"pid": pid})
        _, status = os.waitpid(pid, 0)
        say({"returncode": os.waitstatus_to_exitcode(status)})
    sys.exit(0)


def _become(request: dict[str, Any]) -> str:
    """In the child: take the script's cwd, environment, argv, stdin and outputs."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for fd, target, mode in (
        (0, os.devnull, os.O_RDONLY),
        (1, request["stdout"], flags),
        (2, request["stderr"], flags),
    ):
        opened = os.open(target, mode, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115  (fd 0 stays open)
    script = os.path.abspath(request["argv"][0])
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(script)  # what `python script.py` puts first
    return script


# -- the caller's side -------------------------------------------------------------------------
class WarmPython:
    """One warm parent (``python`` with ``modules`` imported); :meth:`run` is
    :func:`subprocess.run` of ``[python, *argv]`` with ``capture_output=True, text=True``."""

    def __init__(self, python: str, modules: Sequence[str], env: dict[str, str]) -> None:
        self.python, self.modules = python, tuple(modules)
        self._lock = threading.Lock()
        self._outdir = tempfile.TemporaryDirectory(prefix="warm-python-")
        self._log = open(Path(self._outdir.name) / "parent.log", "w+b")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [python, str(HERE), *self.modules],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=self._outdir.name,
        )
        self._buffer = b""
        hello = self._read(timeout=120)
        if hello is None or "ready" not in hello:
            self.close()
            raise RuntimeError(f"warm {python} {self.modules}: {hello!r} {self._parent_log()}")

    def _parent_log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def _read(self, timeout: float) -> dict[str, Any] | None:
        """The parent's next message, or None if it ended or ``timeout`` passed first."""
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            readable, _, _ = select.select([fd], [], [], timeout)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def run(
        self, argv: Sequence[str], *, cwd: Path | str, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        with self._lock:
            out, err = Path(self._outdir.name) / "stdout", Path(self._outdir.name) / "stderr"
            request = {"argv": list(argv), "cwd": str(cwd), "env": env}
            assert self._proc.stdin is not None
            self._proc.stdin.write(
                (json.dumps(request | {"stdout": str(out), "stderr": str(err)}) + "\n").encode()
            )
            self._proc.stdin.flush()
            started = self._read(timeout=30)
            if started is None:
                raise RuntimeError(f"the warm parent did not start {argv}: {self._parent_log()}")
            ended = self._read(timeout=timeout)
            if ended is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(started["pid"], signal.SIGKILL)
                self._read(timeout=30)  # the parent reaps it
                raise subprocess.TimeoutExpired([self.python, *argv], timeout)
            stdout = out.read_text(encoding="utf-8", errors="replace")
            stderr = err.read_text(encoding="utf-8", errors="replace")
            return subprocess.CompletedProcess(
                [self.python, *argv], ended["returncode"], stdout, stderr
            )

    def close(self) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._log.close()
        self._outdir.cleanup()


def _run_as_main(script: str) -> None:
    """Execute the script as ``__main__``, with the attributes ``python script.py`` gives it
    (runpy would set ``sys.argv[0]`` to the absolute path)."""
    import builtins
    import importlib.machinery
    import types

    main = types.ModuleType("__main__")
    main.__dict__.update(
        __file__=script,
        __cached__=None,
        __builtins__=builtins,
        __loader__=importlib.machinery.SourceFileLoader("__main__", script),
        __spec__=None,
        __package__=None,
    )
    sys.modules["__main__"] = main
    with open(script, "rb") as source:
        code = compile(source.read(), script, "exec")
    exec(code, main.__dict__)


if __name__ == "__main__":
    _run_as_main(_become(_serve()))
