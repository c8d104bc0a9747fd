"""Bounded waits and settings where the failover, breaker, deadline, resolver and settings
meet each other. Each test failed on the code before its fix. No test opens a non-loopback
socket."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import together_rerank_plugins as trp
from together_rerank_plugins import RerankClient

from .conftest import TEST_KEY, backup_client, fast_failing_primary, run_in_fork
from .test_hot_path import DOCS, QUERY, Server


# -- a hanging failover endpoint behind a primary that fails fast -----------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_hanging_failover_behind_a_fast_failing_primary_opens_its_breaker(mode: str) -> None:
    """The primary answers 503 at once; the failover hangs, with the default ``timeout``
    (60 s, above the deadline). It had nearly the whole deadline and gave no answer: that
    is evidence against it. Its breaker must open, so later calls fall back at once instead
    of spending the whole deadline on it every time. (On the code before the fix the cut
    was never counted: the breaker stayed closed with 0 failures, and every call waited
    the deadline out.)"""
    breaker = trp.CircuitBreaker(failure_threshold=2, recovery_time=60)
    hung = Server(latency=None)
    secondary = backup_client(transport=hung, max_retries=0, circuit_breaker=breaker)
    primary = fast_failing_primary(secondary, deadline=0.3).warm_up()

    async def calls() -> list[Any]:
        return [await primary.arerank(QUERY, DOCS) for _ in range(4)]

    results = [primary.rerank(QUERY, DOCS) for _ in range(4)] if mode == "sync" else (
        asyncio.run(calls()))  # fmt: skip
    assert all(r.fallback for r in results)
    assert breaker.state == "open"
    assert hung.requests == 2  # the last two calls fell back without waiting on it
    assert isinstance(results[-1].error, trp.CircuitOpenError)


# -- a hung resolver: abandoned lookups must not pile up threads ------------------------------
def _resolver_threads() -> int:
    import threading

    return sum(t.name == "together-rerank-resolve" for t in threading.enumerate())


def test_a_hung_resolver_under_a_flood_of_calls_holds_a_bounded_number_of_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resolver that never answers, and many sync calls with a short deadline: each call
    ends at its bound (the deadline bounds a hung lookup), but the lookup it abandoned must not
    keep a thread of its own. Calls for one host share one lookup; lookups for distinct
    hosts are capped. (On the code before the fix: one thread per call, 30 threads for
    30 calls, each held as long as the resolver hangs.)"""
    import socket
    import threading

    from together_rerank_plugins import _transport

    release = threading.Event()
    real = socket.getaddrinfo

    def hung_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if not str(name).endswith(".hung-resolver.test"):
            return real(host, *args, **kwargs)
        release.wait(20)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", hung_getaddrinfo)
    before = _resolver_threads()
    try:
        same = RerankClient(
            api_key=TEST_KEY,
            base_url="http://api.hung-resolver.test:9",
            max_retries=0,
            deadline=0.05,
        )
        outcomes: list[Any] = []
        for _ in range(15):
            try:
                same.rerank(QUERY, DOCS)
            except trp.RerankError as exc:
                outcomes.append(exc)
        assert len(outcomes) == 15
        assert all(isinstance(e, trp.RerankTimeoutError) for e in outcomes)
        assert _resolver_threads() - before == 1  # one lookup, shared by every call
        hosts = [
            RerankClient(
                api_key=TEST_KEY,
                base_url=f"http://h{i}.hung-resolver.test:9",
                max_retries=0,
                deadline=0.05,
            )
            for i in range(3 * _transport.MAX_LOOKUPS)
        ]
        for client in hosts:
            with pytest.raises(trp.RerankTimeoutError):
                client.rerank(QUERY, DOCS)
        assert _resolver_threads() - before <= _transport.MAX_LOOKUPS
    finally:
        release.set()


