"""Speed and scale through both adapters: batching, native async under load, dedupe,
the score cache with each framework's own store, and light imports.

Each test runs against the LlamaIndex postprocessor and the LangChain compressor alike
(parametrized by ``kit``). No socket is opened (``transport=`` everywhere) and nothing is
timed: requests, documents, handler calls in flight and threads are counted instead.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import together
from langchain_classic.storage import LocalFileStore
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.stores import InMemoryByteStore
from llama_index.core.callbacks import CallbackManager, CBEventType
from llama_index.core.callbacks.base_handler import BaseCallbackHandler as LIBaseCallbackHandler
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode
from llama_index.core.storage.kvstore import SimpleKVStore

from together_rerank_plugins import (
    BadRequestError,
    InMemoryScoreStore,
    RerankConfigError,
    Usage,
)
from together_rerank_plugins import langchain as lc
from together_rerank_plugins import llama_index as li

from .conftest import TEST_KEY
from .test_scale import (
    QUERY,
    TOPICS,
    InFlight,
    OnlyMget,
    corpus,
    doc_number,
    endpoint_tokens,
    expected_ranking,
    pointwise_endpoint,
    pointwise_score,
    sent_documents,
)

# -- one interface over both adapters ----------------------------------------------------


@dataclass(frozen=True)
class Kit:
    """Build an adapter, wrap texts as its items, run it and read back (text, score)."""

    name: str

    def build(self, transport: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("api_key", TEST_KEY)
        kwargs.setdefault("max_retries", 0)
        cls = li.TogetherRerank if self.name == "llama_index" else lc.TogetherRerank
        return cls(transport=transport, **kwargs)

    def items(self, texts: Sequence[str], metadata: Sequence[dict[str, Any]] = ()) -> list[Any]:
        metas = list(metadata) or [{} for _ in texts]
        if self.name == "llama_index":
            return [
                NodeWithScore(node=TextNode(text=t, id_=f"n{i}", metadata=m), score=0.5)
                for i, (t, m) in enumerate(zip(texts, metas, strict=True))
            ]
        return [
            Document(t, id=f"n{i}", metadata=m)
            for i, (t, m) in enumerate(zip(texts, metas, strict=True))
        ]

    def sync(self, rerank: Any, items: list[Any], query: str) -> list[Any]:
        if self.name == "llama_index":
            return list(rerank.postprocess_nodes(items, query_str=query))
        return list(rerank.compress_documents(items, query))

    async def aio(self, rerank: Any, items: list[Any], query: str) -> list[Any]:
        if self.name == "llama_index":
            return list(await rerank.apostprocess_nodes(items, query_str=query))
        return list(await rerank.acompress_documents(items, query))

    async def run(self, rerank: Any, mode: str, items: list[Any], query: str) -> list[Any]:
        if mode == "sync":
            return self.sync(rerank, items, query)
        return await self.aio(rerank, items, query)

    def id_of(self, item: Any) -> str:
        return str(item.node.id_ if self.name == "llama_index" else item.id)

    def scored(self, out: list[Any]) -> list[tuple[str, float]]:
        if self.name == "llama_index":
            return [(n.node.get_content(), n.score) for n in out]
        return [(d.page_content, d.metadata[lc.RELEVANCE_SCORE_KEY]) for d in out]


KITS = [Kit("llama_index"), Kit("langchain")]
MODES = ["sync", "async"]


@pytest.fixture(params=KITS, ids=lambda k: k.name)
def kit(request: pytest.FixtureRequest) -> Kit:
    return request.param  # type: ignore[no-any-return]


def ranked(query: str, texts: Sequence[str], top_n: int | None) -> list[tuple[str, float]]:
    return [(texts[r.index], r.relevance_score) for r in expected_ranking(query, texts, top_n)]


def forbid_worker_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the async path used a worker thread")

    monkeypatch.setattr(asyncio, "to_thread", forbidden)
    monkeypatch.setattr(asyncio.get_running_loop(), "run_in_executor", forbidden)


class CountingAsyncTogether(together.AsyncTogether):
    built: list[CountingAsyncTogether] = []  # noqa: RUF012 (reset per test by the fixture)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).built.append(self)
        super().__init__(*args, **kwargs)


class CountingTogether(together.Together):
    built: list[CountingTogether] = []  # noqa: RUF012

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).built.append(self)
        super().__init__(*args, **kwargs)


@pytest.fixture
def sdk_clients(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Count the SDK clients built (the core imports them from ``together`` on first use)."""
    monkeypatch.setattr(CountingAsyncTogether, "built", [])
    monkeypatch.setattr(CountingTogether, "built", [])
    monkeypatch.setattr(together, "AsyncTogether", CountingAsyncTogether)
    monkeypatch.setattr(together, "Together", CountingTogether)
    return {"async": CountingAsyncTogether.built, "sync": CountingTogether.built}


