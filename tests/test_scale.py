"""Speed and scale in the core: batching, concurrency, dedupe, score cache, results.

No socket is opened: every client gets ``transport=`` (the embedded endpoint, or an
``httpx.MockTransport`` around a handler). Nothing is timed: the tests count requests,
documents, handler calls in flight and threads. Where requests must be shown to be in flight
together, the handler blocks on a rendezvous (a ``threading.Barrier`` or an asyncio
equivalent) whose timeout only guards against a hang.

The stock lexical scorer weights words by their IDF *within one request*, so its scores
depend on the other documents of the request (a listwise scorer, for which merging batches is
not sound). Tests that compare batched with unbatched rankings use :func:`pointwise_scores`,
which, like LlamaRank, scores each (query, document) pair on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest

import together_rerank_plugins as trp
from together_rerank_plugins import (
    InMemoryScoreStore,
    RerankClient,
    RerankResult,
    RerankResults,
    Usage,
)
from together_rerank_plugins.testing import LexicalRerankEndpoint

from .conftest import TEST_KEY

# -- helpers (also used by test_scale_adapters.py) ----------------------------------------

RENDEZVOUS_TIMEOUT = 10.0  # seconds; only a guard against a hang, never an assertion
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def unit_hash(*parts: str) -> float:
    """A deterministic number in [0, 1) for ``parts``."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def pointwise_score(query: str, text: str) -> float:
    """Share of the query's words in ``text``, plus a per-pair tie-breaker: depends only on
    (query, text), so scores from different requests compare, as LlamaRank's do."""
    q = set(words(query))
    overlap = len(q & set(words(text))) / len(q) if q else 0.0
    return 0.9 * overlap + 0.1 * unit_hash(query, text)


def pointwise_scores(query: str, texts: list[str]) -> list[float]:
    return [pointwise_score(query, t) for t in texts]


def pointwise_endpoint() -> LexicalRerankEndpoint:
    """The embedded endpoint with a pointwise scorer; ``.requests`` records each body."""
    return LexicalRerankEndpoint(scorer=pointwise_scores)


def expected_ranking(
    query: str,
    texts: Sequence[str],
    top_n: int | None = None,
    score_threshold: float | None = None,
) -> list[RerankResult]:
    """What one exact ranking of every first occurrence gives: sort, top_n, then threshold."""
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(t, i)
    ranked = sorted(
        (RerankResult(i, pointwise_score(query, t)) for t, i in first.items()),
        key=lambda r: (-r.relevance_score, r.index),
    )
    if top_n is not None:
        ranked = ranked[:top_n]
    if score_threshold is not None:
        ranked = [r for r in ranked if r.relevance_score >= score_threshold]
    return ranked


def endpoint_tokens(query: str, texts: Sequence[str]) -> int:
    """The ``usage.prompt_tokens`` the embedded endpoint reports for ``texts``."""
    return sum(len(words(query)) + len(words(t)) + 2 for t in texts)


def sent_documents(endpoint: LexicalRerankEndpoint) -> list[Any]:
    return [d for body in endpoint.requests for d in body["documents"]]


class AsyncRendezvous:
    """A reusable asyncio barrier: ``wait()`` returns once ``parties`` tasks are waiting."""

    def __init__(self, parties: int, timeout: float = RENDEZVOUS_TIMEOUT) -> None:
        self.parties = parties
        self.timeout = timeout
        self.arrived = 0
        self.event = asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        event = self.event
        if self.arrived == self.parties:
            self.arrived = 0
            self.event = asyncio.Event()
            event.set()
        await asyncio.wait_for(event.wait(), self.timeout)


class InFlight:
    """Wraps a handler; records how many calls are active at once and on which threads.

    With ``rendezvous=k``, each call waits until ``k`` calls are in the handler together (a
    ``threading.Barrier`` on the sync path, :class:`AsyncRendezvous` on the async one): the
    call only proceeds if ``k`` requests really are in flight at once.
    """

    def __init__(
        self, inner: Callable[[httpx.Request], httpx.Response], rendezvous: int = 0
    ) -> None:
        self.inner = inner
        self.active = 0
        self.max_active = 0
        self.threads: list[int] = []
        self.first_docs: list[Any] = []
        self._lock = threading.Lock()
        self._barrier = (
            threading.Barrier(rendezvous, timeout=RENDEZVOUS_TIMEOUT) if rendezvous else None
        )
        self._arendezvous = AsyncRendezvous(rendezvous) if rendezvous else None

    def _enter(self, request: httpx.Request) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.threads.append(threading.get_ident())
            self.first_docs.append(json.loads(request.content)["documents"][0])

    def _exit(self) -> None:
        with self._lock:
            self.active -= 1

    def sync(self, request: httpx.Request) -> httpx.Response:
        self._enter(request)
        try:
            if self._barrier is not None:
                self._barrier.wait()
            return self.inner(request)
        finally:
            self._exit()

    async def aio(self, request: httpx.Request) -> httpx.Response:
        self._enter(request)
        try:
            if self._arendezvous is not None:
                await self._arendezvous.wait()
            return self.inner(request)
        finally:
            self._exit()

    def transport(self, mode: str) -> httpx.MockTransport:
        return httpx.MockTransport(self.sync if mode == "sync" else self.aio)


