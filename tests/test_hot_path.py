"""Where the deadline, breaker, failover and connection pool meet (clones that
close a shared pool, the first call after warm_up, a slow resolver, a 429 that does not fit
in the deadline, a failover's breaker charged for the primary's slowness). Each test failed
on the code before its fix. No test opens a non-loopback socket."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import together_rerank_plugins as trp
from together_rerank_plugins import RerankClient
from together_rerank_plugins.testing import LexicalRerankEndpoint

from .conftest import TEST_KEY, backup_client, fast_failing_primary, recommended_primary

DOCS = ["red apples", "green pears", "red cherries"]
QUERY = "red apples"
EXPECTED = [r.index for r in RerankClient(api_key=TEST_KEY, transport=LexicalRerankEndpoint())
            .rerank(QUERY, DOCS)]  # fmt: skip


# -- a clone that shares the pool must not close it ------------------------------------------
class HeldFirstAnswer:
    """An endpoint whose first request waits until ``release`` is set, then answers 503
    (retried at once: ``retry-after-ms: 1``); later requests get the right ranking. A call
    on the original is thus in flight, between two attempts on its pool, while a clone is
    closed."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.scorer = LexicalRerankEndpoint()
        self.count = 0

    def _first(self, request: httpx.Request) -> httpx.Response | None:
        self.count += 1
        if self.count > 1:
            return None
        self.entered.set()
        return httpx.Response(503, headers={"retry-after-ms": "1"}, json={})

    def handle(self, request: httpx.Request) -> httpx.Response:
        first = self._first(request)
        if first is not None:
            assert self.release.wait(10)
            return first
        return self.scorer.handle_request(request)

    async def ahandle(self, request: httpx.Request) -> httpx.Response:
        first = self._first(request)
        if first is not None:
            assert await asyncio.to_thread(self.release.wait, 10)
            return first
        return await self.scorer.handle_async_request(request)

    def transport(self) -> Any:
        sync, async_ = httpx.MockTransport(self.handle), httpx.MockTransport(self.ahandle)

        class Both(httpx.BaseTransport, httpx.AsyncBaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                return sync.handle_request(request)

            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                return await async_.handle_async_request(request)

        return Both()


def _close_clone_sync(client: RerankClient, how: str) -> None:
    if how == "with_deadline":
        with client.with_deadline(5.0) as clone:
            clone.rerank(QUERY, DOCS)
    else:  # an adapter's call-option copy, closed by whoever took its client
        from together_rerank_plugins.langchain import TogetherRerank

        adapter = TogetherRerank(api_key=TEST_KEY, transport=LexicalRerankEndpoint())
        adapter._client = client  # the adapter whose pool the original's call uses
        adapter.with_options(top_n=1).client.close()
        adapter.with_options(deadline=2.0).client.close()


@pytest.mark.parametrize("how", ["with_deadline", "adapter with_options"])
def test_closing_a_clone_leaves_the_originals_pool_open_for_a_call_in_flight(how: str) -> None:
    server = HeldFirstAnswer()
    client = RerankClient(api_key=TEST_KEY, transport=server.transport(), max_retries=1)
    client.warm_up()
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(_call(client.rerank)))
    worker.start()
    assert server.entered.wait(10)
    _close_clone_sync(client, how)
    server.release.set()
    worker.join(10)
    # the original's call was retried on its own pool and got its ranking
    assert len(outcome) == 1, outcome
    assert [r.index for r in outcome[0]] == EXPECTED, outcome
    assert [r.index for r in client.rerank(QUERY, DOCS)] == EXPECTED
    client.close()


def test_closing_a_clone_leaves_the_originals_pool_open_async() -> None:
    server = HeldFirstAnswer()
    client = RerankClient(api_key=TEST_KEY, transport=server.transport(), max_retries=1)

    async def main() -> Any:
        call = asyncio.ensure_future(_acall(client.arerank))
        assert await asyncio.to_thread(server.entered.wait, 10)
        async with client.with_deadline(5.0) as clone:
            await clone.arerank(QUERY, DOCS)
        server.release.set()
        result = await call
        await client.aclose()
        return result

    result = asyncio.run(main())
    assert [r.index for r in result] == EXPECTED, result