TEXTS_250 = corpus(250)


# -- 1. batching ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_adapters_batch_and_merge_into_one_exact_ranking(kit: Kit, mode: str) -> None:
    endpoint = pointwise_endpoint()
    rerank = kit.build(endpoint, max_batch_size=40, max_concurrency=3, top_n=5)
    assert (rerank.client.max_batch_size, rerank.client.max_concurrency) == (40, 3)

    out = await kit.run(rerank, mode, kit.items(TEXTS_250), QUERY)

    assert len(endpoint.requests) == 7  # ceil(250 / 40)
    assert all(len(b["documents"]) <= 40 for b in endpoint.requests)
    assert sorted(sent_documents(endpoint)) == TEXTS_250
    assert kit.scored(out) == ranked(QUERY, TEXTS_250, 5)


@pytest.mark.parametrize("mode", MODES)
async def test_adapters_apply_top_n_and_threshold_after_merging(kit: Kit, mode: str) -> None:
    full = ranked(QUERY, TEXTS_250, None)
    threshold = full[3][1]
    rerank = kit.build(
        pointwise_endpoint(), max_batch_size=25, top_n=None, score_threshold=threshold
    )
    out = await kit.run(rerank, mode, kit.items(TEXTS_250), QUERY)
    assert kit.scored(out) == full[:4]
    cut = rerank.with_options(top_n=2)
    assert kit.scored(await kit.run(cut, mode, kit.items(TEXTS_250), QUERY)) == full[:2]


@pytest.mark.parametrize("mode", MODES)
async def test_adapters_bound_requests_in_flight(kit: Kit, mode: str) -> None:
    flight = InFlight(pointwise_endpoint().handle, rendezvous=3)
    rerank = kit.build(flight.transport(mode), max_batch_size=25, max_concurrency=3, top_n=3)
    out = await kit.run(rerank, mode, kit.items(TEXTS_250[:150]), QUERY)

    assert kit.scored(out) == ranked(QUERY, TEXTS_250[:150], 3)
    assert len(flight.threads) == 6
    assert flight.max_active == 3  # reached (rendezvous), never exceeded
    if mode == "sync":
        assert threading.get_ident() not in flight.threads  # the thread pool
    else:
        assert set(flight.threads) == {threading.get_ident()}  # the event loop


@pytest.mark.parametrize("mode", MODES)
async def test_adapters_max_concurrency_1_is_sequential(kit: Kit, mode: str) -> None:
    flight = InFlight(pointwise_endpoint().handle)
    rerank = kit.build(flight.transport(mode), max_batch_size=50, max_concurrency=1)
    await kit.run(rerank, mode, kit.items(TEXTS_250), QUERY)
    assert flight.max_active == 1
    assert [doc_number(d) for d in flight.first_docs] == [0, 50, 100, 150, 200]
    assert set(flight.threads) == {threading.get_ident()}


@pytest.mark.parametrize(("name", "value"), [("max_batch_size", 0), ("max_concurrency", 0)])
def test_adapters_reject_bad_batch_options(kit: Kit, name: str, value: int) -> None:
    with pytest.raises(RerankConfigError, match=name):
        kit.build(pointwise_endpoint(), **{name: value})