# -- pydantic round trips of an adapter with read-only settings -------------------------------
def test_a_llama_index_adapter_round_trips_through_model_dump_and_model_validate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``model_validate(model_dump())`` is pydantic's own round trip, and works for
    LlamaIndex's components (its ``model_dump`` adds ``class_name``, which they ignore). The
    adapter refuses unknown arguments, and refused its own ``class_name``: the round trip
    raised. It must give back an adapter that sends what the original sends (read-only
    extra_body and rank_fields included); another component's dump is still refused."""
    from together_rerank_plugins.llama_index import TogetherRerank
    from together_rerank_plugins.testing import LexicalRerankEndpoint

    monkeypatch.setenv("TOGETHER_API_KEY", TEST_KEY)
    endpoint = LexicalRerankEndpoint()
    original = TogetherRerank(
        top_n=2, deadline=1.0, rank_fields=["text"], extra_body={"instruction": "be brief"},
        transport=endpoint,
    )  # fmt: skip
    dumped = original.model_dump()
    for restored in (
        TogetherRerank.model_validate(dumped | {"transport": endpoint}),
        TogetherRerank.model_validate_json(original.model_dump_json()),
    ):
        assert restored.model_dump() == dumped
        assert restored.client.deadline == 1.0
        assert dict(restored.extra_body) == {"instruction": "be brief"}
        with pytest.raises(TypeError):
            restored.extra_body["instruction"] = "changed in place"
    TogetherRerank.model_validate(dumped | {"transport": endpoint}).client.rerank(
        QUERY, [{"text": d} for d in DOCS], rank_fields=["text"]
    )
    assert endpoint.requests[-1]["instruction"] == "be brief"
    with pytest.raises(ValueError, match="unknown argument 'class_name'"):
        TogetherRerank.model_validate(dumped | {"class_name": "SimilarityPostprocessor"})


SECRET = "sk-review-0123456789abcdefSECRET"  # long enough to be recognised anywhere


@pytest.mark.parametrize("adapter", ["llama_index", "langchain"])
@pytest.mark.parametrize(
    "bad",
    [
        {"bogus": 1},  # unknown argument, given before the key
        {"top_n": -1},
        {"key_suffix": "\ufeff"},  # a key file's BOM, through model_validate
        {"key_suffix": "\u00e9"},  # a stray non-ASCII character
    ],
    ids=["unknown", "top_n", "bom", "stray"],
)
def test_model_validate_of_a_bad_configuration_never_quotes_the_key(
    adapter: str, bad: dict[str, Any]
) -> None:
    """``TogetherRerank(...)`` raised a clean RerankConfigError, but pydantic's own entry
    point, ``model_validate`` (a config loader, a parent model with an adapter field),
    wrapped it in a ValidationError whose message quoted the input: the API key (from
    either end of the dict, or in a SecretStr's place when the key itself was refused)."""
    import importlib
    import traceback

    cls = importlib.import_module(f"together_rerank_plugins.{adapter}").TogetherRerank
    key_field = "together_api_key" if adapter == "langchain" else "api_key"
    bad = dict(bad)  # the parameter is shared by both adapters' cases
    key = SECRET + bad.pop("key_suffix", "")
    for data in ({**bad, key_field: key}, {key_field: key, **bad}):
        with pytest.raises(ValueError, match=r"Invalid|API key|top_n") as caught:
            cls.model_validate(data)
        shown = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
        assert "0123456789abcdef" not in shown


# -- the CLI's test-endpoint check is bounded as a whole --------------------------------------
class TricklingServer:
    """A loopback server that answers every connection one header byte at a time, a byte
    every 0.2 s, for ``seconds`` in all, then closes: each read gets a byte well within any
    per-read timeout. Stops by itself."""

    def __init__(self, seconds: float = 8.0) -> None:
        import socket
        import threading

        self.finished = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._seconds = seconds
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import time

        self._listener.settimeout(self._seconds)
        try:
            conn, _ = self._listener.accept()
        except OSError:
            self.finished.set()
            return
        end = time.monotonic() + self._seconds
        try:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\n")
            while time.monotonic() < end:
                conn.sendall(b"X")  # a header name that never ends
                time.sleep(0.2)
        except OSError:
            pass  # the client gave up and closed: fine
        finally:
            conn.close()
            self._listener.close()
            self.finished.set()