def test_the_original_still_closes_its_pool() -> None:
    client = RerankClient(api_key=TEST_KEY, transport=LexicalRerankEndpoint())
    client.rerank(QUERY, DOCS)
    http = client._sdk._sync._client  # type: ignore[union-attr]
    client.with_deadline(1.0).close()
    assert not http.is_closed
    with client:
        pass
    assert http.is_closed


@pytest.mark.parametrize("adapter", ["langchain", "llama_index"])
def test_an_adapter_keeps_owning_its_pool_after_a_deadline_is_assigned(adapter: str) -> None:
    """Assigning ``deadline`` gives the adapter a client with the new deadline; that one is
    still the pool's owner (closing it closes the pool), unlike a with_options copy's."""
    import importlib

    cls = importlib.import_module(f"together_rerank_plugins.{adapter}").TogetherRerank
    rerank = cls(api_key=TEST_KEY, transport=LexicalRerankEndpoint())
    rerank.client.rerank(QUERY, DOCS)
    http = rerank.client._sdk._sync._client
    copy_ = rerank.with_options(deadline=1.0)
    rerank.deadline = 2.0
    assert rerank.client.deadline == 2.0
    copy_.client.close()
    assert not http.is_closed
    rerank.client.close()
    assert http.is_closed


def _call(fn: Callable[..., Any]) -> Any:
    try:
        return fn(QUERY, DOCS)
    except trp.RerankError as exc:
        return exc


async def _acall(fn: Callable[..., Any]) -> Any:
    try:
        return await fn(QUERY, DOCS)
    except trp.RerankError as exc:
        return exc


# -- warm_up() warms everything the first call would load ------------------------------------
def test_after_warm_up_the_first_call_imports_nothing_more() -> None:
    """The SDK imports ``together.resources`` (about 300 modules, 0.2-0.4 s) on the first
    request, which ``warm_up()`` left to the first call, inside its deadline. After
    ``warm_up()`` the first call (sync or async) must load nothing a later call would not:
    checked in a fresh process by the modules each first call imports."""
    import subprocess
    import sys

    script = """
import asyncio, sys
from together_rerank_plugins import RerankClient
from together_rerank_plugins.testing import LexicalRerankEndpoint
endpoint = LexicalRerankEndpoint()
client = RerankClient(api_key="k", transport=endpoint, deadline=0.8)
client.warm_up()
sent = len(endpoint.requests)
before = set(sys.modules)
client.rerank("red apples", ["red apples", "green pears"])
sync_new = sorted(set(sys.modules) - before)
before = set(sys.modules)
asyncio.run(client.arerank("red apples", ["red apples", "green pears"]))
async_new = sorted(set(sys.modules) - before)
print(json.dumps([sent, len(endpoint.requests), sync_new, async_new]))
"""
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    sent, requests, sync_new, async_new = json.loads(out.stdout)
    assert (sent, requests) == (0, 2)  # warm_up sent nothing; both calls were sent
    assert sync_new == [], f"the first sync call imported {len(sync_new)}: {sync_new[:5]}"
    assert async_new == [], f"the first async call imported {len(async_new)}: {async_new[:5]}"


# -- a 429 keeps its status and Retry-After ----------------------------------------------------
def test_a_429_after_its_retries_carries_the_servers_retry_after() -> None:
    throttled = httpx.MockTransport(
        lambda r: httpx.Response(429, headers={"retry-after-ms": "1500"}, json={})
    )
    client = RerankClient(api_key=TEST_KEY, transport=throttled, max_retries=0)
    with pytest.raises(trp.RateLimitError) as caught:
        client.rerank(QUERY, DOCS)
    assert caught.value.retry_after == 1.5
    assert "1.5 s" in str(caught.value)


