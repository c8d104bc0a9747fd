"""Tracing and usage: LangChain child runs, LlamaIndex events and spans, summed token usage.

No sockets: the embedded lexical endpoint or ``httpx.MockTransport`` answers every request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.callbacks.base_handler import BaseCallbackHandler as LlamaCallbackHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from llama_index.core.schema import NodeWithScore, TextNode

from together_rerank_plugins import RerankClient, RerankInputError, ServerError, Usage
from together_rerank_plugins.langchain import RELEVANCE_SCORE_KEY
from together_rerank_plugins.langchain import TogetherRerank as LangChainRerank
from together_rerank_plugins.llama_index import USAGE_PAYLOAD_KEY
from together_rerank_plugins.llama_index import TogetherRerank as LlamaIndexRerank
from together_rerank_plugins.testing import LexicalRerankEndpoint, hash_embedding

from .conftest import TEST_KEY

MODES = ["sync", "async"]
QUERY = "sweet red apples"
TEXTS = [
    "green pears and yellow bananas",
    "red apples are sweet",
    "red cars are fast",
    "apples and pears in a basket",
    "sweet red fruit",
]


class UsageEndpoint(httpx.MockTransport):
    """Scores like the lexical endpoint; reports usage 7 (prompt) / 8 (total) per document."""

    def __init__(self) -> None:
        self.lexical = LexicalRerankEndpoint()
        self.bodies: list[dict[str, Any]] = []
        super().__init__(self.answer)

    def answer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        self.bodies.append(body)
        payload = json.loads(self.lexical.handle(request).read())
        n = len(body["documents"])
        payload["usage"] = {"prompt_tokens": 7 * n, "completion_tokens": 0, "total_tokens": 8 * n}
        return httpx.Response(200, json=payload)


def failing() -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda request: httpx.Response(
            500, json={"error": {"message": "upstream exploded", "type": "server_error"}}
        )
    )


# -- core -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_core_usage_is_summed_over_batches(mode: str) -> None:
    endpoint = UsageEndpoint()
    client = RerankClient(api_key=TEST_KEY, transport=endpoint, max_batch_size=2)
    if mode == "sync":
        results = client.rerank(QUERY, TEXTS, top_n=2)
    else:
        results = await client.arerank(QUERY, TEXTS, top_n=2)
    assert sorted(len(b["documents"]) for b in endpoint.bodies) == [1, 2, 2]
    assert results.requests == 3
    assert results.usage == Usage(prompt_tokens=35, total_tokens=40)


def test_core_usage_tolerates_batches_without_usage() -> None:
    answers = iter(
        [
            {
                "results": [
                    {"index": 0, "relevance_score": 0.1},
                    {"index": 1, "relevance_score": 0.2},
                ]
            },
            {
                "results": [{"index": 0, "relevance_score": 0.3}],
                "usage": {"prompt_tokens": 4, "total_tokens": 5},
            },
        ]
    )
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=next(answers)))
    client = RerankClient(
        api_key=TEST_KEY, transport=transport, max_batch_size=2, max_concurrency=1
    )
    results = client.rerank(QUERY, ["a", "b", "c"])
    assert results.usage == Usage(prompt_tokens=4, total_tokens=5)


def test_core_usage_is_none_when_never_reported_or_nothing_sent() -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, json={"results": [{"index": 0, "relevance_score": 1}]})
    )
    client = RerankClient(api_key=TEST_KEY, transport=transport)
    assert client.rerank(QUERY, ["a"]).usage == Usage(None, None)
    assert client.rerank(QUERY, []).usage == Usage(None, None)


# -- LangChain ------------------------------------------------------------------------------
class RetrieverEvents(BaseCallbackHandler):
    """Records retriever callbacks: (event, run_id, parent_run_id, payload, kwargs)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def _record(self, event: str, payload: Any, kwargs: dict[str, Any]) -> None:
        self.events.append(
            {
                "event": event,
                "payload": payload,
                "run_id": kwargs.pop("run_id"),
                "parent_run_id": kwargs.pop("parent_run_id", None),
                **kwargs,
            }
        )

    def on_retriever_start(self, serialized: dict[str, Any], query: str, **kwargs: Any) -> None:
        self._record("start", query, kwargs)

    def on_retriever_end(self, documents: Any, **kwargs: Any) -> None:
        self._record("end", documents, kwargs)

    def on_retriever_error(self, error: BaseException, **kwargs: Any) -> None:
        self._record("error", error, kwargs)

    def named(self, name: str) -> list[dict[str, Any]]:
        """The events of the runs started with ``name``."""
        ids = {e["run_id"] for e in self.events if e["event"] == "start" and e["name"] == name}
        return [e for e in self.events if e["run_id"] in ids]


