"""The circuit breaker: its state machine (an injected clock, no sleeping), and its wiring
into RerankClient and both adapters through in-process transports (no sockets; the real
socket tests are in test_resilience_loopback.py)."""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import pickle
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode

import together_rerank_plugins as trp
from together_rerank_plugins import CircuitBreaker, CircuitOpenError, RerankClient
from together_rerank_plugins.langchain import TogetherRerank as LCRerank
from together_rerank_plugins.llama_index import TogetherRerank as LIRerank
from together_rerank_plugins.testing import LexicalRerankEndpoint

from .conftest import TEST_KEY

DOCS = ["red apples", "green pears", "yellow bananas"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Switch(httpx.MockTransport):
    """An endpoint that answers with ``status`` (or correctly, when None); counts requests."""

    def __init__(self, status: int | None = 503) -> None:
        self.status = status
        self.requests = 0
        self.ok = LexicalRerankEndpoint()
        super().__init__(self.answer)

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.status is None:
            return self.ok.handle(request)
        if self.status == 0:
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(self.status, json={"error": {"message": f"status {self.status}"}})


def client_for(transport: Switch, breaker: CircuitBreaker, **kw: Any) -> RerankClient:
    return RerankClient(
        api_key=TEST_KEY, max_retries=0, transport=transport, circuit_breaker=breaker, **kw
    )


def fail(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        breaker.record(breaker.admit(), "failure")


# -- the state machine -----------------------------------------------------------------------
def test_opens_after_threshold_consecutive_failures_and_a_success_resets_the_count() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, recovery_time=10, clock=clock)
    fail(breaker, 2)
    breaker.record(breaker.admit(), "success")
    fail(breaker, 2)
    assert breaker.state == "closed"
    fail(breaker)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError, match=r"probes in 10\.0 s"):
        breaker.admit("the endpoint")


def test_neutral_outcomes_neither_count_nor_reset() -> None:
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=10, clock=Clock())
    fail(breaker)
    breaker.record(breaker.admit(), "neutral")
    assert (breaker.state, breaker.failures) == ("closed", 1)
    fail(breaker)
    assert breaker.state == "open"


def test_half_open_lets_exactly_one_probe_through_and_its_success_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=30, clock=clock)
    fail(breaker)
    clock.now += 29.9
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.admit() is True  # the probe
    for _ in range(3):  # concurrent calls during the probe fail fast
        with pytest.raises(CircuitOpenError, match="probe call is in flight"):
            breaker.admit()
    breaker.record(True, "success")
    assert (breaker.state, breaker.failures) == ("closed", 0)
    assert breaker.admit() is False


def test_a_failed_probe_reopens_for_another_recovery_time() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=5, clock=clock)
    fail(breaker)
    clock.now += 5
    probe = breaker.admit()
    clock.now += 2  # the probe took 2 s to fail
    breaker.record(probe, "failure")
    assert breaker.state == "open"
    clock.now += 4.9
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    clock.now += 0.1
    assert breaker.admit() is True


def test_a_neutral_probe_frees_the_slot_for_the_next_call_to_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=1, clock=clock)
    fail(breaker)
    clock.now += 1
    breaker.record(breaker.admit(), "neutral")
    assert breaker.state == "half_open"
    assert breaker.admit() is True


def test_late_outcomes_of_calls_admitted_before_it_opened_change_nothing() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=10, clock=clock)
    early = breaker.admit()  # admitted while closed, still in flight
    fail(breaker)
    breaker.record(early, "success")  # its late success does not close the open breaker
    assert breaker.state == "open"
    clock.now += 10
    probe = breaker.admit()
    breaker.record(early, "success")  # nor decide the probe's outcome
    assert breaker.state == "half_open"
    breaker.record(probe, "failure")
    assert breaker.state == "open"