@pytest.mark.parametrize("mode", MODES)
async def test_adapters_raise_the_typed_error_of_a_failed_batch(kit: Kit, mode: str) -> None:
    endpoint = pointwise_endpoint()

    def handler(request: httpx.Request) -> httpx.Response:
        if doc_number(json.loads(request.read())["documents"][0]) == 100:
            return httpx.Response(400, json={"error": {"message": "batch rejected"}})
        return endpoint.handle(request)

    rerank = kit.build(httpx.MockTransport(handler), max_batch_size=50, max_concurrency=2)
    with pytest.raises(BadRequestError, match="batch rejected"):
        await kit.run(rerank, mode, kit.items(TEXTS_250), QUERY)


# -- 2. native async under load ---------------------------------------------------------------
async def test_many_concurrent_async_calls_share_one_client_and_no_thread(
    kit: Kit, monkeypatch: pytest.MonkeyPatch, sdk_clients: dict[str, list[Any]]
) -> None:
    calls = 64
    flight = InFlight(pointwise_endpoint().handle, rendezvous=calls)
    rerank = kit.build(flight.transport("async"), top_n=3)
    forbid_worker_threads(monkeypatch)
    threads_before = set(threading.enumerate())
    texts = corpus(20)
    queries = [f"{TOPICS[i % 8]} number {i % 13}" for i in range(calls)]

    outs = await asyncio.gather(*(kit.aio(rerank, kit.items(texts), q) for q in queries))

    assert [kit.scored(o) for o in outs] == [ranked(q, texts, 3) for q in queries]
    assert flight.max_active == calls  # all in flight at once, on one loop
    assert set(flight.threads) == {threading.get_ident()}  # the loop's own thread
    assert set(threading.enumerate()) == threads_before  # no thread was started
    assert len(sdk_clients["async"]) == 1  # one async SDK client (one connection pool)
    assert len(rerank.client._sdk._async) == 1
    assert rerank.client._sdk._async[asyncio.get_running_loop()][0] is sdk_clients["async"][0]
    assert sdk_clients["sync"] == []
    await rerank.client.aclose()


def test_one_instance_serves_several_threads_at_once(
    kit: Kit, sdk_clients: dict[str, list[Any]]
) -> None:
    threads = 8
    flight = InFlight(pointwise_endpoint().handle, rendezvous=threads)
    rerank = kit.build(flight.transport("sync"), top_n=4)
    texts = corpus(30)
    queries = [f"{TOPICS[i]} number {i}" for i in range(threads)]

    with ThreadPoolExecutor(threads) as pool:
        outs = list(pool.map(lambda q: kit.sync(rerank, kit.items(texts), q), queries))

    assert [kit.scored(o) for o in outs] == [ranked(q, texts, 4) for q in queries]
    assert flight.max_active == threads  # really at once
    assert len(set(flight.threads)) == threads
    assert len(sdk_clients["sync"]) == 1  # one sync SDK client, shared


def test_one_instance_serves_event_loops_one_after_another(
    kit: Kit, sdk_clients: dict[str, list[Any]]
) -> None:
    endpoint = pointwise_endpoint()
    rerank = kit.build(endpoint, top_n=3)
    texts = corpus(20)
    queries = ["cats number 1", "rivers number 2", "comets number 3"]

    outs = [asyncio.run(kit.aio(rerank, kit.items(texts), q)) for q in queries]  # per request

    assert [kit.scored(o) for o in outs] == [ranked(q, texts, 3) for q in queries]
    assert len(endpoint.requests) == 3
    assert len(sdk_clients["async"]) == 3  # one per loop: a closed loop's is never reused
    assert all(c.is_closed() for c in sdk_clients["async"])  # closed with their loops
    assert len(rerank.client._sdk._async) == 0