# -- a failover endpoint is not charged for the primary's slowness ----------------------------
class Server(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An in-process endpoint that answers after ``latency`` seconds, or never (``None``),
    honouring each attempt's bound as the real sockets do: the client gives every attempt
    ``min(timeout, time left in the deadline)`` (``request.extensions["timeout"]``), and
    an attempt that would take longer ends with a read timeout at that bound."""

    def __init__(self, latency: float | None) -> None:
        self.latency = latency
        self.scorer = LexicalRerankEndpoint()
        self.requests = 0

    def _wait(self, request: httpx.Request) -> tuple[float, bool]:
        self.requests += 1
        budget = request.extensions["timeout"]["read"]
        if self.latency is None or (budget is not None and budget < self.latency):
            return budget, False
        return self.latency, True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import time

        seconds, answers = self._wait(request)
        time.sleep(seconds)
        if not answers:
            raise httpx.ReadTimeout("no answer within the attempt", request=request)
        return self.scorer.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        seconds, answers = self._wait(request)
        await asyncio.sleep(seconds)
        if not answers:
            raise httpx.ReadTimeout("no answer within the attempt", request=request)
        return await self.scorer.handle_async_request(request)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_failover_endpoint_cut_short_by_the_primarys_slowness_keeps_its_breaker_closed(
    mode: str,
) -> None:
    """The settings docs/production.md recommends: a deadline, the primary's timeout at
    half of it, a breaker per endpoint, one failover. The primary hangs; the secondary
    answers at two thirds of the deadline. While the primary is tried first, the
    secondary is left a third of the deadline and is cut short: that is not its failure.
    Once the primary's breaker is open, the secondary has the whole deadline and serves
    every call. (On the old code both breakers opened and every call fell back.)"""
    deadline = 0.6
    primary_breaker = trp.CircuitBreaker(failure_threshold=2, recovery_time=60)
    secondary_breaker = trp.CircuitBreaker(failure_threshold=2, recovery_time=60)
    slow_but_healthy = Server(latency=deadline * 2 / 3)
    secondary = backup_client(transport=slow_but_healthy, circuit_breaker=secondary_breaker)
    primary = recommended_primary(
        deadline, secondary, transport=Server(latency=None), circuit_breaker=primary_breaker
    )

    async def calls() -> list[Any]:
        return [await primary.arerank(QUERY, DOCS) for _ in range(5)]

    results = [primary.rerank(QUERY, DOCS) for _ in range(5)] if mode == "sync" else (
        asyncio.run(calls()))  # fmt: skip
    assert [r.fallback for r in results] == [True, True, False, False, False]
    assert all(r.served_by == secondary.endpoint for r in results[2:])
    assert [[x.index for x in r] for r in results[2:]] == [EXPECTED] * 3
    assert primary_breaker.state == "open"
    assert secondary_breaker.state == "closed"
    assert secondary_breaker.failures == 0
    assert slow_but_healthy.requests >= 5  # it was tried on every call


def test_an_endpoint_that_had_the_whole_deadline_is_still_charged_for_running_it_out() -> None:
    """A hanging primary with ``timeout`` above ``deadline`` still opens its breaker: it
    had the call's whole deadline (kept from the earlier design)."""
    breaker = trp.CircuitBreaker(failure_threshold=2, recovery_time=60)
    client = RerankClient(
        api_key=TEST_KEY,
        transport=Server(latency=None),
        deadline=0.2,
        circuit_breaker=breaker,
        on_error="fallback",
    )
    for _ in range(2):
        assert client.rerank(QUERY, DOCS).fallback
    assert breaker.state == "open"


def test_a_failover_endpoint_that_runs_out_its_own_timeout_is_charged() -> None:
    """Left enough of the deadline for a whole attempt, a hanging secondary times out on its
    own ``timeout``: that counts against it."""
    breaker = trp.CircuitBreaker(failure_threshold=2, recovery_time=60)
    secondary = backup_client(
        transport=Server(latency=None), timeout=0.1, max_retries=0, circuit_breaker=breaker
    )
    primary = fast_failing_primary(secondary, deadline=1.0)
    for _ in range(2):
        assert primary.rerank(QUERY, DOCS).fallback
    assert breaker.state == "open"


# -- a slow resolver is bounded by the deadline and the attempt's timeout ---------------------
SLOW_NAME = "slow-resolver.test"  # never reaches a real resolver: the test answers for it


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    "bound", [{"deadline": 0.5}, {"timeout": 0.5}], ids=["deadline", "timeout"]
)
def test_a_slow_resolver_is_bounded_by_the_deadline_and_the_timeout(
    mode: str, bound: dict[str, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resolver that hangs (``socket.getaddrinfo`` takes no timeout): the call must end
    at its bound while the lookup is still blocked. On the old code the sync call waited
    for the resolver (3 s when first seen; here until the test releases it)."""
    import socket

    release = threading.Event()
    real = socket.getaddrinfo
    asked: list[str] = []

    def slow_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host  # anyio passes bytes
        if name != SLOW_NAME:
            return real(host, *args, **kwargs)
        asked.append(name)
        release.wait(10)  # blocks, releasing the GIL, as a resolver waiting on DNS does
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    watchdog = threading.Timer(5, release.set)  # the old code would wait for this
    watchdog.start()
    client = RerankClient(
        api_key=TEST_KEY, base_url=f"http://{SLOW_NAME}:9", max_retries=0, **bound
    )
    try:
        if mode == "sync":
            result = _call(client.rerank)
            blocked_at_return = not release.is_set()
        else:

            async def main() -> tuple[Any, bool]:
                outcome = await _acall(client.arerank)
                still = not release.is_set()
                release.set()  # asyncio.run waits for its executor's resolver thread
                await client.aclose()
                return outcome, still

            result, blocked_at_return = asyncio.run(main())
    finally:
        release.set()
        watchdog.cancel()
        client.close()
    assert asked == [SLOW_NAME]
    assert blocked_at_return, "the call waited for the resolver, past its bound"
    assert isinstance(result, trp.RerankTimeoutError), result


# -- a deadline shared with other work, nearly spent when the call starts ------------------------
@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_endpoint_given_a_nearly_spent_shared_deadline_is_not_charged(mode: str) -> None:
    """``execute(plan, deadline)`` shares a budget with other work (its docstring). When
    that work left the call 20 ms of a 1 s budget, the endpoint cut short is no more at
    fault than a failover endpoint left less than half the deadline: its breaker must not
    count it (three such calls opened the breaker of a healthy endpoint). Given its whole
    deadline, a hanging endpoint is still charged."""
    import time

    from together_rerank_plugins._deadline import Deadline
    from together_rerank_plugins.testing import serve_loopback

    release = threading.Event()

    def hanging(request: httpx.Request) -> httpx.Response:
        release.wait(10)
        return httpx.Response(503)

    breaker = trp.CircuitBreaker(failure_threshold=3, recovery_time=30)
    try:
        with serve_loopback(hanging) as url:
            client = RerankClient(
                api_key=TEST_KEY,
                base_url=url,
                max_retries=0,
                deadline=0.2,
                circuit_breaker=breaker,
                on_error="fallback",
            )

            def call(deadline: Deadline | None) -> trp.RerankResults:
                plan = client.plan("q", ["a", "b"])
                if mode == "sync":
                    return client.execute(plan, deadline)
                return asyncio.run(client.aexecute(plan, deadline))

            for _ in range(3):
                spent = Deadline(1.0, time.monotonic() + 0.02)  # 0.98 s used elsewhere
                assert call(spent).fallback
            assert (breaker.state, breaker.failures) == ("closed", 0)
            assert call(None).fallback  # its own whole deadline (0.2 s): charged
            assert breaker.failures == 1
    finally:
        release.set()