def test_state_changes_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="together_rerank_plugins")
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=1, clock=clock)
    fail(breaker, 2)
    for _ in range(5):
        with pytest.raises(CircuitOpenError):
            breaker.admit()
    clock.now += 1
    probe = breaker.admit()
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    breaker.record(probe, "failure")
    clock.now += 1
    breaker.record(breaker.admit(), "success")
    logged = [(r.levelname, r.getMessage().split(":")[0].split(";")[0]) for r in caplog.records]
    assert logged == [
        (
            "WARNING",
            "Circuit breaker opened after 2 consecutive failed calls to the rerank endpoint",
        ),
        ("INFO", "Circuit breaker half-open"),
        ("WARNING", "Circuit breaker reopened"),
        ("INFO", "Circuit breaker half-open"),
        ("INFO", "Circuit breaker closed"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": 2.5}, "failure_threshold"),
        ({"failure_threshold": True}, "failure_threshold"),
        ({"recovery_time": -1}, "recovery_time"),
        ({"recovery_time": math.inf}, "recovery_time"),
        ({"clock": 3}, "clock"),
    ],
)
def test_bad_settings_raise_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(trp.RerankConfigError, match=match):
        CircuitBreaker(**kwargs)


def test_threads_hammering_one_breaker_lose_no_count() -> None:
    """Real threads on one breaker. On CPython the GIL makes a lost update rare even
    without the lock, so this is a stress check; the next-but-one test is the one that
    fails when the lock is gone."""
    breaker = CircuitBreaker(failure_threshold=10**9, recovery_time=1)
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        fail(breaker, 500)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert breaker.failures == 4000


def test_concurrent_half_open_admits_give_exactly_one_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=1, clock=clock)
    fail(breaker)
    clock.now += 1
    start = threading.Barrier(16)
    probes: list[bool] = []

    def work() -> None:
        start.wait()
        try:
            probes.append(breaker.admit())
        except CircuitOpenError:
            probes.append(False)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(probes) == [False] * 15 + [True]


class _WatchedLock:
    """A lock that knows whether it is held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.held = False

    def __enter__(self) -> None:
        self._lock.acquire()
        self.held = True

    def __exit__(self, *exc: object) -> None:
        self.held = False
        self._lock.release()


class _WatchedBreaker(CircuitBreaker):
    """Records, for each change of the breaker's state, whether its lock was held."""

    STATE = frozenset({"_state", "_failures", "_opened_at", "_probing"})

    def __setattr__(self, name: str, value: Any) -> None:
        lock = self.__dict__.get("_lock")
        if name in self.STATE and isinstance(lock, _WatchedLock):
            self.__dict__.setdefault("writes", []).append((name, lock.held))
        super().__setattr__(name, value)


def test_every_state_change_happens_under_the_breakers_lock() -> None:
    """What the threaded tests above cannot show on CPython: admit, record and reset
    change the shared state only while holding the lock (thread- and task-safe)."""
    clock = Clock()
    breaker = _WatchedBreaker(failure_threshold=2, recovery_time=1, clock=clock)
    breaker._lock = _WatchedLock()  # type: ignore[assignment]
    fail(breaker, 2)  # closed -> open
    clock.now += 1
    breaker.record(breaker.admit(), "failure")  # half-open probe fails: reopens
    clock.now += 1
    breaker.record(breaker.admit(), "success")  # the next probe closes it
    fail(breaker, 1)
    breaker.reset()
    writes = breaker.__dict__["writes"]
    assert {name for name, _ in writes} == _WatchedBreaker.STATE
    assert [name for name, held in writes if not held] == []


def test_copies_share_the_breaker_and_pickles_start_closed_with_the_settings() -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=7)
    fail(breaker)
    assert copy.copy(breaker) is breaker
    assert copy.deepcopy({"b": breaker})["b"] is breaker
    again = pickle.loads(pickle.dumps(breaker))
    assert (again.failure_threshold, again.recovery_time, again.state) == (1, 7.0, "closed")
    assert repr(breaker) == "CircuitBreaker(failure_threshold=1, recovery_time=7.0, state='open')"


# -- wiring into the client (in-process transports) -----------------------------------------
async def test_open_breaker_sends_nothing_and_fallback_answers_at_once_sync_and_async() -> None:
    down = Switch(503)
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=60)
    client = client_for(down, breaker, on_error="fallback")
    client.rerank("q", DOCS)
    await client.arerank("q", DOCS)
    assert (down.requests, breaker.state) == (2, "open")
    for results in (client.rerank("q", DOCS, top_n=2), await client.arerank("q", DOCS, top_n=2)):
        assert results.fallback
        assert isinstance(results.error, CircuitOpenError)
        assert isinstance(results.error, trp.RerankConnectionError)
        assert [r.index for r in results] == [0, 1]
    assert down.requests == 2  # nothing sent while open