def test_one_instance_serves_concurrent_event_loops_in_threads(
    kit: Kit, sdk_clients: dict[str, list[Any]]
) -> None:
    loops = 4
    flight = InFlight(pointwise_endpoint().handle, rendezvous=loops)
    rerank = kit.build(flight.transport("sync"), top_n=3)  # a threading.Barrier: blocks a loop
    texts = corpus(20)
    queries = [f"{TOPICS[i]} number {i}" for i in range(loops)]

    def in_own_loop(query: str) -> list[tuple[str, float]]:
        return kit.scored(asyncio.run(kit.aio(rerank, kit.items(texts), query)))

    with ThreadPoolExecutor(loops) as pool:
        outs = list(pool.map(in_own_loop, queries))

    assert outs == [ranked(q, texts, 3) for q in queries]
    assert flight.max_active == loops  # the loops were in flight together
    assert len(set(flight.threads)) == loops
    assert len(sdk_clients["async"]) == loops
    assert all(c.is_closed() for c in sdk_clients["async"])
    assert len(rerank.client._sdk._async) == 0


# -- 3. dedupe -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_adapters_send_identical_texts_once_and_return_the_first(kit: Kit, mode: str) -> None:
    texts = ["cats purr", "dogs bark", "cats purr", "cats purr", "cats sleep", "dogs bark"]
    endpoint = pointwise_endpoint()
    items = kit.items(texts, [{"source": f"retriever-{i}"} for i in range(6)])
    # LlamaIndex sends the metadata with the text by default: here it sends the text alone
    extra = {"metadata_mode": MetadataMode.NONE} if kit.name == "llama_index" else {}
    rerank = kit.build(endpoint, top_n=3, **extra)

    out = await kit.run(rerank, mode, items, "cats purr")

    assert sent_documents(endpoint) == ["cats purr", "dogs bark", "cats sleep"]
    assert [kit.id_of(o) for o in out] == ["n0", "n4", "n1"]  # no copies fill the top 3
    assert kit.scored(out) == ranked("cats purr", texts, 3)


@pytest.mark.parametrize("mode", MODES)
async def test_adapters_dedupe_false_returns_every_copy_with_the_shared_score(
    kit: Kit, mode: str
) -> None:
    texts = ["cats purr", "dogs bark", "cats purr"]
    endpoint = pointwise_endpoint()
    rerank = kit.build(endpoint, top_n=None, dedupe=False)
    out = await kit.run(rerank, mode, kit.items(texts), "cats purr")
    assert len(sent_documents(endpoint)) == 2
    assert [kit.id_of(o) for o in out] == ["n0", "n2", "n1"]
    score = pointwise_score("cats purr", "cats purr")
    assert [s for _, s in kit.scored(out)][:2] == [score, score]


async def test_llama_index_dedupes_on_the_text_as_sent() -> None:
    kit = Kit("llama_index")
    texts = ["cats purr", "cats purr"]
    items = kit.items(texts, [{"source": "a"}, {"source": "b"}])
    endpoint = pointwise_endpoint()

    embed = kit.build(endpoint, top_n=None)  # default EMBED mode: metadata is sent
    out = await embed.apostprocess_nodes(items, query_str="cats")
    assert len(out) == 2
    assert sent_documents(endpoint) == [n.node.get_content(MetadataMode.EMBED) for n in items]

    endpoint.requests.clear()
    plain = kit.build(endpoint, top_n=None, metadata_mode=MetadataMode.NONE)
    out = plain.postprocess_nodes(items, query_str="cats")
    assert sent_documents(endpoint) == ["cats purr"]
    assert [n.node.id_ for n in out] == ["n0"]


def test_langchain_dedupes_on_page_content() -> None:
    kit = Kit("langchain")
    endpoint = pointwise_endpoint()
    items = kit.items(["cats purr", "cats purr"], [{"source": "a"}, {"source": "b"}])
    out = kit.build(endpoint, top_n=None).compress_documents(items, "cats")
    assert sent_documents(endpoint) == ["cats purr"]
    assert [d.metadata["source"] for d in out] == ["a"]