def make(transport: Any, **kwargs: Any) -> RerankClient:
    kwargs.setdefault("api_key", TEST_KEY)
    kwargs.setdefault("max_retries", 0)
    return RerankClient(transport=transport, **kwargs)


async def call(client: RerankClient, mode: str, query: str, docs: Any, **kw: Any) -> RerankResults:
    """One rerank through the sync or the async path."""
    if mode == "sync":
        return client.rerank(query, docs, **kw)
    return await client.arerank(query, docs, **kw)


MODES = ["sync", "async"]

TOPICS = ["cats", "dogs", "rivers", "bridges", "stocks", "violins", "comets", "tulips"]


def corpus(n: int) -> list[str]:
    """``n`` distinct passages "doc-0042 about X and Y ..." (numbered: batch order shows)."""
    return [
        f"doc-{i:04d} about {TOPICS[i % 8]} and {TOPICS[(i * 3) % 8]} number {i % 13}"
        for i in range(n)
    ]


def doc_number(doc: str) -> int:
    return int(doc[4:8])


QUERY = "cats and rivers"
DOCS_1000 = corpus(1000)


# -- 1. batching ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [7, 100, 128, 333, 999, 1000])
async def test_batches_split_and_merge_into_the_single_request_ranking(
    size: int, mode: str
) -> None:
    endpoint = pointwise_endpoint()
    client = make(endpoint, max_batch_size=size)
    results = await call(client, mode, QUERY, DOCS_1000, top_n=None)

    assert len(endpoint.requests) == math.ceil(1000 / size) == results.requests
    assert all(len(b["documents"]) <= size for b in endpoint.requests)
    assert sorted(sent_documents(endpoint)) == DOCS_1000  # each document sent exactly once
    assert results.documents_sent == 1000

    single_endpoint = pointwise_endpoint()
    single = make(single_endpoint, max_batch_size=1000).rerank(QUERY, DOCS_1000, top_n=None)
    assert len(single_endpoint.requests) == 1
    assert results == single == expected_ranking(QUERY, DOCS_1000)


@pytest.mark.parametrize("mode", MODES)
async def test_batch_size_1_sends_one_request_per_document(mode: str) -> None:
    endpoint = pointwise_endpoint()
    results = await call(make(endpoint, max_batch_size=1), mode, QUERY, DOCS_1000[:12], top_n=4)
    assert [len(b["documents"]) for b in endpoint.requests] == [1] * 12
    assert all("top_n" not in b for b in endpoint.requests)
    assert results == expected_ranking(QUERY, DOCS_1000[:12], top_n=4)


@pytest.mark.parametrize("mode", MODES)
async def test_async_and_sync_batching_agree(mode: str) -> None:
    endpoint = pointwise_endpoint()
    client = make(endpoint, max_batch_size=64, max_concurrency=4)
    results = await call(client, mode, QUERY, DOCS_1000, top_n=None)
    assert results.requests == len(endpoint.requests) == 16
    assert results == expected_ranking(QUERY, DOCS_1000)


def test_default_batch_size_is_the_models_cap() -> None:
    assert make(LexicalRerankEndpoint()).max_batch_size == 1024
    endpoint = pointwise_endpoint()
    results = make(endpoint).rerank(QUERY, corpus(2100), top_n=3)
    assert sorted(len(b["documents"]) for b in endpoint.requests) == [52, 1024, 1024]
    assert results == expected_ranking(QUERY, corpus(2100), top_n=3)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("top_n", [1, 10, 99, 150, 1000])
async def test_top_n_is_exact_after_merging(mode: str, top_n: int) -> None:
    endpoint = pointwise_endpoint()
    client = make(endpoint, max_batch_size=100, max_concurrency=3)
    results = await call(client, mode, QUERY, DOCS_1000, top_n=top_n)
    assert results == expected_ranking(QUERY, DOCS_1000, top_n=top_n)
    for body in endpoint.requests:  # a per-batch top_n never exceeds the batch
        assert body.get("top_n", 0) <= len(body["documents"])
        if top_n < 100:
            assert body["top_n"] == top_n  # fewer results to send back and to check
        else:
            assert "top_n" not in body


