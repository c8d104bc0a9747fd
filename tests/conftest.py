"""Shared fixtures. Unit tests use in-process transports (no sockets); see tests/README.md."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from together_rerank_plugins import RerankClient
from together_rerank_plugins.testing import (
    TEST_ENDPOINT_HEADER,
    LexicalRerankEndpoint,
    serve_loopback,
)

TEST_KEY = "test-key-0123456789abcdef"  # not a real key; long enough to be scrubbed


def backup_client(**options: Any) -> RerankClient:
    """A failover endpoint: another model at another host (``options`` add to or replace
    these: ``transport``, ``base_url``, ``timeout``, ``circuit_breaker``, ...)."""
    defaults = {"model": "acme/rerank-backup", "api_key": TEST_KEY}
    return RerankClient(**(defaults | {"base_url": "http://backup.example"} | options))


def recommended_primary(deadline: float, secondary: RerankClient, **options: Any) -> RerankClient:
    """A primary with the settings docs/production.md recommends: a ``deadline``, its
    ``timeout`` at half of it, no retry, one failover endpoint, fallback (``options`` add
    the endpoint: ``transport`` or ``base_url``, a ``circuit_breaker``)."""
    return RerankClient(
        api_key=TEST_KEY,
        timeout=deadline / 2,
        max_retries=0,
        deadline=deadline,
        failover=[secondary],
        on_error="fallback",
        **options,
    )


def fast_failing_primary(secondary: RerankClient, **options: Any) -> RerankClient:
    """A primary that answers 503 at once (no retry) in front of ``secondary``, falling
    back when that fails too."""
    return RerankClient(
        api_key=TEST_KEY,
        transport=failing(503),
        max_retries=0,
        failover=[secondary],
        on_error="fallback",
        **options,
    )


def run_in_fork(work: Callable[[], Any], *, within: float = 10.0) -> Any:
    """``work()`` in a forked child: what it returned (through JSON), the name of the
    exception it raised, or "hung" when it had not finished ``within`` seconds (the child
    is then killed: the test stops by itself)."""
    import json
    import signal
    import time
    import warnings

    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns when other threads are alive
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: work, report through the pipe, leave at once
        try:
            got = work()
        except BaseException as exc:
            got = type(exc).__name__
        try:
            os.write(write_end, json.dumps(got).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + within
    while not os.waitpid(pid, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.02)
    with os.fdopen(read_end, "rb") as pipe:
        return json.loads(pipe.read() or b'"hung"')


# In-process endpoints that always fail one way (fallback and failover tests share them).
def failing(status: int) -> httpx.MockTransport:
    """Answers every request with ``status`` and a documented error body."""
    return httpx.MockTransport(
        lambda r: httpx.Response(status, json={"error": {"message": f"status {status}"}})
    )


def recording(seen: list[httpx.Request]) -> httpx.MockTransport:
    """Answers every request with one result (index 0, score 0.5), keeping it in ``seen``."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"results": [{"index": 0, "relevance_score": 0.5}]})

    return httpx.MockTransport(handler)


def hanging() -> httpx.MockTransport:
    """Never answers: every attempt ends in a read timeout."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    return httpx.MockTransport(handler)


def malformed() -> httpx.MockTransport:
    """Answers 200 with a body cut in the middle of the JSON."""
    return httpx.MockTransport(lambda r: httpx.Response(200, content=b'{"results": [{"ind'))


def anonymous(
    handler: LexicalRerankEndpoint | Callable[[httpx.Request], httpx.Response],
) -> Callable[[httpx.Request], httpx.Response]:
    """``handler`` without the header by which the embedded endpoint names itself: served on
    loopback, it stands in for a live server (the CLI and demo then say "mode: live")."""
    handle = handler.handle if isinstance(handler, LexicalRerankEndpoint) else handler

    def answer(request: httpx.Request) -> httpx.Response:
        response = handle(request)
        response.headers.pop(TEST_ENDPOINT_HEADER, None)
        return response

    return answer


# Read once, before `clean_env` hides them: only tests marked `live` may use these.
LIVE_ENV = {
    name: os.environ.get(name)
    for name in (
        "TOGETHER_API_KEY",
        "TOGETHER_BASE_URL",
        "TOGETHER_RERANK_MODEL",
        "TOGETHER_RERANK_MODEL_FAMILY",
    )
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's real Together settings unless it sets them itself."""
    for name in LIVE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def endpoint() -> LexicalRerankEndpoint:
    """The embedded lexical endpoint, to pass as ``transport=``; records request bodies."""
    return LexicalRerankEndpoint()


@pytest.fixture
def loopback_url(endpoint: LexicalRerankEndpoint) -> Iterator[str]:
    """The same endpoint served on a real 127.0.0.1 socket; stops after the test."""
    with serve_loopback(endpoint) as url:
        yield url