@pytest.mark.parametrize("mode", MODES)
async def test_adapters_thirty_percent_duplicates_send_seventy_percent(kit: Kit, mode: str) -> None:
    unique = corpus(70)
    texts = list(unique)
    for k in range(30):
        texts.insert(3 * k + 2, unique[(k * 7) % 70])
    endpoint = pointwise_endpoint()
    rerank = kit.build(endpoint, max_batch_size=25, top_n=5)
    out = await kit.run(rerank, mode, kit.items(texts), QUERY)
    assert len(sent_documents(endpoint)) == 70
    assert sum(len(b["documents"]) for b in endpoint.requests) == 70
    assert kit.scored(out) == ranked(QUERY, texts, 5)


# -- 4. score cache ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_adapters_cache_true_repeated_query_sends_nothing(kit: Kit, mode: str) -> None:
    endpoint = pointwise_endpoint()
    rerank = kit.build(endpoint, cache=True, max_batch_size=50)
    assert isinstance(rerank.client.cache, InMemoryScoreStore)
    first = await kit.run(rerank, mode, kit.items(TEXTS_250), QUERY)
    assert len(endpoint.requests) == 5
    again = await kit.run(rerank, mode, kit.items(TEXTS_250), QUERY)
    assert len(endpoint.requests) == 5  # 0 requests, 0 documents
    assert kit.scored(again) == kit.scored(first) == ranked(QUERY, TEXTS_250, 5)

    overlap = TEXTS_250[200:] + corpus(260)[250:]
    out = await kit.run(rerank, mode, kit.items(overlap), QUERY)
    assert sent_documents(endpoint)[250:] == corpus(260)[250:]  # only the misses
    assert kit.scored(out) == ranked(QUERY, overlap, 5)


async def test_llama_index_cache_key_follows_the_text_as_sent() -> None:
    kit = Kit("llama_index")
    endpoint = pointwise_endpoint()
    store = SimpleKVStore()
    items = kit.items(["cats purr", "dogs bark"], [{"k": "v"}, {"k": "w"}])
    kit.build(endpoint, cache=store).postprocess_nodes(items, query_str="cats")
    kit.build(endpoint, cache=store).postprocess_nodes(items, query_str="cats")
    assert len(endpoint.requests) == 1
    plain = kit.build(endpoint, cache=store, metadata_mode=MetadataMode.NONE)
    await plain.apostprocess_nodes(items, query_str="cats")
    assert len(endpoint.requests) == 2  # other text sent: other keys


@pytest.mark.parametrize("mode", MODES)
async def test_llama_index_accepts_a_kv_store(mode: str) -> None:
    kit = Kit("llama_index")
    endpoint = pointwise_endpoint()
    store = SimpleKVStore()
    rerank = kit.build(endpoint, cache=store, top_n=5)
    first = await kit.run(rerank, mode, kit.items(TEXTS_250[:40]), QUERY)
    entries = store.get_all(collection="together_rerank_scores")
    assert len(entries) == 40
    assert all(set(v) == {"score"} and isinstance(v["score"], float) for v in entries.values())

    again = await kit.run(rerank, mode, kit.items(TEXTS_250[:40]), QUERY)
    assert len(endpoint.requests) == 1
    assert kit.scored(again) == kit.scored(first) == ranked(QUERY, TEXTS_250[:40], 5)


@pytest.mark.parametrize("mode", MODES)
async def test_llama_index_persisted_kv_store_serves_a_new_postprocessor(
    mode: str, tmp_path: Path
) -> None:
    kit = Kit("llama_index")
    path = str(tmp_path / "scores.json")
    endpoint = pointwise_endpoint()
    store = SimpleKVStore()
    first = await kit.run(kit.build(endpoint, cache=store), mode, kit.items(TEXTS_250), QUERY)
    store.persist(path)

    fresh = pointwise_endpoint()
    reloaded = kit.build(fresh, cache=SimpleKVStore.from_persist_path(path))
    again = await kit.run(reloaded, mode, kit.items(TEXTS_250), QUERY)
    assert fresh.requests == []
    assert kit.scored(again) == kit.scored(first)