@pytest.mark.parametrize("status", [503, 429, 0])
def test_covered_failures_count(status: int) -> None:
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=60)
    client = client_for(Switch(status), breaker, timeout=1)
    for _ in range(2):
        with pytest.raises(trp.RerankError):
            client.rerank("q", DOCS)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        client.rerank("q", DOCS)


def test_malformed_answers_count() -> None:
    garbage = httpx.MockTransport(lambda r: httpx.Response(200, content=b'{"results": [{"ind'))
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=60)
    client = RerankClient(api_key=TEST_KEY, transport=garbage, circuit_breaker=breaker)
    with pytest.raises(trp.MalformedResponseError):
        client.rerank("q", DOCS)
    assert breaker.state == "open"


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 422])
def test_errors_that_need_a_fix_do_not_count(status: int) -> None:
    endpoint = Switch(status)
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=60)
    client = client_for(endpoint, breaker, on_error="fallback")
    for _ in range(3):
        with pytest.raises(trp.APIStatusError):
            client.rerank("q", DOCS)
    assert (breaker.state, endpoint.requests) == ("closed", 3)


def test_bad_input_and_calls_that_send_nothing_leave_the_breaker_alone() -> None:
    down = Switch(503)
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=60)
    client = client_for(down, breaker, cache=True, long_documents="error", max_tokens_per_doc=64)
    with pytest.raises(trp.RerankInputError):
        client.rerank("q", ["word " * 500])
    assert client.rerank("q", []) == []
    assert (breaker.state, down.requests) == ("closed", 0)


def test_an_open_breaker_still_answers_from_the_cache() -> None:
    endpoint = Switch(None)
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=60)
    client = client_for(endpoint, breaker, cache=True)
    first = client.rerank("red apples", DOCS)
    endpoint.status = 503
    with pytest.raises(trp.ServerError):
        client.rerank("other query", DOCS)
    assert breaker.state == "open"
    again = client.rerank("red apples", DOCS)  # every score cached: nothing to send
    assert list(again) == list(first)
    assert again.cache_hits == 3


def test_probe_after_recovery_closes_the_breaker_when_the_endpoint_is_back() -> None:
    clock = Clock()
    endpoint = Switch(503)
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=30, clock=clock)
    client = client_for(endpoint, breaker)
    with pytest.raises(trp.ServerError):
        client.rerank("red apples", DOCS)
    endpoint.status = None
    with pytest.raises(CircuitOpenError):
        client.rerank("red apples", DOCS)
    clock.now += 30
    assert client.rerank("red apples", DOCS)[0].index == 0
    assert (breaker.state, endpoint.requests) == ("closed", 2)


async def test_a_cancelled_probe_frees_the_slot() -> None:
    clock = Clock()
    entered = asyncio.Event()

    async def stall(request: httpx.Request) -> httpx.Response:
        entered.set()
        await asyncio.Event().wait()  # never answers; the task is cancelled
        raise AssertionError("unreachable")

    breaker = CircuitBreaker(failure_threshold=1, recovery_time=1, clock=clock)
    fail(breaker)
    clock.now += 1
    client = RerankClient(
        api_key=TEST_KEY, transport=httpx.MockTransport(stall), circuit_breaker=breaker
    )
    task = asyncio.ensure_future(client.arerank("q", DOCS))
    await entered.wait()
    with pytest.raises(CircuitOpenError, match="in flight"):
        await client.arerank("q", DOCS)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.admit() is True  # the next call probes


def test_one_breaker_shared_by_clients_and_event_loops() -> None:
    down = Switch(503)
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=60)
    a = client_for(down, breaker)
    b = client_for(down, breaker, on_error="fallback")
    with pytest.raises(trp.ServerError):
        a.rerank("q", DOCS)
    with pytest.raises(trp.ServerError):
        asyncio.run(a.arerank("q", DOCS))  # another event loop
    assert breaker.state == "open"
    assert asyncio.run(b.arerank("q", DOCS)).fallback
    assert down.requests == 2