def test_per_batch_top_n_is_left_out_for_a_short_last_batch() -> None:
    endpoint = pointwise_endpoint()
    results = make(endpoint, max_batch_size=300).rerank(QUERY, DOCS_1000, top_n=150)
    assert sorted((len(b["documents"]), b.get("top_n", 0)) for b in endpoint.requests) == [
        (100, 0),  # 150 of 100 documents: not sent
        (300, 150),
        (300, 150),
        (300, 150),
    ]
    assert results == expected_ranking(QUERY, DOCS_1000, top_n=150)


@pytest.mark.parametrize("mode", MODES)
async def test_score_threshold_applies_after_merging_and_top_n(mode: str) -> None:
    full = expected_ranking(QUERY, DOCS_1000)
    threshold = full[6].relevance_score  # 7 documents reach it, over several batches
    assert len({doc_number(DOCS_1000[r.index]) // 100 for r in full[:7]}) > 1
    client = make(pointwise_endpoint(), max_batch_size=100)

    results = await call(client, mode, QUERY, DOCS_1000, top_n=None, score_threshold=threshold)
    assert results == full[:7]
    cut = await call(client, mode, QUERY, DOCS_1000, top_n=4, score_threshold=threshold)
    assert cut == full[:4]  # top_n first, then the threshold
    none = await call(client, mode, QUERY, DOCS_1000, top_n=5, score_threshold=1.0)
    assert none == []


@pytest.mark.parametrize("concurrency", [2, 5])
def test_max_concurrency_bounds_sync_requests_in_flight(concurrency: int) -> None:
    flight = InFlight(pointwise_endpoint().handle, rendezvous=concurrency)
    client = make(flight.transport("sync"), max_batch_size=100, max_concurrency=concurrency)
    results = client.rerank(QUERY, DOCS_1000, top_n=10)

    assert results == expected_ranking(QUERY, DOCS_1000, top_n=10)
    assert len(flight.threads) == 10
    assert flight.max_active == concurrency  # reached (rendezvous), never exceeded
    workers = set(flight.threads)
    assert threading.get_ident() not in workers  # a thread pool sends them
    assert len(workers) <= concurrency


@pytest.mark.parametrize("concurrency", [2, 5, 10])
async def test_max_concurrency_bounds_async_requests_in_flight(concurrency: int) -> None:
    flight = InFlight(pointwise_endpoint().handle, rendezvous=concurrency)
    client = make(flight.transport("async"), max_batch_size=100, max_concurrency=concurrency)
    results = await client.arerank(QUERY, DOCS_1000, top_n=10)

    assert results == expected_ranking(QUERY, DOCS_1000, top_n=10)
    assert len(flight.threads) == 10
    assert flight.max_active == concurrency
    assert set(flight.threads) == {threading.get_ident()}  # all on the loop's thread
    await client.aclose()


@pytest.mark.parametrize("mode", MODES)
async def test_max_concurrency_1_is_sequential(mode: str) -> None:
    flight = InFlight(pointwise_endpoint().handle)
    client = make(flight.transport(mode), max_batch_size=100, max_concurrency=1)
    results = await call(client, mode, QUERY, DOCS_1000, top_n=3)

    assert results == expected_ranking(QUERY, DOCS_1000, top_n=3)
    assert flight.max_active == 1
    assert [doc_number(d) for d in flight.first_docs] == list(range(0, 1000, 100))
    assert set(flight.threads) == {threading.get_ident()}  # no thread pool either


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "8"])
@pytest.mark.parametrize("name", ["max_batch_size", "max_concurrency"])
def test_bad_batch_options_are_config_errors(name: str, value: Any) -> None:
    with pytest.raises(trp.RerankConfigError, match=name):
        make(LexicalRerankEndpoint(), **{name: value})


def _bad_request() -> httpx.Response:
    return httpx.Response(400, json={"error": {"message": "batch rejected", "type": "x"}})


def test_sync_failure_raises_and_starts_no_later_batch_sequentially() -> None:
    started: list[int] = []
    endpoint = pointwise_endpoint()

    def handler(request: httpx.Request) -> httpx.Response:
        batch = doc_number(json.loads(request.read())["documents"][0]) // 100
        started.append(batch)
        return _bad_request() if batch == 3 else endpoint.handle(request)

    client = make(httpx.MockTransport(handler), max_batch_size=100, max_concurrency=1)
    with pytest.raises(trp.BadRequestError, match="batch rejected"):
        client.rerank(QUERY, DOCS_1000)
    assert started == [0, 1, 2, 3]