@pytest.mark.parametrize("mode", MODES)
async def test_langchain_accepts_a_byte_store(mode: str) -> None:
    kit = Kit("langchain")
    endpoint = pointwise_endpoint()
    store = InMemoryByteStore()
    rerank = kit.build(endpoint, cache=store, top_n=5)
    first = await kit.run(rerank, mode, kit.items(TEXTS_250[:40]), QUERY)
    keys = list(store.yield_keys())
    assert len(keys) == 40
    assert all(len(v) == 8 for v in store.mget(keys) if v is not None)  # 8-byte doubles

    again = await kit.run(rerank, mode, kit.items(TEXTS_250[:40]), QUERY)
    assert len(endpoint.requests) == 1
    assert kit.scored(again) == kit.scored(first) == ranked(QUERY, TEXTS_250[:40], 5)
    ranking = rerank.rerank(kit.items(TEXTS_250[:40]), QUERY, top_n=None)  # same cache
    assert len(endpoint.requests) == 1
    assert len(ranking) == 40


@pytest.mark.parametrize("mode", MODES)
async def test_langchain_file_store_serves_a_new_compressor(mode: str, tmp_path: Path) -> None:
    kit = Kit("langchain")
    endpoint = pointwise_endpoint()
    first = await kit.run(
        kit.build(endpoint, cache=LocalFileStore(tmp_path)), mode, kit.items(TEXTS_250), QUERY
    )
    fresh = pointwise_endpoint()
    again = await kit.run(
        kit.build(fresh, cache=LocalFileStore(tmp_path)), mode, kit.items(TEXTS_250), QUERY
    )
    assert fresh.requests == []
    assert kit.scored(again) == kit.scored(first)


_WRITER = """
import sys
from together_rerank_plugins.testing import LexicalRerankEndpoint
from tests.test_scale import QUERY, corpus, pointwise_scores

adapter, path = sys.argv[1], sys.argv[2]
endpoint = LexicalRerankEndpoint(scorer=pointwise_scores)
if adapter == "llama_index":
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.core.storage.kvstore import SimpleKVStore
    from together_rerank_plugins.llama_index import TogetherRerank

    store = SimpleKVStore()
    nodes = [NodeWithScore(node=TextNode(text=t)) for t in corpus(30)]
    TogetherRerank(api_key="k", transport=endpoint, cache=store).postprocess_nodes(
        nodes, query_str=QUERY
    )
    store.persist(path)
else:
    from langchain_classic.storage import LocalFileStore
    from langchain_core.documents import Document
    from together_rerank_plugins.langchain import TogetherRerank

    rerank = TogetherRerank(api_key="k", transport=endpoint, cache=LocalFileStore(path))
    rerank.compress_documents([Document(t) for t in corpus(30)], QUERY)
print(len(endpoint.requests))
"""


def test_a_stored_cache_serves_another_process(kit: Kit, tmp_path: Path) -> None:
    """Scores written by one process (a persisted SimpleKVStore, a LocalFileStore) spare
    another process's requests."""
    path = str(tmp_path / ("scores.json" if kit.name == "llama_index" else "scores"))
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, kit.name, path],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    )
    assert done.stdout.strip() == "1"
    store: Any = (
        SimpleKVStore.from_persist_path(path) if kit.name == "llama_index" else LocalFileStore(path)
    )
    endpoint = pointwise_endpoint()
    out = kit.sync(kit.build(endpoint, cache=store, top_n=5), kit.items(corpus(30)), QUERY)
    assert endpoint.requests == []
    assert kit.scored(out) == ranked(QUERY, corpus(30), 5)


@pytest.mark.parametrize("cache", ["yes", 1, object(), OnlyMget()])
def test_adapters_reject_a_bad_cache(kit: Kit, cache: Any) -> None:
    with pytest.raises(RerankConfigError, match="cache"):
        kit.build(pointwise_endpoint(), cache=cache)


def test_each_adapter_also_takes_the_other_frameworks_store(tmp_path: Path) -> None:
    """Stores are recognised in the core, so a team on both frameworks can share one."""
    for name, store in (
        ("langchain", SimpleKVStore()),
        ("llama_index", LocalFileStore(str(tmp_path))),
    ):
        kit = Kit(name)
        endpoint = pointwise_endpoint()
        first = kit.sync(kit.build(endpoint, cache=store, top_n=5), kit.items(corpus(12)), QUERY)
        sent = len(endpoint.requests)
        again = kit.sync(kit.build(endpoint, cache=store, top_n=5), kit.items(corpus(12)), QUERY)
        assert sent == 1
        assert len(endpoint.requests) == 1  # the second call was answered from the store
        assert kit.scored(first) == kit.scored(again) == ranked(QUERY, corpus(12), 5)


