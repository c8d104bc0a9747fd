"""Circuit breaker and failover on real sockets (127.0.0.1 only), sync and async, through the
core and both adapters.

The failing primary is :class:`tests.faults.FaultServer` in its own process (a query word
``inject-<kind>`` makes every attempt of that query fail that way, and the server logs what
each attempt got); the healthy secondary is the embedded endpoint behind
:func:`serve_loopback`, with scores on another scale (1 + the lexical score) so that a
ranking mixing the two endpoints would show.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode

from together_rerank_plugins import (
    CircuitBreaker,
    CircuitOpenError,
    RerankClient,
    RerankError,
    ServerError,
)
from together_rerank_plugins.langchain import FALLBACK_KEY, SERVED_BY_KEY
from together_rerank_plugins.langchain import TogetherRerank as LCRerank
from together_rerank_plugins.llama_index import TogetherRerank as LIRerank
from together_rerank_plugins.testing import (
    LexicalRerankEndpoint,
    pointwise_lexical_scores,
    serve_loopback,
)

from .conftest import TEST_KEY
from .faults import FaultServer, force

pytestmark = pytest.mark.loopback

DOCS = ["green pears", "red apples", "red cherries", "yellow bananas", "apples pie"]
SURFACES = ["core", "llama_index", "langchain"]
MODES = ["sync", "async"]

#: one call's outcome: the texts in the order returned, and what the result was marked with
Outcome = tuple[list[str], bool, str | None]


def secondary_scores(query: str, texts: list[str]) -> list[float]:
    return [round(1.0 + s, 6) for s in pointwise_lexical_scores(query, texts)]


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer(rates={})  # faults only where a query asks for one
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def secondary_url() -> Iterator[str]:
    with serve_loopback(LexicalRerankEndpoint(scorer=secondary_scores)) as url:
        yield url


def caller(surface: str, mode: str, **config: Any) -> Callable[[str], Outcome]:
    """A function that reranks DOCS for a query through ``surface`` and reports the outcome.
    Async calls each run on a new event loop (as ``asyncio.run`` per request would)."""
    config = {"api_key": TEST_KEY, "max_retries": 0, **config}
    if surface == "core":
        client = RerankClient(**config)

        def core(query: str) -> Outcome:
            if mode == "sync":
                results = client.rerank(query, DOCS)
            else:
                results = asyncio.run(client.arerank(query, DOCS))
            served = str(results.served_by) if results.failed_over else None
            return [DOCS[r.index] for r in results], results.fallback, served

        return core
    if surface == "llama_index":
        li = LIRerank(top_n=None, **config)
        nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in DOCS]

        def llama_index(query: str) -> Outcome:
            if mode == "sync":
                out = li.postprocess_nodes(nodes, query_str=query)
            else:
                out = asyncio.run(li.apostprocess_nodes(nodes, query_str=query))
            meta = [n.node.metadata for n in out]
            return (
                [n.node.get_content() for n in out],
                all(m.get(FALLBACK_KEY) for m in meta),
                _one({m.get(SERVED_BY_KEY) for m in meta}),
            )

        return llama_index
    lc = LCRerank(top_n=None, **config)
    docs = [Document(page_content=t) for t in DOCS]

    def langchain(query: str) -> Outcome:
        if mode == "sync":
            out = lc.compress_documents(docs, query)
        else:
            out = asyncio.run(lc.acompress_documents(docs, query))
        meta = [d.metadata for d in out]
        return (
            [d.page_content for d in out],
            all(m.get(FALLBACK_KEY) for m in meta),
            _one({m.get(SERVED_BY_KEY) for m in meta}),
        )

    return langchain


def _one(values: set[Any]) -> Any:
    assert len(values) == 1, f"results of one call marked differently: {values}"
    return values.pop()


def secondary_order(query: str) -> list[str]:
    scores = secondary_scores(query, DOCS)
    return [DOCS[i] for i in sorted(range(len(DOCS)), key=lambda i: (-scores[i], i))]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_breaker_stops_calling_a_failing_server_and_fallback_answers(
    surface: str, mode: str, fault_server: FaultServer
) -> None:
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=3600)
    call = caller(
        surface,
        mode,
        base_url=fault_server.base_url,
        circuit_breaker=breaker,
        on_error="fallback",
    )
    query = f"{force('503')} red apples"
    outcomes = [call(query) for _ in range(6)]
    assert outcomes == [(DOCS, True, None)] * 6  # retrieval order, flagged
    assert breaker.state == "open"
    fault_server.stop()
    assert fault_server.attempts_for(query) == ["503", "503"]  # the 4 others sent nothing


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_failover_from_a_hanging_server_to_a_healthy_secondary(
    surface: str, mode: str, fault_server: FaultServer, secondary_url: str
) -> None:
    secondary = RerankClient(
        model="acme/rerank-backup", api_key="secondary-key-0123456789", base_url=secondary_url
    )
    call = caller(
        surface,
        mode,
        base_url=fault_server.base_url,
        timeout=0.3,
        circuit_breaker=CircuitBreaker(failure_threshold=1, recovery_time=3600),
        failover=[secondary],
    )
    query = f"{force('hang')} red apples"
    served = f"acme/rerank-backup @ {secondary_url}"
    outcomes = [call(query) for _ in range(3)]
    assert outcomes == [(secondary_order(query), False, served)] * 3
    fault_server.stop()
    assert fault_server.attempts_for(query) == ["hang"]  # then the breaker skipped it


@pytest.mark.parametrize("mode", MODES)
def test_a_batched_call_failing_midway_is_rescored_whole_on_the_secondary(
    mode: str, secondary_url: str
) -> None:
    good = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    seen: list[str] = []

    def primary_endpoint(request: httpx.Request) -> httpx.Response:
        """Answers every batch but the one holding the last document."""
        body = request.read()
        seen.append("500" if b"tail" in body else "ok")
        if b"tail" in body:
            return httpx.Response(500, json={"error": {"message": "down"}})
        return good.handle(request)

    secondary = RerankClient(api_key=TEST_KEY, base_url=secondary_url)
    query = "red apples"
    docs = [*DOCS, "tail"]  # the last batch fails, after two answered
    with serve_loopback(primary_endpoint) as primary_url:
        client = RerankClient(
            api_key=TEST_KEY,
            base_url=primary_url,
            max_retries=0,
            max_batch_size=2,
            max_concurrency=1,
            failover=[secondary],
        )
        if mode == "sync":
            results = client.rerank(query, docs)
        else:
            results = asyncio.run(client.arerank(query, docs))
    scores = secondary_scores(query, docs)
    assert [(r.index, r.relevance_score) for r in results] == sorted(
        enumerate(scores), key=lambda p: (-p[1], p[0])
    )
    assert results.failed_over
    assert seen == ["ok", "ok", "500"]


@pytest.mark.parametrize("mode", MODES)
def test_the_probe_closes_the_breaker_once_the_server_answers(
    mode: str, fault_server: FaultServer
) -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=30, clock=lambda: now[0])
    client = RerankClient(
        api_key=TEST_KEY, base_url=fault_server.base_url, max_retries=0, circuit_breaker=breaker
    )

    def call(query: str) -> Any:
        if mode == "sync":
            return client.rerank(query, DOCS)
        return asyncio.run(client.arerank(query, DOCS))

    failing, healthy = f"{force('502')} red apples", "red apples"
    with pytest.raises(Exception, match="502"):
        call(failing)
    with pytest.raises(CircuitOpenError):
        call(healthy)  # the server is fine for this query, but the breaker is open
    now[0] = 30.0
    results = call(healthy)  # the probe
    assert DOCS[results[0].index] == "red apples"
    assert not any(math.isnan(r.relevance_score) for r in results)
    assert breaker.state == "closed"
    fault_server.stop()
    assert fault_server.attempts_for(failing) == ["502"]
    assert fault_server.attempts_for(healthy) == ["ok"]


@pytest.mark.parametrize("mode", MODES)
def test_a_batched_call_reports_the_failure_that_happened_first(mode: str) -> None:
    """One batch gets a 503 at once while another hangs until the deadline cuts it: the
    call's error is the 503 on both paths (the sync path raised the batch first in request
    order, the deadline, which hid the server's failure from the caller and, for a failover
    endpoint given less than half the deadline, from its breaker)."""
    release = threading.Event()

    def endpoint(request: httpx.Request) -> httpx.Response:
        if b"first batch" in request.read():
            release.wait(10)  # hangs until the test ends (the deadline cuts the call first)
            return httpx.Response(503, json={"error": {"message": "late"}})
        return httpx.Response(503, json={"error": {"message": "down"}})

    docs = ["first batch a", "first batch b", "second batch a", "second batch b"]
    try:
        with serve_loopback(endpoint) as url:
            client = RerankClient(
                api_key=TEST_KEY,
                base_url=url,
                max_retries=0,
                max_batch_size=2,
                deadline=0.5,
            )
            call = (
                (lambda: client.rerank("q", docs))
                if mode == "sync"
                else (lambda: asyncio.run(client.arerank("q", docs)))
            )
            with pytest.raises(RerankError) as caught:
                call()
    finally:
        release.set()
    assert isinstance(caught.value, ServerError), repr(caught.value)