def test_sync_failure_starts_no_new_batch_while_others_are_in_flight() -> None:
    """Batch 0 is slow and batch 1 fails: the other eight batches must not be sent."""
    started: list[int] = []
    lock = threading.Lock()
    failed = threading.Event()
    endpoint = pointwise_endpoint()

    def handler(request: httpx.Request) -> httpx.Response:
        batch = doc_number(json.loads(request.read())["documents"][0]) // 100
        with lock:
            started.append(batch)
        if batch == 1:
            return _bad_request()
        if batch == 0:  # still in flight when batch 1 fails
            assert failed.wait(RENDEZVOUS_TIMEOUT)
        return endpoint.handle(request)

    client = make(httpx.MockTransport(handler), max_batch_size=100, max_concurrency=2)
    send = client._sdk.send

    def send_and_signal(kwargs: dict[str, Any], *deadline: Any) -> Any:
        try:
            return send(kwargs, *deadline)
        except trp.RerankError:
            failed.set()  # release batch 0 only once the failure has been raised
            raise

    client._sdk.send = send_and_signal  # type: ignore[method-assign]
    with pytest.raises(trp.BadRequestError, match="batch rejected"):
        client.rerank(QUERY, DOCS_1000)
    # 0 and 1 were in flight; one more may start in the instant before the failure is known
    assert set(started) <= {0, 1, 2}, sorted(started)


def test_sync_failure_raises_the_typed_error_and_leaves_no_thread_behind() -> None:
    endpoint = pointwise_endpoint()

    def handler(request: httpx.Request) -> httpx.Response:
        batch = doc_number(json.loads(request.read())["documents"][0]) // 100
        return _bad_request() if batch == 5 else endpoint.handle(request)

    threads_before = set(threading.enumerate())
    client = make(httpx.MockTransport(handler), max_batch_size=100, max_concurrency=4)
    with pytest.raises(trp.BadRequestError, match="batch rejected") as info:
        client.rerank(QUERY, DOCS_1000)
    assert info.value.status_code == 400
    assert set(threading.enumerate()) == threads_before  # the pool's threads are joined


async def test_async_failure_sends_no_new_batch_and_cancels_the_rest() -> None:
    started: list[int] = []
    cancelled: list[int] = []
    endpoint = pointwise_endpoint()

    async def handler(request: httpx.Request) -> httpx.Response:
        batch = doc_number(json.loads(request.content)["documents"][0]) // 100
        started.append(batch)
        if batch == 1:
            return _bad_request()
        if batch == 0:  # in flight when batch 1 fails; only cancellation ends it
            try:
                await asyncio.wait_for(asyncio.Event().wait(), RENDEZVOUS_TIMEOUT)
            except asyncio.CancelledError:
                cancelled.append(batch)
                raise
        return endpoint.handle(request)

    before = asyncio.all_tasks()
    client = make(httpx.MockTransport(handler), max_batch_size=100, max_concurrency=2)
    with pytest.raises(trp.BadRequestError, match="batch rejected"):
        await client.arerank(QUERY, DOCS_1000)
    assert cancelled == [0]
    assert asyncio.all_tasks() == before  # no task left behind
    assert sorted(started) == [0, 1]
    await client.aclose()


async def test_async_failure_cancels_batches_in_flight_and_leaks_no_task() -> None:
    cancelled: list[int] = []
    endpoint = pointwise_endpoint()

    async def handler(request: httpx.Request) -> httpx.Response:
        batch = doc_number(json.loads(request.content)["documents"][0]) // 100
        if batch == 2:
            return _bad_request()
        if batch < 2:  # in flight when batch 2 fails
            try:
                await asyncio.wait_for(asyncio.Event().wait(), RENDEZVOUS_TIMEOUT)
            except asyncio.CancelledError:
                cancelled.append(batch)
                raise
        return endpoint.handle(request)

    before = asyncio.all_tasks()
    client = make(httpx.MockTransport(handler), max_batch_size=100, max_concurrency=3)
    with pytest.raises(trp.BadRequestError, match="batch rejected"):
        await client.arerank(QUERY, DOCS_1000)
    assert sorted(cancelled) == [0, 1]
    assert asyncio.all_tasks() == before
    await client.aclose()