# -- usage over batches (RerankResults through each framework's reporting) ---------------------
class LIUsage(LIBaseCallbackHandler):
    def __init__(self) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.usage: list[Any] = []

    def on_event_start(self, *args: Any, **kwargs: Any) -> str:
        return str(kwargs.get("event_id", ""))

    def on_event_end(
        self, event_type: CBEventType, payload: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if event_type == CBEventType.RERANKING and payload:
            self.usage.append(payload.get(li.USAGE_PAYLOAD_KEY))

    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(self, trace_id: str | None = None, trace_map: Any = None) -> None:
        return None


class LCUsage(BaseCallbackHandler):
    def __init__(self) -> None:
        self.usage: list[Any] = []

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.usage.append(kwargs.get("usage"))


class LCAsyncUsage(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.usage: list[Any] = []

    async def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.usage.append(kwargs.get("usage"))


@pytest.mark.parametrize("mode", MODES)
async def test_usage_reported_by_each_adapter_is_summed_over_batches(kit: Kit, mode: str) -> None:
    endpoint = pointwise_endpoint()
    texts = TEXTS_250[:100]
    tokens = endpoint_tokens(QUERY, texts)
    items = kit.items(texts)
    if kit.name == "llama_index":
        handler: Any = LIUsage()
        rerank = kit.build(endpoint, max_batch_size=30, callback_manager=CallbackManager([handler]))
        await kit.run(rerank, mode, items, QUERY)
    else:
        handler = LCUsage() if mode == "sync" else LCAsyncUsage()
        rerank = kit.build(endpoint, max_batch_size=30)
        if mode == "sync":
            rerank.compress_documents(items, QUERY, callbacks=[handler])
        else:
            await rerank.acompress_documents(items, QUERY, callbacks=[handler])
    assert len(endpoint.requests) == 4
    assert handler.usage == [Usage(prompt_tokens=tokens, total_tokens=tokens)]


# -- 5. light imports -------------------------------------------------------------------------
_IMPORTS = """
import json, sys
def loaded(*names):
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in sys.modules))
report = {}
import together_rerank_plugins.%(adapter)s as adapter
report["import"] = loaded("together", "llama_index", "langchain_core", "langchain")
from together_rerank_plugins.testing import LexicalRerankEndpoint
rerank = adapter.TogetherRerank(api_key="offline-key", transport=LexicalRerankEndpoint())
report["construct"] = loaded("together")
%(call)s
report["call"] = loaded("together")
print(json.dumps(report))
"""

_CALLS = {
    "langchain": (
        "from langchain_core.documents import Document\n"
        "rerank.compress_documents([Document('cats purr'), Document('dogs')], 'cats')"
    ),
    "llama_index": (
        "from llama_index.core.schema import NodeWithScore, TextNode\n"
        "rerank.postprocess_nodes([NodeWithScore(node=TextNode(text='cats purr'))], "
        "query_str='cats')"
    ),
}


@pytest.mark.parametrize(
    ("adapter", "framework", "other"),
    [("langchain", "langchain_core", "llama_index"), ("llama_index", "llama_index", "langchain")],
)
def test_adapter_import_is_light_and_the_sdk_loads_on_first_call(
    adapter: str, framework: str, other: str
) -> None:
    code = _IMPORTS % {"adapter": adapter, "call": _CALLS[adapter]}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert framework in report["import"]
    assert other not in report["import"]  # nor the other framework ...
    assert "langchain_core" not in report["import"] or adapter == "langchain"
    assert "together" not in report["import"]  # ... nor the SDK
    assert report["construct"] == []  # building the adapter does not load the SDK
    assert report["call"] == ["together"]  # the first rerank call does