class AsyncRetrieverEvents(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.sync = RetrieverEvents()

    async def on_retriever_start(
        self, serialized: dict[str, Any], query: str, **kwargs: Any
    ) -> None:
        self.sync.on_retriever_start(serialized, query, **kwargs)

    async def on_retriever_end(self, documents: Any, **kwargs: Any) -> None:
        self.sync.on_retriever_end(documents, **kwargs)

    async def on_retriever_error(self, error: BaseException, **kwargs: Any) -> None:
        self.sync.on_retriever_error(error, **kwargs)


def docs() -> list[Document]:
    return [Document(t, id=f"d{i}") for i, t in enumerate(TEXTS)]


async def compress(rr: LangChainRerank, mode: str, items: list[Document], callbacks: Any) -> Any:
    if mode == "sync":
        return rr.compress_documents(items, QUERY, callbacks=callbacks)
    return await rr.acompress_documents(items, QUERY, callbacks=callbacks)


def langchain(transport: Any, **kwargs: Any) -> LangChainRerank:
    return LangChainRerank(api_key=TEST_KEY, transport=transport, max_retries=0, **kwargs)


@pytest.mark.parametrize("mode", MODES)
async def test_langchain_success_is_a_retriever_run_with_documents_scores_and_usage(
    mode: str,
) -> None:
    handler = RetrieverEvents() if mode == "sync" else AsyncRetrieverEvents()
    record = handler if isinstance(handler, RetrieverEvents) else handler.sync
    runs = RunCollectorCallbackHandler()
    rr = langchain(UsageEndpoint(), top_n=2, max_batch_size=2, model="my-org/ranker")

    out = await compress(rr, mode, docs(), [handler, runs])

    start, end = record.events
    assert start["event"] == "start"
    assert start["name"] == "TogetherRerank"
    assert start["payload"] == QUERY
    assert start["metadata"]["ls_provider"] == "together"
    assert start["metadata"]["ls_model_name"] == "my-org/ranker"
    assert end["event"] == "end"
    assert end["run_id"] == start["run_id"]
    assert end["payload"] == out
    assert [d.id for d in end["payload"]] == ["d1", "d4"]
    assert all(RELEVANCE_SCORE_KEY in d.metadata for d in end["payload"])
    assert end["usage"] == Usage(prompt_tokens=35, total_tokens=40)  # 3 batches, summed

    # What LangSmith records: a retriever-type run named TogetherRerank listing the documents
    (run,) = runs.traced_runs
    assert run.run_type == "retriever"
    assert run.name == "TogetherRerank"
    assert run.inputs == {"query": QUERY}
    assert run.outputs is not None
    assert [d.id for d in run.outputs["documents"]] == ["d1", "d4"]
    scores = [d.metadata[RELEVANCE_SCORE_KEY] for d in run.outputs["documents"]]
    assert scores == sorted(scores, reverse=True)
    assert run.extra is not None
    assert run.extra["metadata"]["ls_provider"] == "together"
    assert run.extra["metadata"]["ls_model_name"] == "my-org/ranker"
    assert run.error is None


@pytest.mark.parametrize("mode", MODES)
async def test_langchain_error_ends_the_run_with_the_typed_exception(mode: str) -> None:
    handler = RetrieverEvents() if mode == "sync" else AsyncRetrieverEvents()
    record = handler if isinstance(handler, RetrieverEvents) else handler.sync
    runs = RunCollectorCallbackHandler()

    with pytest.raises(ServerError) as info:
        await compress(langchain(failing()), mode, docs(), [handler, runs])

    start, error = record.events
    assert start["event"] == "start"
    assert error["event"] == "error"
    assert error["run_id"] == start["run_id"]
    assert error["payload"] is info.value
    (run,) = runs.traced_runs
    assert run.run_type == "retriever"
    assert run.error is not None
    assert "ServerError" in run.error or "500" in run.error
    assert not run.outputs  # no documents on error


@pytest.mark.parametrize("mode", MODES)
async def test_langchain_empty_candidates_still_open_and_close_a_run(mode: str) -> None:
    handler = RetrieverEvents()
    out = await compress(langchain(UsageEndpoint()), mode, [], [handler])
    assert out == []
    assert [e["event"] for e in handler.events] == ["start", "end"]
    assert handler.events[1]["payload"] == []
    assert handler.events[1]["usage"] == Usage(None, None)


def test_langchain_bad_call_starts_no_run() -> None:
    handler = RetrieverEvents()
    with pytest.raises(RerankInputError):
        langchain(UsageEndpoint()).compress_documents(docs(), "   ", callbacks=[handler])
    assert handler.events == []


def test_langchain_without_callbacks_traces_nothing_and_works() -> None:
    assert len(langchain(UsageEndpoint(), top_n=1).compress_documents(docs(), QUERY)) == 1


class HashEmbeddings(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [hash_embedding(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return hash_embedding(text)


@pytest.mark.parametrize("mode", MODES)
async def test_langchain_rerank_run_is_a_child_of_the_retriever_run(mode: str) -> None:
    store = InMemoryVectorStore(HashEmbeddings())
    store.add_documents(docs())
    retriever = ContextualCompressionRetriever(
        base_compressor=langchain(UsageEndpoint(), top_n=2),
        base_retriever=store.as_retriever(search_kwargs={"k": 5}),
    )
    handler = RetrieverEvents()
    runs = RunCollectorCallbackHandler()
    config: Any = {"callbacks": [handler, runs], "run_name": "hybrid-search"}
    if mode == "sync":
        out = retriever.invoke(QUERY, config=config)
    else:
        out = await retriever.ainvoke(QUERY, config=config)

    (root,) = runs.traced_runs
    assert root.name == "hybrid-search"
    children = {child.name: child for child in root.child_runs}
    assert "TogetherRerank" in children
    rerank_run = children["TogetherRerank"]
    assert rerank_run.parent_run_id == root.id
    assert rerank_run.run_type == "retriever"
    assert rerank_run.outputs is not None
    assert rerank_run.outputs["documents"] == out
    assert len(children) == 2  # the vector store's retriever run, and ours

    rerank_events = handler.named("TogetherRerank")
    assert [e["event"] for e in rerank_events] == ["start", "end"]
    assert rerank_events[0]["parent_run_id"] == root.id
    assert isinstance(rerank_events[0]["parent_run_id"], UUID)
    assert rerank_events[1]["usage"].total_tokens == 8 * 5


# -- LlamaIndex -----------------------------------------------------------------------------
class CallbackRecorder(LlamaCallbackHandler):
    def __init__(self) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.records: list[tuple[str, CBEventType, dict[str, Any] | None, str]] = []

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        self.records.append(("start", event_type, payload, event_id))
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        self.records.append(("end", event_type, payload, event_id))

    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(
        self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None
    ) -> None:
        return None

    def reranking(self) -> list[tuple[str, dict[str, Any] | None, str]]:
        return [(p, pl, i) for p, t, pl, i in self.records if t == CBEventType.RERANKING]


class EventRecorder(BaseEventHandler):
    events: list[Any] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "TracingEventRecorder"

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class Instrumented:
    def __init__(self, events: EventRecorder, spans: SimpleSpanHandler) -> None:
        self.events = events
        self.spans = spans

    def spans_of(self, method: str, kind: str) -> list[Any]:
        spans = self.spans.completed_spans if kind == "completed" else self.spans.dropped_spans
        return [s for s in spans if s.id_.startswith(f"TogetherRerank.{method}-")]


@pytest.fixture
def instrumented() -> Iterator[Instrumented]:
    root = get_dispatcher()
    events = EventRecorder()
    spans = SimpleSpanHandler()
    root.add_event_handler(events)
    root.add_span_handler(spans)
    try:
        yield Instrumented(events, spans)
    finally:
        root.event_handlers.remove(events)
        root.span_handlers.remove(spans)


def nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=0.5) for i, t in enumerate(TEXTS)
    ]


async def postprocess(
    rr: LlamaIndexRerank, mode: str, items: list[NodeWithScore], query: str = QUERY
) -> Any:
    if mode == "sync":
        return rr.postprocess_nodes(items, query_str=query)
    return await rr.apostprocess_nodes(items, query_str=query)


def method(mode: str) -> str:
    return "_postprocess_nodes" if mode == "sync" else "_apostprocess_nodes"


@pytest.mark.parametrize("mode", MODES)
async def test_llama_index_success_events_span_and_usage(
    mode: str, instrumented: Instrumented
) -> None:
    recorder = CallbackRecorder()
    rr = LlamaIndexRerank(
        api_key=TEST_KEY,
        transport=UsageEndpoint(),
        top_n=2,
        max_batch_size=2,
        callback_manager=CallbackManager([recorder]),
    )
    out = await postprocess(rr, mode, nodes())

    (start, start_payload, start_id), (end, end_payload, end_id) = recorder.reranking()
    assert (start, end) == ("start", "end")
    assert start_id == end_id
    assert start_payload is not None
    assert start_payload[EventPayload.QUERY_STR] == QUERY
    assert end_payload is not None
    assert end_payload[EventPayload.NODES] == out
    assert USAGE_PAYLOAD_KEY == "usage"
    assert end_payload[USAGE_PAYLOAD_KEY] == Usage(prompt_tokens=35, total_tokens=40)

    assert len(instrumented.events.of(ReRankStartEvent)) == 1
    (end_event,) = instrumented.events.of(ReRankEndEvent)
    assert end_event.nodes == out
    assert len(instrumented.spans_of(method(mode), "completed")) == 1
    assert instrumented.spans_of(method(mode), "dropped") == []


@pytest.mark.parametrize("mode", MODES)
async def test_llama_index_empty_events_span_and_usage(
    mode: str, instrumented: Instrumented
) -> None:
    recorder = CallbackRecorder()
    endpoint = UsageEndpoint()
    rr = LlamaIndexRerank(
        api_key=TEST_KEY, transport=endpoint, callback_manager=CallbackManager([recorder])
    )
    assert await postprocess(rr, mode, []) == []

    assert [phase for phase, _, _ in recorder.reranking()] == ["start", "end"]
    end_payload = recorder.reranking()[1][1]
    assert end_payload is not None
    assert end_payload[USAGE_PAYLOAD_KEY] == Usage(None, None)  # nothing was sent
    assert len(instrumented.events.of(ReRankStartEvent)) == 1
    assert len(instrumented.events.of(ReRankEndEvent)) == 1
    assert len(instrumented.spans_of(method(mode), "completed")) == 1
    assert endpoint.bodies == []


@pytest.mark.parametrize("mode", MODES)
async def test_llama_index_error_events_and_dropped_span(
    mode: str, instrumented: Instrumented
) -> None:
    recorder = CallbackRecorder()
    rr = LlamaIndexRerank(
        api_key=TEST_KEY,
        transport=failing(),
        max_retries=0,
        callback_manager=CallbackManager([recorder]),
    )
    with pytest.raises(ServerError) as info:
        await postprocess(rr, mode, nodes())

    events = recorder.reranking()
    assert [phase for phase, _, _ in events] == ["start", "end"]
    assert events[1][1] is not None
    assert events[1][1][EventPayload.EXCEPTION] is info.value
    assert len(instrumented.events.of(ReRankStartEvent)) == 1
    assert instrumented.events.of(ReRankEndEvent) == []
    assert len(instrumented.spans_of(method(mode), "dropped")) == 1
    assert instrumented.spans_of(method(mode), "completed") == []


@pytest.mark.parametrize("mode", MODES)
async def test_llama_index_bad_call_leaves_no_dangling_event(
    mode: str, instrumented: Instrumented
) -> None:
    recorder = CallbackRecorder()
    rr = LlamaIndexRerank(
        api_key=TEST_KEY, transport=UsageEndpoint(), callback_manager=CallbackManager([recorder])
    )
    with pytest.raises(RerankInputError):
        await postprocess(rr, mode, nodes(), query="  ")
    assert recorder.reranking() == []
    assert instrumented.events.of(ReRankStartEvent) == []
