"""Answers a misbehaving server sends over real sockets.

Each test serves its own misbehaving endpoint on 127.0.0.1 (``serve_loopback`` with a
handler) and checks what a user sees:

- a 200 whose score is an integer of 400 digits, or whose body is 100,000 nested brackets:
  :class:`MalformedResponseError` (never ``OverflowError`` / ``RecursionError``), and
  ``on_error="fallback"`` engages;
- a server that echoes the ``Authorization`` header inside a 200 answer: the key is in no
  error message and no log line;
- the fallback WARNING says how many retries happened (none with ``max_retries=0``).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator

import httpx
import pytest

import together_rerank_plugins as trp
from together_rerank_plugins import RerankClient
from together_rerank_plugins.testing import serve_loopback

from .conftest import TEST_KEY

pytestmark = pytest.mark.loopback

DOCS = ["river bank", "coffee market", "snow trail"]
MODES = ["sync", "async"]
LOGGER = "together_rerank_plugins"


def answering(body: bytes | Callable[[httpx.Request], bytes], status: int = 200) -> Callable:
    """A handler that answers every request with ``body`` (or ``body(request)``)."""

    def handle(request: httpx.Request) -> httpx.Response:
        content = body(request) if callable(body) else body
        return httpx.Response(status, content=content, headers={"content-type": "application/json"})

    return handle


def results_with(score: str, index: str = "0") -> bytes:
    """A 200 answer for DOCS whose first result carries raw JSON ``score`` and ``index``."""
    return (
        f'{{"object":"rerank","model":"m","results":[{{"index":{index},"relevance_score":{score}}},'
        '{"index":1,"relevance_score":0.5},{"index":2,"relevance_score":0.25}]}'
    ).encode()


HUGE_INT = "9" * 400
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_IN_RESULTS = b'{"results":' + DEEP + b"}"


@pytest.fixture
def serve() -> Iterator[Callable[[Callable], str]]:
    with_stack: list = []

    def start(handler: Callable) -> str:
        cm = serve_loopback(handler)
        with_stack.append(cm)
        return cm.__enter__()

    yield start
    for cm in reversed(with_stack):
        cm.__exit__(None, None, None)


def client_for(url: str, **kw: object) -> RerankClient:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 10.0)
    return RerankClient(api_key=TEST_KEY, base_url=url, **kw)  # type: ignore[arg-type]


async def run(client: RerankClient, mode: str, query: str = "coffee") -> trp.RerankResults:
    if mode == "sync":
        with client:
            return client.rerank(query, DOCS)
    async with client:
        return await client.arerank(query, DOCS)


# -- oversized numbers and deep nesting -------------------------------------------------------
BODIES = {
    "int-of-400-digits": results_with(HUGE_INT),
    "negative-int-of-400-digits": results_with("-" + HUGE_INT),
    "index-of-400-digits": results_with("0.5", index=HUGE_INT),
    "float-overflowing-to-inf": results_with("1e400"),
    "100000-nested-brackets": DEEP,
    "nested-brackets-as-results": DEEP_IN_RESULTS,
    "int-of-5000-digits": results_with("7" * 5000),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
async def test_oversized_numbers_and_deep_nesting_are_malformed_answers(
    mode: str, body: bytes, serve: Callable[[Callable], str]
) -> None:
    url = serve(answering(body))
    with pytest.raises(trp.MalformedResponseError) as info:
        await run(client_for(url), mode)
    assert len(str(info.value)) < 600  # the number is described, not printed


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "body", [BODIES["int-of-400-digits"], DEEP], ids=["int-of-400-digits", "deep-nesting"]
)
async def test_fallback_engages_on_oversized_numbers_and_deep_nesting(
    mode: str, body: bytes, serve: Callable[[Callable], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    url = serve(answering(body))
    results = await run(client_for(url, on_error="fallback"), mode)
    assert results.fallback
    assert [r.index for r in results] == [0, 1, 2]
    assert isinstance(results.error, trp.MalformedResponseError)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


# -- a key echoed in a 200 answer -------------------------------------------------------------
def _auth(request: httpx.Request) -> str:
    return request.headers["authorization"]


ECHOES: dict[str, Callable[[httpx.Request], bytes]] = {
    "as-score": lambda r: results_with(json.dumps(_auth(r))),
    "as-index": lambda r: results_with("0.5", index=json.dumps(_auth(r))),
    "as-result": lambda r: json.dumps({"results": [_auth(r)]}).encode(),
    "as-results": lambda r: json.dumps({"results": {"auth": _auth(r)}}).encode(),
    "as-body": lambda r: json.dumps(_auth(r)).encode(),
    "in-bad-json": lambda r: b'{"results": [' + _auth(r).encode(),
    "in-error-status": lambda r: json.dumps({"error": {"message": _auth(r)}}).encode(),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("echo", ECHOES.values(), ids=ECHOES.keys())
@pytest.mark.parametrize("on_error", ["raise", "fallback"])
async def test_a_key_echoed_by_the_server_is_in_no_message_and_no_log_line(
    mode: str,
    echo: Callable[[httpx.Request], bytes],
    on_error: str,
    serve: Callable[[Callable], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    status = 503 if echo is ECHOES["in-error-status"] else 200
    url = serve(answering(echo, status=status))
    client = client_for(url, on_error=on_error)
    try:
        results = await run(client, mode)
        error = results.error
        assert results.fallback
    except trp.RerankError as exc:
        assert on_error == "raise"
        error = exc
    assert error is not None
    texts = [str(error), repr(error), str(getattr(error, "server_message", ""))]
    texts += [r.getMessage() for r in caplog.records]
    leaks = [t for t in texts if TEST_KEY in t]
    assert not leaks, leaks


# -- the fallback WARNING tells the retries as they were ---------------------------------------
def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens: connection refused


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["refused", "503", "429"])
@pytest.mark.parametrize("retries", [0, 1])
async def test_the_fallback_warning_says_how_many_retries_were_made(
    mode: str,
    kind: str,
    retries: int,
    serve: Callable[[Callable], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    if kind == "refused":
        url = closed_port_url()
    else:

        def handle(request: httpx.Request) -> httpx.Response:
            return httpx.Response(int(kind), json={"error": {"message": "busy"}})

        url = serve(handle)
    results = await run(client_for(url, on_error="fallback", max_retries=retries), mode)
    assert results.fallback
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "already retried" not in warning
    if retries == 0:
        assert "no retry (max_retries=0)" in warning
    else:
        assert "after 1 retry" in warning