def test_the_test_endpoint_check_is_bounded_as_a_whole_against_a_trickling_server() -> None:
    """The CLI and the demo ask a loopback ``base_url`` whether it is the embedded test
    endpoint before the real call. That check had a per-read timeout only (2 s): a local
    gateway that trickles its answer kept it waiting past any bound (here 8 s, the server's
    own limit; without it, forever), before the call's own ``deadline`` even started."""
    from together_rerank_plugins._console import is_test_endpoint

    server = TricklingServer(seconds=8.0)
    assert not is_test_endpoint(server.url, timeout=0.5)
    assert not server.finished.is_set(), "the check waited for the server to stop trickling"
    server.finished.wait(10)


def test_the_test_endpoint_check_waits_no_longer_than_the_user_lets_a_call_wait() -> None:
    """Its own 2 s bound is not one the user chose: with ``--deadline 0.3`` (or a shorter
    ``timeout``) the check before the call is cut to that."""
    from together_rerank_plugins._console import PROBE_TIMEOUT, probe_timeout

    assert probe_timeout(60.0, 0.3) == 0.3
    assert probe_timeout(0.25, None) == 0.25
    assert probe_timeout(60.0, None) == PROBE_TIMEOUT
    assert probe_timeout(None, None) == PROBE_TIMEOUT


def test_a_forked_child_does_not_wait_on_the_parents_lookup_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lookups in flight are shared by host; after ``os.fork()`` the parent's lookup thread
    does not exist in the child, so a child resolving the same host must start its own
    rather than wait, call after call, on one that never finishes."""
    import socket
    import threading

    name = "fork.hung-resolver.test"
    release = threading.Event()
    real = socket.getaddrinfo

    def hung_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return real(host, *args, **kwargs)
        release.wait(20)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", hung_getaddrinfo)
    client = RerankClient(api_key=TEST_KEY, base_url=f"http://{name}:9", max_retries=0)
    try:
        with pytest.raises(trp.RerankTimeoutError):
            client.with_deadline(0.05).rerank(QUERY, DOCS)  # leaves the lookup in flight

        def child() -> str:  # its resolver answers (loopback, port 9: refused)
            socket.getaddrinfo = lambda host, *a, **k: real("127.0.0.1", *a, **k)
            client.with_deadline(2.0).rerank(QUERY, DOCS)
            return "answered"

        outcome = run_in_fork(child)
    finally:
        release.set()
        client.close()
    assert outcome == "RerankConnectionError"  # its own lookup answered; the port refused


def test_a_key_with_bytes_that_are_not_utf8_is_described_as_such(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key file or variable in another encoding (Latin-1, a stray 0xFF) reaches Python as
    a lone surrogate (surrogateescape). It was called "a control character (U+DCFF)": not
    what it is, and the code point gives away the raw byte. Say it is not UTF-8 text."""
    monkeypatch.setenv("TOGETHER_API_KEY", "sk-0123456789ab\udcffcdef")
    with pytest.raises(trp.RerankConfigError) as caught:
        RerankClient()
    message = str(caught.value)
    assert "not UTF-8" in message
    assert "position 15" in message
    assert "TOGETHER_API_KEY" in message
    assert "control character" not in message
    assert "DCFF" not in message