async def test_cancelling_the_caller_cancels_every_batch_in_flight() -> None:
    inside: list[str] = []
    all_in = asyncio.Event()
    cancelled: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        first = json.loads(request.content)["documents"][0]
        inside.append(first)
        if len(inside) == 4:
            all_in.set()
        try:
            await asyncio.wait_for(asyncio.Event().wait(), RENDEZVOUS_TIMEOUT)
        except asyncio.CancelledError:
            cancelled.append(first)
            raise
        raise AssertionError("only cancellation ends these requests")

    client = make(httpx.MockTransport(handler), max_batch_size=100, max_concurrency=4)
    before = asyncio.all_tasks()
    task = asyncio.ensure_future(client.arerank(QUERY, DOCS_1000[:400]))
    await asyncio.wait_for(all_in.wait(), RENDEZVOUS_TIMEOUT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(cancelled) == sorted(inside)
    assert len(cancelled) == 4
    assert asyncio.all_tasks() == before
    await client.aclose()


# -- 2. native async under load (core; the adapters are in test_scale_adapters.py) --------
async def test_concurrent_calls_on_one_loop_share_one_async_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flight = InFlight(pointwise_endpoint().handle, rendezvous=32)
    client = make(flight.transport("async"))

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the async path used a worker thread")

    monkeypatch.setattr(asyncio, "to_thread", forbidden)
    monkeypatch.setattr(asyncio.get_running_loop(), "run_in_executor", forbidden)
    threads_before = set(threading.enumerate())
    queries = [f"{TOPICS[i % 8]} number {i % 13}" for i in range(32)]
    docs = corpus(20)

    results = await asyncio.gather(*(client.arerank(q, docs, top_n=3) for q in queries))

    assert results == [expected_ranking(q, docs, top_n=3) for q in queries]
    assert flight.max_active == 32  # all in flight together on one loop
    assert set(flight.threads) == {threading.get_ident()}
    assert set(threading.enumerate()) == threads_before  # no thread was started
    assert len(client._sdk._async) == 1
    assert client._sdk._sync is None
    await client.aclose()


# -- 3. dedupe ------------------------------------------------------------------------------
DUP_DOCS = ["cats purr", "dogs bark", "cats purr", "cats purr", "rivers flow", "dogs bark"]


@pytest.mark.parametrize("mode", MODES)
async def test_identical_texts_are_sent_once_and_only_the_first_is_returned(mode: str) -> None:
    endpoint = pointwise_endpoint()
    results = await call(make(endpoint), mode, "cats", DUP_DOCS, top_n=None)
    assert sent_documents(endpoint) == ["cats purr", "dogs bark", "rivers flow"]
    assert sorted(r.index for r in results) == [0, 1, 4]
    assert results == expected_ranking("cats", DUP_DOCS)
    assert (results.duplicates, results.documents_sent) == (3, 3)


@pytest.mark.parametrize("mode", MODES)
async def test_top_n_is_not_filled_with_copies(mode: str) -> None:
    docs = ["cats purr"] * 5 + ["cats sleep a lot", "dogs bark", "stock prices"]
    results = await call(make(pointwise_endpoint()), mode, "cats purr", docs, top_n=3)
    assert [r.index for r in results] == [0, 5, 6]  # three different documents
    assert len({docs[r.index] for r in results}) == 3


@pytest.mark.parametrize("mode", MODES)
async def test_dedupe_false_returns_every_occurrence_with_the_shared_score(mode: str) -> None:
    endpoint = pointwise_endpoint()
    client = make(endpoint, dedupe=False)
    results = await call(client, mode, "cats", DUP_DOCS, top_n=None)
    assert len(sent_documents(endpoint)) == 3  # still scored once
    assert sorted(r.index for r in results) == list(range(6))
    by_index = {r.index: r.relevance_score for r in results}
    assert by_index[0] == by_index[2] == by_index[3] == pointwise_score("cats", "cats purr")
    assert by_index[1] == by_index[5]
    assert [r.index for r in results][:3] == [0, 2, 3]  # ties keep the original order
    assert results.duplicates == 3
    top = await call(client, mode, "cats", DUP_DOCS, top_n=2)
    assert [r.index for r in top] == [0, 2]  # top_n counts occurrences


@pytest.mark.parametrize("mode", MODES)
async def test_thirty_percent_duplicates_send_seventy_percent_of_documents(mode: str) -> None:
    unique = corpus(70)
    docs = list(unique)
    for k in range(30):  # copies spread through the list, some of them twice
        docs.insert(3 * k + 2, unique[(k * 7) % 70])
    assert len(docs) == 100
    assert len(set(docs)) == 70
    endpoint = pointwise_endpoint()
    results = await call(make(endpoint, max_batch_size=25), mode, QUERY, docs, top_n=10)

    assert len(sent_documents(endpoint)) == 70 == results.documents_sent
    assert sorted(sent_documents(endpoint)) == sorted(unique)
    assert results.duplicates == 30
    assert results.usage.prompt_tokens == endpoint_tokens(QUERY, unique)  # tokens saved:
    assert endpoint_tokens(QUERY, docs) - results.usage.prompt_tokens > 0  # the copies'
    assert results == expected_ranking(QUERY, docs, top_n=10)


def test_duplicates_across_batches_are_sent_once() -> None:
    docs = DOCS_1000[:500] + DOCS_1000[:500]
    endpoint = pointwise_endpoint()
    results = make(endpoint, max_batch_size=100).rerank(QUERY, docs, top_n=None)
    assert len(endpoint.requests) == 5
    assert sorted(sent_documents(endpoint)) == DOCS_1000[:500]
    assert sorted(r.index for r in results) == list(range(500))


def test_mapping_documents_are_deduped_on_their_content() -> None:
    endpoint = pointwise_endpoint()
    docs = [
        {"title": "Cats", "text": "purr"},
        {"text": "purr", "title": "Cats"},
        {"title": "Dogs", "text": "bark"},
    ]
    results = make(endpoint).rerank("cats", docs, top_n=None, rank_fields=["title", "text"])
    assert len(sent_documents(endpoint)) == 2  # same mapping, other key order: one document
    assert sorted(r.index for r in results) == [0, 2]


# -- 4. score cache -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_repeated_query_sends_nothing(mode: str) -> None:
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=True, max_batch_size=100)
    first = await call(client, mode, QUERY, DOCS_1000, top_n=5)
    assert (first.requests, first.documents_sent, first.cache_hits) == (10, 1000, 0)
    sent = len(endpoint.requests)

    again = await call(client, mode, QUERY, DOCS_1000, top_n=5)
    assert len(endpoint.requests) == sent  # 0 requests
    assert (again.requests, again.documents_sent, again.cache_hits) == (0, 0, 1000)
    assert again == first == expected_ranking(QUERY, DOCS_1000, top_n=5)