# -- adapters ---------------------------------------------------------------------------------
def _li_call(rerank: Any) -> Callable[[], Any]:
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in DOCS]
    return lambda: rerank.postprocess_nodes(nodes, query_str="red apples")


def _lc_call(rerank: Any) -> Callable[[], Any]:
    docs = [Document(page_content=t) for t in DOCS]
    return lambda: rerank.compress_documents(docs, "red apples")


@pytest.mark.parametrize(("cls", "call"), [(LIRerank, _li_call), (LCRerank, _lc_call)])
def test_adapters_share_one_breaker_with_their_copies_and_the_core(
    cls: type, call: Callable[[Any], Callable[[], Any]]
) -> None:
    down = Switch(503)
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=60)
    rerank = cls(
        api_key=TEST_KEY,
        max_retries=0,
        transport=down,
        circuit_breaker=breaker,
        on_error="fallback",
    )
    assert rerank.client.circuit_breaker is breaker
    call(rerank)()
    clone = copy.deepcopy(rerank)
    assert clone.circuit_breaker is breaker
    assert clone.client.circuit_breaker is breaker
    call(rerank.with_options(top_n=2))()
    assert breaker.state == "open"
    call(rerank.with_options(max_concurrency=2))()  # a new client, the same breaker
    call(clone)()
    client_for(down, breaker, on_error="fallback").rerank("q", DOCS)
    assert down.requests == 2
    assert "circuit_breaker" not in rerank.model_dump()
    assert "breaker" not in repr(rerank).lower()


@pytest.mark.parametrize("cls", [LIRerank, LCRerank])
def test_pickling_an_adapter_leaves_out_its_breaker_and_failover(
    cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", TEST_KEY)
    secondary = RerankClient(api_key="secondary-key-0123456789", transport=LexicalRerankEndpoint())
    rerank = cls(api_key=TEST_KEY, circuit_breaker=CircuitBreaker(), failover=[secondary], top_n=2)
    blob = pickle.dumps(rerank)
    assert b"secondary-key" not in blob
    assert b"_lock" not in blob
    again = pickle.loads(blob)
    assert (again.circuit_breaker, tuple(again.failover), again.top_n) == (None, (), 2)


@pytest.mark.parametrize("cls", [LIRerank, LCRerank])
def test_adapters_refuse_a_breaker_of_the_wrong_type(cls: type) -> None:
    with pytest.raises(trp.RerankConfigError, match="CircuitBreaker"):
        cls(api_key=TEST_KEY, circuit_breaker=object())


def test_serialized_adapters_hold_neither_breaker_nor_failover_clients() -> None:
    from langchain_core.load import dumps

    secondary = RerankClient(api_key="secondary-key-0123456789", transport=LexicalRerankEndpoint())
    extras: dict[str, Any] = {"circuit_breaker": CircuitBreaker(), "failover": [secondary]}
    lc_text = dumps(LCRerank(api_key=TEST_KEY, **extras))
    li_dict = LIRerank(api_key=TEST_KEY, **extras).to_dict()
    for text in (lc_text, repr(li_dict)):
        assert "secondary" not in text
        assert "breaker" not in text
        assert "failover" not in text


def test_reset_closes_an_open_breaker(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="together_rerank_plugins")
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=3600, clock=Clock())
    fail(breaker)
    breaker.reset()
    assert (breaker.state, breaker.failures, breaker.admit()) == ("closed", 0, False)
    assert caplog.records[-1].getMessage() == "Circuit breaker closed by reset()"


@pytest.mark.parametrize(
    ("base_url", "shown"),
    [
        ("https://api.together.ai", "https://api.together.ai"),
        ("http://user:secret@10.0.0.5:8000/prefix", "http://10.0.0.5:8000/prefix"),
        ("http://token@host", "http://host"),
    ],
)
def test_endpoints_name_model_and_url_without_credentials(base_url: str, shown: str) -> None:
    endpoint = trp.Endpoint.of("acme/rerank", base_url)
    assert endpoint == trp.Endpoint("acme/rerank", shown)
    assert str(endpoint) == f"acme/rerank @ {shown}"
    client = RerankClient(api_key=TEST_KEY, model="acme/rerank", base_url=base_url)
    assert client.endpoint == endpoint