def test_the_test_endpoint_check_sends_and_logs_no_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The check is sent "without the key"; a ``base_url`` written with ``user:password@``
    (a server behind Basic auth) went to httpx as is: the password was sent as Basic auth
    and logged by httpx at INFO in the request line, where the client proper never lets
    it appear (it gives the SDK a URL without credentials)."""
    import logging

    from together_rerank_plugins._console import is_test_endpoint
    from together_rerank_plugins.testing import LexicalRerankEndpoint, serve_loopback

    endpoint = LexicalRerankEndpoint()
    authorizations: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        authorizations.append(request.headers.get("authorization"))
        return endpoint.handle(request)

    password = "pw-0123456789-secret"
    with caplog.at_level(logging.DEBUG), serve_loopback(handler) as url:
        assert is_test_endpoint(url.replace("http://", f"http://gateway-user:{password}@"))
    assert authorizations == [None]
    assert password not in caplog.text
    assert "gateway-user" not in caplog.text


# -- a failover endpoint's own deadline ----------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("primary_deadline", [None, 5.0], ids=["no-call-deadline", "longer"])
def test_a_failover_endpoints_own_deadline_bounds_its_part_of_the_call(
    mode: str, primary_deadline: float | None
) -> None:
    """A failover client built with ``deadline=0.3`` and ``timeout=10``: its part of a call
    must end within 0.3 s (and within what is left of the primary's deadline, when that is
    shorter). It was ignored: the hanging failover was given its whole ``timeout`` (10 s,
    here until the in-process server's attempt bound), a bound the user did not choose."""
    hung = Server(latency=None)
    secondary = backup_client(transport=hung, timeout=10.0, max_retries=0, deadline=0.3)
    primary = fast_failing_primary(secondary, deadline=primary_deadline)
    budgets: list[float] = []
    original = hung._wait

    def record(request: httpx.Request) -> tuple[float, bool]:
        budgets.append(request.extensions["timeout"]["read"])
        return original(request)

    hung._wait = record  # type: ignore[method-assign]
    result = primary.rerank(QUERY, DOCS) if mode == "sync" else (
        asyncio.run(primary.arerank(QUERY, DOCS)))  # fmt: skip
    assert result.fallback
    assert isinstance(result.error, trp.RerankTimeoutError)
    assert len(budgets) == 1
    assert budgets[0] <= 0.3  # the attempt was bounded by the failover's own deadline


def test_a_langchain_key_assigned_by_its_documented_name_is_applied() -> None:
    """LangChain's adapter takes ``api_key=`` (docs/configuration.md; ``together_api_key`` is
    the other name); the LlamaIndex adapter applies ``rerank.api_key = new``. On LangChain's
    that assignment raised pydantic's '"TogetherRerank" object has no field "api_key"', so a
    key rotated in place (or a bad one from a file) took another path than at
    construction. It must be applied, or refused without the value, like the other name."""
    from together_rerank_plugins.langchain import TogetherRerank
    from together_rerank_plugins.testing import LexicalRerankEndpoint

    seen: list[str] = []
    endpoint = LexicalRerankEndpoint()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return endpoint.handle(request)

    rerank = TogetherRerank(api_key=TEST_KEY, transport=httpx.MockTransport(handler))
    rotated = "sk-rotated-0123456789abcdef"
    rerank.api_key = rotated  # type: ignore[assignment]
    rerank.rerank(DOCS, QUERY)
    assert seen == [f"Bearer {rotated}"]
    assert rerank.together_api_key is not None
    assert rerank.together_api_key.get_secret_value() == rotated
    with pytest.raises(trp.RerankConfigError) as caught:
        rerank.api_key = "\ufeff" + SECRET  # type: ignore[assignment]
    assert "0123456789abcdef" not in str(caught.value)
    assert rerank.client._sdk.settings.api_key == rotated  # a refused key changes nothing


def test_a_lookup_thread_that_cannot_start_leaves_no_stale_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under thread exhaustion ``Thread.start`` raises: that call fails, but the next one
    for the host must resolve afresh, not wait on a lookup that never started."""
    import threading

    from together_rerank_plugins import _transport

    real_start = threading.Thread.start
    fail = [True]

    def start(self: threading.Thread) -> None:
        if fail[0] and self.name == "together-rerank-resolve":
            fail[0] = False
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    client = RerankClient(api_key=TEST_KEY, base_url="http://localhost:9", max_retries=0)
    for _ in range(2):
        with pytest.raises(trp.RerankConnectionError) as caught:
            client.with_deadline(2.0).rerank(QUERY, DOCS)
    # the second call resolved localhost and was refused on port 9: not a timeout
    assert not isinstance(caught.value, trp.RerankTimeoutError)
    assert not _transport._LOOKUPS