async def test_cache_fills_from_sync_and_serves_async() -> None:
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=True)
    sync = client.rerank(QUERY, DOCS_1000[:50], top_n=5)
    answer = await client.arerank(QUERY, DOCS_1000[:50], top_n=5)
    assert len(endpoint.requests) == 1
    assert answer == sync
    assert answer.cache_hits == 50


@pytest.mark.parametrize("mode", MODES)
async def test_cached_call_keeps_every_score_for_a_later_top_n(mode: str) -> None:
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=True)
    await call(client, mode, QUERY, DOCS_1000[:40], top_n=2)
    assert "top_n" not in endpoint.requests[0]  # every score is worth keeping
    everything = await call(client, mode, QUERY, DOCS_1000[:40], top_n=None)
    assert len(endpoint.requests) == 1
    assert everything == expected_ranking(QUERY, DOCS_1000[:40])


@pytest.mark.parametrize("mode", MODES)
async def test_overlapping_candidates_send_only_the_misses(mode: str) -> None:
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=True)
    await call(client, mode, QUERY, DOCS_1000[:60])
    overlap = DOCS_1000[40:60] + DOCS_1000[100:110] + DOCS_1000[:5]
    results = await call(client, mode, QUERY, overlap, top_n=None)
    assert endpoint.requests[-1]["documents"] == DOCS_1000[100:110]
    assert (results.documents_sent, results.cache_hits) == (10, 25)
    assert results == expected_ranking(QUERY, overlap)


@pytest.mark.parametrize("mode", MODES)
async def test_cached_results_equal_uncached_results(mode: str) -> None:
    cached = make(pointwise_endpoint(), cache=True, max_batch_size=50)
    plain = make(pointwise_endpoint(), max_batch_size=50)
    lists = [DOCS_1000[:200], DOCS_1000[100:300], DOCS_1000[:300:2], DOCS_1000[250:260]]
    for docs in lists:
        for kw in ({"top_n": None}, {"top_n": 7}, {"top_n": 3, "score_threshold": 0.5}):
            with_cache = await call(cached, mode, QUERY, docs, **kw)
            assert with_cache == await call(plain, mode, QUERY, docs, **kw)
    assert with_cache.cache_hits == 10


def _ranked_fields_call(client: RerankClient, **change: Any) -> RerankResults:
    args: dict[str, Any] = {
        "query": "cats",
        "documents": [{"title": "Cats", "text": "purr"}, {"title": "Dogs", "text": "bark"}],
        "rank_fields": ["title", "text"],
    }
    return client.rerank(**(args | change))


@pytest.mark.parametrize(
    "change",
    [
        {"query": "dogs"},
        {"rank_fields": ["title"]},
        {"rank_fields": None},
        {"documents": [{"title": "Cats", "text": "purr!"}, {"title": "Dogs", "text": "bark"}]},
    ],
    ids=["query", "rank_fields", "no_rank_fields", "document"],
)
def test_cache_key_covers_query_rank_fields_and_document(change: dict[str, Any]) -> None:
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=True)
    _ranked_fields_call(client)
    assert _ranked_fields_call(client).cache_hits == 2  # control: the same call hits
    results = _ranked_fields_call(client, **change)
    changed = 1 if "documents" in change else 2
    assert results.cache_hits == 2 - changed
    assert len(endpoint.requests[-1]["documents"]) == changed
    assert len(endpoint.requests) == 2


def test_cache_key_covers_the_model() -> None:
    endpoint = pointwise_endpoint()
    store = InMemoryScoreStore()
    make(endpoint, cache=store).rerank(QUERY, DOCS_1000[:10])
    same = make(endpoint, cache=store).rerank(QUERY, DOCS_1000[:10])
    assert same.cache_hits == 10
    assert len(endpoint.requests) == 1
    # a dedicated endpoint: same limits (so the same long-document variant), other model
    other = make(endpoint, cache=store, model="my-org/llama-rank-dedicated")
    results = other.rerank(QUERY, DOCS_1000[:10])
    assert results.cache_hits == 0
    assert len(endpoint.requests) == 2
    assert endpoint.requests[-1]["model"] == "my-org/llama-rank-dedicated"


def test_cache_off_by_default_and_with_false() -> None:
    for kwargs in ({}, {"cache": False}, {"cache": None}):
        endpoint = pointwise_endpoint()
        client = make(endpoint, **kwargs)
        client.rerank(QUERY, DOCS_1000[:5])
        client.rerank(QUERY, DOCS_1000[:5])
        assert len(endpoint.requests) == 2


def test_in_memory_store_evicts_the_least_recently_used() -> None:
    endpoint = pointwise_endpoint()
    store = InMemoryScoreStore(maxsize=3)
    client = make(endpoint, cache=store)
    a, b, c, d = DOCS_1000[:4]
    client.rerank(QUERY, [a, b, c])
    assert len(store) == 3
    assert client.rerank(QUERY, [a]).cache_hits == 1  # a is now the most recent
    client.rerank(QUERY, [d])  # evicts b, the least recently used
    assert len(store) == 3
    results = client.rerank(QUERY, [a, b, c], top_n=None)
    assert endpoint.requests[-1]["documents"] == [b]
    assert results.cache_hits == 2
    assert results == expected_ranking(QUERY, [a, b, c])


def test_cache_true_bounds_its_memory() -> None:
    client = make(pointwise_endpoint(), cache=True)
    assert isinstance(client.cache, InMemoryScoreStore)
    assert client.cache.maxsize >= 1000
    with pytest.raises(ValueError, match="maxsize"):
        InMemoryScoreStore(maxsize=0)


class DictStore:
    """A minimal custom store: only ``mget`` and ``mset``."""

    def __init__(self) -> None:
        self.data: dict[str, float] = {}
        self.calls: list[str] = []
        self.written: list[int] = []  # items per write

    def mget(self, keys: Sequence[str]) -> list[float | None]:
        self.calls.append("mget")
        return [self.data.get(k) for k in keys]

    def mset(self, items: Sequence[tuple[str, float]]) -> None:
        self.calls.append("mset")
        self.written.append(len(items))
        self.data.update(items)


@pytest.mark.parametrize("mode", MODES)
async def test_custom_store_with_only_mget_and_mset(mode: str) -> None:
    store = DictStore()
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=store)
    first = await call(client, mode, QUERY, DOCS_1000[:20], top_n=4)
    assert len(store.data) == 20
    assert all(isinstance(v, float) for v in store.data.values())
    again = await call(make(endpoint, cache=store), mode, QUERY, DOCS_1000[:20], top_n=4)
    assert len(endpoint.requests) == 1
    assert again == first
    assert store.calls[:3] == ["mget", "mset", "mget"]
    assert store.written[0] == 20
    assert not any(store.written[1:])


class AsyncDictStore(DictStore):
    async def amget(self, keys: Sequence[str]) -> list[float | None]:
        self.calls.append("amget")
        return [self.data.get(k) for k in keys]

    async def amset(self, items: Sequence[tuple[str, float]]) -> None:
        self.calls.append("amset")
        self.written.append(len(items))
        self.data.update(items)


async def test_async_path_awaits_a_stores_async_methods() -> None:
    store = AsyncDictStore()
    client = make(pointwise_endpoint(), cache=store)
    await client.arerank(QUERY, DOCS_1000[:10])
    assert (await client.arerank(QUERY, DOCS_1000[:10])).cache_hits == 10
    assert [c for c in store.calls if c.startswith("a")] == store.calls  # awaited only
    assert store.calls[:3] == ["amget", "amset", "amget"]
    client.rerank(QUERY, DOCS_1000[:10])  # the sync path uses the sync methods
    assert "mget" in store.calls
    assert store.written[0] == 10
    assert not any(store.written[1:])


def test_store_values_that_are_not_scores_are_misses() -> None:
    store = DictStore()
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=store)
    client.rerank(QUERY, DOCS_1000[:3])
    for key, junk in zip(list(store.data), ["0.5", True, None], strict=True):
        store.data[key] = junk  # type: ignore[assignment]
    results = client.rerank(QUERY, DOCS_1000[:3], top_n=None)
    assert results.cache_hits == 0
    assert len(endpoint.requests[-1]["documents"]) == 3
    assert results == expected_ranking(QUERY, DOCS_1000[:3])


def test_failed_call_writes_nothing_to_the_cache() -> None:
    store = DictStore()
    client = make(httpx.MockTransport(lambda r: _bad_request()), cache=store)
    with pytest.raises(trp.BadRequestError):
        client.rerank(QUERY, DOCS_1000[:3])
    assert store.data == {}


class OnlyMget:
    def mget(self, keys: Sequence[str]) -> list[float | None]:
        return [None for _ in keys]


@pytest.mark.parametrize("cache", ["yes", 1, 0, object(), {}, [], OnlyMget()])
def test_bad_cache_object_is_a_config_error(cache: Any) -> None:
    with pytest.raises(trp.RerankConfigError, match="cache"):
        make(LexicalRerankEndpoint(), cache=cache)


# -- 6. RerankResults -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_results_are_a_list_with_usage_summed_over_batches(mode: str) -> None:
    endpoint = pointwise_endpoint()
    docs = DOCS_1000[:250]
    results = await call(make(endpoint, max_batch_size=100), mode, QUERY, docs, top_n=None)

    assert isinstance(results, list)
    assert isinstance(results, RerankResults)
    assert all(isinstance(r, RerankResult) for r in results)
    plain = [RerankResult(r.index, r.relevance_score) for r in results]
    assert results == plain
    assert plain == results
    assert results[:2] == plain[:2]
    assert json.dumps([[r.index, r.relevance_score] for r in results])  # plain data
    tokens = endpoint_tokens(QUERY, docs)
    assert results.usage == Usage(prompt_tokens=tokens, total_tokens=tokens)
    assert len(endpoint.requests) == results.requests == 3
    assert (results.documents_sent, results.cache_hits, results.duplicates) == (250, 0, 0)
    assert results.fallback is False
    assert results.error is None


def test_usage_counts_only_what_was_sent() -> None:
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=True, max_batch_size=4)
    client.rerank(QUERY, DOCS_1000[:8])
    results = client.rerank(QUERY, DOCS_1000[4:12] + DOCS_1000[4:6], top_n=3)
    assert results.requests == 1
    assert results.documents_sent == 4
    assert results.cache_hits == 4
    assert results.duplicates == 2
    tokens = endpoint_tokens(QUERY, DOCS_1000[8:12])
    assert results.usage == Usage(tokens, tokens)
    assert len(results) == 3


def test_usage_is_unknown_when_the_server_reports_none() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        n = len(json.loads(request.read())["documents"])
        scores = [{"index": i, "relevance_score": 1.0 / (i + 1)} for i in range(n)]
        return httpx.Response(200, json={"results": scores})

    results = make(httpx.MockTransport(handler), max_batch_size=2).rerank("q", ["a", "b", "c"])
    assert results.usage == Usage(None, None)
    assert results.requests == 2
    # each batch of the lookalike server scores its first document 1.0: the tie across
    # batches is broken by the original index
    assert [r.index for r in results] == [0, 2, 1]


def test_empty_call_has_zero_counters() -> None:
    results = make(pointwise_endpoint(), cache=True).rerank(QUERY, [])
    assert results == []
    assert isinstance(results, RerankResults)
    assert (results.requests, results.documents_sent, results.cache_hits) == (0, 0, 0)
    assert results.usage == Usage()
