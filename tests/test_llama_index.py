"""Tests of the LlamaIndex adapter ``together_rerank_plugins.llama_index.TogetherRerank``.

No sockets: every call goes to the embedded ``LexicalRerankEndpoint`` or to an
``httpx.MockTransport`` that crafts the server's answer.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import random
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import together
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import (
    CallbackManager,
    CBEventType,
    EventPayload,
    LlamaDebugHandler,
)
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.instrumentation.events.span import SpanDropEvent
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from llama_index.core.llms.mock import MockLLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from together_rerank_plugins import (
    DEFAULT_MODEL,
    AuthenticationError,
    EndpointNotFoundError,
    MalformedResponseError,
    RerankConfigError,
    RerankError,
    RerankInputError,
    ServerError,
)
from together_rerank_plugins.llama_index import (
    RELEVANCE_SCORE_KEY,
    RETRIEVAL_SCORE_KEY,
    TogetherRerank,
)
from together_rerank_plugins.testing import LexicalRerankEndpoint, lexical_scores

from .conftest import TEST_KEY

QUERY = "What is the capital city of France and which river crosses it?"

CORPUS = [
    "Paris is the capital city of France; the river Seine crosses it.",
    "Berlin is the capital of Germany and the Spree river flows through the city.",
    "Lyon is a large city in France at the meeting of the Rhone and Saone rivers.",
    "The capital of Italy is Rome, crossed by the river Tiber.",
    "Madrid is the capital city of Spain and sits on the Manzanares river.",
    "France is famous for wine, cheese and bread.",
    "The Loire is the longest river in France.",
    "London is the capital of the United Kingdom and the Thames crosses the city.",
    "Marseille is a port city in the south of France.",
    "Vienna, the capital of Austria, lies on the Danube river.",
    "Bananas are rich in potassium and grow in tropical climates.",
    "The Eiffel Tower in Paris was built for the 1889 World's Fair.",
    "Python is a programming language popular for data science.",
    "Bordeaux is a city in France known for its wine region.",
    "The Rhine river flows through Switzerland, Germany and the Netherlands.",
    "Brussels is the capital of Belgium and of the European Union.",
    "Cats sleep for more than twelve hours a day.",
    "The Seine flows into the English Channel at Le Havre.",
    "Prague, the capital of the Czech Republic, is crossed by the Vltava river.",
    "Mount Everest is the highest mountain above sea level.",
    "Which city hosted the 2024 Summer Olympics? Paris, France.",
    "The Nile is often called the longest river in the world.",
    "Budapest, capital of Hungary, is split by the Danube into Buda and Pest.",
    "Coffee beans are the seeds of the Coffea plant.",
    "Lisbon, the capital of Portugal, stands on the Tagus river estuary.",
]


# -- helpers ------------------------------------------------------------------------------
class HashingEmbedding(BaseEmbedding):
    """Deterministic bag-of-words embedding: each word hashed (crc32) into a fixed bucket."""

    dim: int = 512

    @classmethod
    def class_name(cls) -> str:
        return "HashingEmbedding"

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        vec[0] = 0.01  # never a zero vector
        for word in re.findall(r"\w+", text.lower()):
            vec[1 + zlib.crc32(word.encode()) % (self.dim - 1)] += 1.0
        norm = math.sqrt(sum(x * x for x in vec))
        return [x / norm for x in vec]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)


class CallbackRecorder(BaseCallbackHandler):
    """Records every callback event start and end."""

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
        return "EventRecorder"

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class SpanRecorder(SimpleSpanHandler):
    entered: list[str] = Field(default_factory=list)

    def span_enter(self, id_: str, *args: Any, **kwargs: Any) -> None:
        self.entered.append(id_)
        super().span_enter(id_, *args, **kwargs)


class Instrumentation:
    def __init__(self, events: EventRecorder, spans: SpanRecorder) -> None:
        self.events = events
        self.spans = spans


@pytest.fixture
def instrumented() -> Iterator[Instrumentation]:
    """Event and span recorders attached to the root dispatcher, removed afterwards."""
    root = get_dispatcher()
    events = EventRecorder()
    spans = SpanRecorder(open_spans={}, completed_spans=[], dropped_spans=[], current_span_ids={})
    root.add_event_handler(events)
    root.add_span_handler(spans)
    try:
        yield Instrumentation(events, spans)
    finally:
        root.event_handlers.remove(events)
        root.span_handlers.remove(spans)


def make(transport: Any, **kwargs: Any) -> TogetherRerank:
    kwargs.setdefault("api_key", TEST_KEY)
    return TogetherRerank(transport=transport, **kwargs)


def nodes_of(texts: list[str], scores: list[float | None] | None = None) -> list[NodeWithScore]:
    scores = scores if scores is not None else [0.5] * len(texts)
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"node-{i}"), score=s)
        for i, (t, s) in enumerate(zip(texts, scores, strict=True))
    ]


def expected_ranking(query: str, texts: list[str], top_n: int | None) -> list[tuple[int, float]]:
    """(index, score) best first, as the lexical endpoint scores them."""
    scores = lexical_scores(query, texts)
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
    if top_n is not None:
        order = order[:top_n]
    return [(i, scores[i]) for i in order]


def answering(
    results: list[dict[str, Any]] | Callable[[dict[str, Any]], Any],
    seen: list[httpx.Request] | None = None,
) -> httpx.MockTransport:
    """A transport answering 200 with the given ``results`` (or ``results(body)``)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        body = json.loads(request.read())
        res = results(body) if callable(results) else results
        return httpx.Response(
            200, json={"object": "rerank", "model": body["model"], "results": res}
        )

    return httpx.MockTransport(handler)


def raw_answer(content: bytes, status: int = 200, calls: list[int] | None = None) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(1)
        return httpx.Response(status, content=content, headers={"content-type": "application/json"})

    return httpx.MockTransport(handler)


async def run(rerank: TogetherRerank, mode: str, nodes: list[NodeWithScore], **kw: Any) -> Any:
    if mode == "sync":
        return rerank.postprocess_nodes(nodes, **kw)
    return await rerank.apostprocess_nodes(nodes, **kw)


MODES = ["sync", "async"]

FRUIT = [
    "green pears and yellow bananas",
    "red apples are sweet",
    "red cars are fast",
    "apples and pears in a basket",
    "an apple a day keeps the doctor away",
    "red apples and green apples",
    "nothing relevant here",
    "sweet red fruit",
]
FRUIT_QUERY = "sweet red apples"


# -- 1. inside a real pipeline ------------------------------------------------------------
@pytest.fixture
def corpus_index() -> VectorStoreIndex:
    nodes = [TextNode(text=t, id_=f"doc-{i:02d}") for i, t in enumerate(CORPUS)]
    return VectorStoreIndex(nodes, embed_model=HashingEmbedding())


@pytest.mark.parametrize("mode", MODES)
async def test_query_engine_reranks_retrieved_nodes(
    corpus_index: VectorStoreIndex,
    endpoint: LexicalRerankEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    # Settings.callback_manager is what the query engine hands its postprocessors
    debug = LlamaDebugHandler(print_trace_on_end=False)
    monkeypatch.setattr(Settings, "_callback_manager", CallbackManager([debug]))
    # response_mode="no_text" builds its synthesizer from Settings.llm, not from `llm=`
    monkeypatch.setattr(Settings, "_llm", MockLLM())
    engine = corpus_index.as_query_engine(
        llm=MockLLM(),
        response_mode="no_text",
        similarity_top_k=20,
        node_postprocessors=[TogetherRerank(top_n=5, api_key=TEST_KEY, transport=endpoint)],
    )
    retrieved = corpus_index.as_retriever(similarity_top_k=20).retrieve(QUERY)
    assert len(retrieved) == 20

    response = engine.query(QUERY) if mode == "sync" else await engine.aquery(QUERY)

    # the endpoint received exactly the 20 retrieved texts, in retrieval order
    assert len(endpoint.requests) == 1
    sent = endpoint.requests[0]
    assert sent["query"] == QUERY
    assert sent["documents"] == [n.node.get_content(MetadataMode.EMBED) for n in retrieved]
    assert sent["top_n"] == 5

    # the 5 best by the endpoint's own scores, best first, ids and texts preserved
    expected = expected_ranking(QUERY, sent["documents"], 5)
    got = response.source_nodes
    assert len(got) == 5
    assert [n.node.node_id for n in got] == [retrieved[i].node.node_id for i, _ in expected]
    assert [n.score for n in got] == [s for _, s in expected]
    assert [n.score for n in got] == sorted((n.score for n in got), reverse=True)
    by_id = {f"doc-{i:02d}": t for i, t in enumerate(CORPUS)}
    retrieval_scores = {n.node.node_id: n.score for n in retrieved}
    for n in got:
        assert n.node.get_content(MetadataMode.NONE) == by_id[n.node.node_id]
        assert n.node.metadata[RETRIEVAL_SCORE_KEY] == pytest.approx(
            retrieval_scores[n.node.node_id]
        )
    # the rerank actually changed the retriever's choice or order
    assert [n.node.node_id for n in got] != [n.node.node_id for n in retrieved[:5]]

    # the engine's callback manager saw one RERANKING event pair
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 1
    assert pairs[0][1].payload[EventPayload.NODES] == got


# -- 2. the text sent -----------------------------------------------------------------------
def _rich_node() -> NodeWithScore:
    node = TextNode(
        text="Paris is the capital of France.",
        id_="rich",
        metadata={"title": "Paris guide", "internal_id": "zz-internal-991", "llm_only": "ll"},
        excluded_embed_metadata_keys=["internal_id", "llm_only"],
        excluded_llm_metadata_keys=["internal_id"],
    )
    return NodeWithScore(node=node, score=0.3)


def test_sends_embed_content_by_default(endpoint: LexicalRerankEndpoint) -> None:
    nws = _rich_node()
    make(endpoint).postprocess_nodes([nws], query_str="capital of France")
    (doc,) = endpoint.requests[0]["documents"]
    assert doc == nws.node.get_content(metadata_mode=MetadataMode.EMBED)
    assert "Paris guide" in doc
    assert "zz-internal-991" not in doc
    assert "llm_only" not in doc


@pytest.mark.parametrize("mode", [MetadataMode.NONE, MetadataMode.LLM, MetadataMode.ALL])
def test_sent_text_follows_metadata_mode(
    endpoint: LexicalRerankEndpoint, mode: MetadataMode
) -> None:
    nws = _rich_node()
    make(endpoint, metadata_mode=mode).postprocess_nodes([nws], query_str="capital of France")
    (doc,) = endpoint.requests[0]["documents"]
    assert doc == nws.node.get_content(metadata_mode=mode)
    assert ("Paris guide" in doc) is (mode != MetadataMode.NONE)
    assert ("zz-internal-991" in doc) is (mode == MetadataMode.ALL)


# -- 3. output nodes ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_output_is_new_nodes_and_inputs_are_untouched(
    endpoint: LexicalRerankEndpoint, mode: str
) -> None:
    texts = ["red apples", "green pears", "red cars", "sweet red apples"]
    nodes = nodes_of(texts, [0.9, 0.1, None, 0.4])
    for i, n in enumerate(nodes):
        n.node.metadata.update({"source": f"s{i}"})
    snapshot = copy.deepcopy([n.model_dump() for n in nodes])
    node_objs = [n.node for n in nodes]
    meta_objs = [n.node.metadata for n in nodes]
    meta_snapshot = [dict(m) for m in meta_objs]
    excluded = [
        (list(n.node.excluded_llm_metadata_keys), list(n.node.excluded_embed_metadata_keys))
        for n in nodes
    ]

    out = await run(make(endpoint, top_n=None), mode, nodes, query_str=FRUIT_QUERY)

    # callers' objects unchanged, by value and by identity
    assert [n.model_dump() for n in nodes] == snapshot
    assert [n.node for n in nodes] == node_objs
    assert all(n.node is o for n, o in zip(nodes, node_objs, strict=True))
    assert all(n.node.metadata is m for n, m in zip(nodes, meta_objs, strict=True))
    assert meta_objs == meta_snapshot
    assert [
        (n.node.excluded_llm_metadata_keys, n.node.excluded_embed_metadata_keys) for n in nodes
    ] == excluded

    expected = expected_ranking(FRUIT_QUERY, texts, None)
    assert [(n.node.node_id, n.score) for n in out] == [(f"node-{i}", s) for i, s in expected]
    for o in out:
        assert all(o is not n for n in nodes)
        src = nodes[int(o.node.node_id.split("-")[1])]
        assert o.node.get_content(MetadataMode.NONE) == src.node.get_content(MetadataMode.NONE)
        assert o.node.metadata["source"] == src.node.metadata["source"]
        # always present (None without a retrieval score), never in LLM or embedding text
        assert o.node is not src.node
        assert o.node.metadata[RETRIEVAL_SCORE_KEY] == src.score
        assert RETRIEVAL_SCORE_KEY not in o.node.get_content(MetadataMode.LLM)
        assert RETRIEVAL_SCORE_KEY not in o.node.get_content(MetadataMode.EMBED)
        assert RETRIEVAL_SCORE_KEY in o.node.get_content(MetadataMode.ALL)
        # the rerank score under the key LangChain's documents use too, also kept out of
        # prompts: code written for either adapter reads metadata["relevance_score"]
        assert o.node.metadata[RELEVANCE_SCORE_KEY] == o.score
        assert RELEVANCE_SCORE_KEY not in o.node.get_content(MetadataMode.LLM)
        assert RELEVANCE_SCORE_KEY not in o.node.get_content(MetadataMode.EMBED)


def test_retrieval_score_key_not_duplicated_in_exclusions(
    endpoint: LexicalRerankEndpoint,
) -> None:
    node = TextNode(
        text="red apples",
        excluded_llm_metadata_keys=[RETRIEVAL_SCORE_KEY],
        excluded_embed_metadata_keys=[],
    )
    (out,) = make(endpoint).postprocess_nodes([NodeWithScore(node=node, score=0.2)], query_str="x")
    assert out.node.excluded_llm_metadata_keys.count(RETRIEVAL_SCORE_KEY) == 1
    assert out.node.excluded_embed_metadata_keys == [RELEVANCE_SCORE_KEY, RETRIEVAL_SCORE_KEY]
    assert node.excluded_embed_metadata_keys == []


# -- 4. top_n and score_threshold -------------------------------------------------------------
def test_top_n_defaults_to_5(endpoint: LexicalRerankEndpoint) -> None:
    rerank = make(endpoint)
    assert rerank.top_n == 5
    out = rerank.postprocess_nodes(nodes_of(FRUIT), query_str=FRUIT_QUERY)
    assert [(n.node.node_id, n.score) for n in out] == [
        (f"node-{i}", s) for i, s in expected_ranking(FRUIT_QUERY, FRUIT, 5)
    ]
    assert endpoint.requests[0]["top_n"] == 5


@pytest.mark.parametrize("top_n", [None, len(FRUIT), 50])
def test_top_n_none_or_large_returns_all(
    endpoint: LexicalRerankEndpoint, top_n: int | None
) -> None:
    out = make(endpoint, top_n=top_n).postprocess_nodes(nodes_of(FRUIT), query_str=FRUIT_QUERY)
    assert len(out) == len(FRUIT)
    assert [(n.node.node_id, n.score) for n in out] == [
        (f"node-{i}", s) for i, s in expected_ranking(FRUIT_QUERY, FRUIT, None)
    ]
    assert endpoint.requests[0]["documents"] == FRUIT


@pytest.mark.parametrize("mode", MODES)
async def test_score_threshold_drops_low_scores_after_top_n(
    endpoint: LexicalRerankEndpoint, mode: str
) -> None:
    ranking = expected_ranking(FRUIT_QUERY, FRUIT, 4)
    distinct = sorted({s for _, s in ranking}, reverse=True)
    assert len(distinct) >= 2
    threshold = distinct[1]  # keeps the results scoring exactly the threshold
    rerank = make(endpoint, top_n=4, score_threshold=threshold)
    out = await run(rerank, mode, nodes_of(FRUIT), query_str=FRUIT_QUERY)
    want = [(f"node-{i}", s) for i, s in ranking if s >= threshold]
    assert [(n.node.node_id, n.score) for n in out] == want
    assert 0 < len(out) < 4
    assert all(n.score >= threshold for n in out)


@pytest.mark.parametrize("top_n", [0, -1])
def test_top_n_below_one_is_a_config_error(endpoint: LexicalRerankEndpoint, top_n: int) -> None:
    with pytest.raises(RerankConfigError, match="top_n") as info:
        make(endpoint, top_n=top_n)
    assert isinstance(info.value, ValueError)
    assert endpoint.requests == []


# -- 5. inputs that send nothing --------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_empty_nodes_return_empty_without_request(
    endpoint: LexicalRerankEndpoint, mode: str
) -> None:
    out = await run(make(endpoint), mode, [], query_str="anything")
    assert out == []
    assert endpoint.requests == []


@pytest.mark.parametrize("mode", MODES)
async def test_missing_query_raises_before_any_request_or_event(
    endpoint: LexicalRerankEndpoint, instrumented: Instrumentation, mode: str
) -> None:
    recorder = CallbackRecorder()
    rerank = make(endpoint, callback_manager=CallbackManager([recorder]))
    with pytest.raises(RerankInputError, match="query"):
        await run(rerank, mode, nodes_of(FRUIT))
    assert endpoint.requests == []
    assert recorder.reranking() == []
    assert instrumented.events.of(ReRankStartEvent) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
async def test_blank_query_is_a_value_error_without_request(
    endpoint: LexicalRerankEndpoint, mode: str, query: str
) -> None:
    with pytest.raises(ValueError, match="empty") as info:
        await run(make(endpoint), mode, nodes_of(FRUIT), query_bundle=QueryBundle(query))
    assert isinstance(info.value, RerankInputError)
    assert endpoint.requests == []


# -- 6. events and spans ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_callback_reranking_event(endpoint: LexicalRerankEndpoint, mode: str) -> None:
    recorder = CallbackRecorder()
    rerank = make(endpoint, top_n=3, callback_manager=CallbackManager([recorder]))
    nodes = nodes_of(FRUIT)
    out = await run(rerank, mode, nodes, query_str=FRUIT_QUERY)

    events = recorder.reranking()
    assert [phase for phase, _, _ in events] == ["start", "end"]
    (_, start, start_id), (_, end, end_id) = events
    assert start_id == end_id
    assert start is not None
    assert start[EventPayload.NODES] == nodes
    assert start[EventPayload.MODEL_NAME] == DEFAULT_MODEL
    assert start[EventPayload.QUERY_STR] == FRUIT_QUERY
    assert start[EventPayload.TOP_K] == 3
    assert end is not None
    assert end[EventPayload.NODES] == out
    assert len(out) == 3


@pytest.mark.parametrize("mode", MODES)
async def test_instrumentation_rerank_events(
    endpoint: LexicalRerankEndpoint, instrumented: Instrumentation, mode: str
) -> None:
    rerank = make(endpoint, top_n=2, model="my-org/my-ranker")
    nodes = nodes_of(FRUIT)
    out = await run(rerank, mode, nodes, query_str=FRUIT_QUERY)

    starts = instrumented.events.of(ReRankStartEvent)
    ends = instrumented.events.of(ReRankEndEvent)
    assert len(starts) == 1
    assert len(ends) == 1
    (start,), (end,) = starts, ends
    assert start.query.query_str == FRUIT_QUERY
    assert start.nodes == nodes
    assert start.top_n == 2
    assert start.model_name == "my-org/my-ranker"
    assert end.nodes == out
    assert len(out) == 2
    kinds = [type(e) for e in instrumented.events.events]
    assert kinds.index(ReRankStartEvent) < kinds.index(ReRankEndEvent)


@pytest.mark.parametrize("mode", MODES)
async def test_start_event_top_n_is_an_int_when_top_n_is_none(
    endpoint: LexicalRerankEndpoint, instrumented: Instrumentation, mode: str
) -> None:
    recorder = CallbackRecorder()
    rerank = make(endpoint, top_n=None, callback_manager=CallbackManager([recorder]))
    out = await run(rerank, mode, nodes_of(FRUIT), query_str=FRUIT_QUERY)
    assert len(out) == len(FRUIT)
    (start,) = instrumented.events.of(ReRankStartEvent)
    assert start.top_n == len(FRUIT)
    assert recorder.reranking()[0][1][EventPayload.TOP_K] == len(FRUIT)


@pytest.mark.parametrize("mode", MODES)
async def test_empty_candidates_emit_start_and_end(
    endpoint: LexicalRerankEndpoint, instrumented: Instrumentation, mode: str
) -> None:
    recorder = CallbackRecorder()
    rerank = make(endpoint, callback_manager=CallbackManager([recorder]))
    out = await run(rerank, mode, [], query_str=FRUIT_QUERY)
    assert out == []
    (start,) = instrumented.events.of(ReRankStartEvent)
    (end,) = instrumented.events.of(ReRankEndEvent)
    assert start.nodes == []
    assert end.nodes == []
    assert [phase for phase, _, _ in recorder.reranking()] == ["start", "end"]
    assert endpoint.requests == []


@pytest.mark.parametrize("mode", MODES)
async def test_server_error_ends_event_and_drops_span(
    instrumented: Instrumentation, mode: str
) -> None:
    calls: list[int] = []
    transport = raw_answer(
        json.dumps({"error": {"message": "boom", "type": "server_error"}}).encode(), 500, calls
    )
    recorder = CallbackRecorder()
    rerank = make(transport, max_retries=0, callback_manager=CallbackManager([recorder]))

    with pytest.raises(ServerError) as info:
        await run(rerank, mode, nodes_of(FRUIT), query_str=FRUIT_QUERY)

    assert calls == [1]  # max_retries=0: one attempt
    assert info.value.status_code == 500
    assert isinstance(info.value.__cause__, together.APIStatusError)
    assert isinstance(info.value, RerankError)
    # the callback event was closed, carrying the exception
    events = recorder.reranking()
    assert [phase for phase, _, _ in events] == ["start", "end"]
    assert events[1][1] is not None
    assert events[1][1][EventPayload.EXCEPTION] is info.value
    assert instrumented.events.of(ReRankEndEvent) == []
    # the span around the hook was dropped with the error
    method = "_postprocess_nodes" if mode == "sync" else "_apostprocess_nodes"
    dropped = [
        s for s in instrumented.spans.dropped_spans if s.id_.startswith(f"TogetherRerank.{method}-")
    ]
    assert len(dropped) == 1
    drops = [e for e in instrumented.events.of(SpanDropEvent) if e.span_id == dropped[0].id_]
    assert len(drops) == 1
    assert "500" in drops[0].err_str


async def test_apostprocess_nodes_runs_in_a_dispatcher_span(
    endpoint: LexicalRerankEndpoint, instrumented: Instrumentation
) -> None:
    out = await make(endpoint).apostprocess_nodes(nodes_of(FRUIT), query_str=FRUIT_QUERY)
    assert len(out) == 5
    entered = [i for i in instrumented.spans.entered if "_apostprocess_nodes" in i]
    assert len(entered) == 1
    assert entered[0].startswith("TogetherRerank._apostprocess_nodes-")
    completed = [s.id_ for s in instrumented.spans.completed_spans]
    assert entered[0] in completed


def test_postprocess_nodes_runs_in_a_dispatcher_span(
    endpoint: LexicalRerankEndpoint, instrumented: Instrumentation
) -> None:
    make(endpoint).postprocess_nodes(nodes_of(FRUIT), query_str=FRUIT_QUERY)
    entered = [i for i in instrumented.spans.entered if "_postprocess_nodes" in i]
    assert len(entered) == 1
    assert entered[0].startswith("TogetherRerank._postprocess_nodes-")


# -- 7. native async ------------------------------------------------------------------------
async def test_async_uses_no_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    handler_threads: list[int] = []
    inner = LexicalRerankEndpoint()

    def handler(request: httpx.Request) -> httpx.Response:
        handler_threads.append(threading.get_ident())
        return inner.handle(request)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("apostprocess_nodes used a worker thread")

    rerank = make(httpx.MockTransport(handler))
    # The SDK's first call on a new client detects the platform once in a worker thread
    # (together._base_client: asyncify(get_platform)); that is the SDK's one-off cost.
    await rerank.apostprocess_nodes(nodes_of(FRUIT), query_str="green pears")

    monkeypatch.setattr(asyncio, "to_thread", forbidden)
    monkeypatch.setattr(loop, "run_in_executor", forbidden)
    out = await rerank.apostprocess_nodes(nodes_of(FRUIT), query_str=FRUIT_QUERY)

    assert [n.score for n in out] == [s for _, s in expected_ranking(FRUIT_QUERY, FRUIT, 5)]
    assert handler_threads == [threading.get_ident()] * 2
    assert rerank.client._sdk._sync is None  # the sync SDK client was never built


async def test_async_client_reused_on_one_loop(endpoint: LexicalRerankEndpoint) -> None:
    rerank = make(endpoint)
    await rerank.apostprocess_nodes(nodes_of(FRUIT), query_str=FRUIT_QUERY)
    first = rerank.client._sdk._async[asyncio.get_running_loop()]
    await rerank.apostprocess_nodes(nodes_of(FRUIT), query_str="green pears")
    assert len(endpoint.requests) == 2
    assert len(rerank.client._sdk._async) == 1
    assert rerank.client._sdk._async[asyncio.get_running_loop()] is first
    await rerank.client.aclose()


def test_new_async_client_for_a_new_loop(endpoint: LexicalRerankEndpoint) -> None:
    rerank = make(endpoint)

    async def once() -> Any:
        out = await rerank.apostprocess_nodes(nodes_of(FRUIT), query_str=FRUIT_QUERY)
        assert len(out) == 5
        client = rerank.client._sdk._async[asyncio.get_running_loop()]
        await rerank.client.aclose()
        return client

    first = asyncio.run(once())
    second = asyncio.run(once())
    assert first is not second
    assert len(endpoint.requests) == 2


# -- 8. configuration -------------------------------------------------------------------------
def test_class_name() -> None:
    assert TogetherRerank.class_name() == "TogetherRerank"
    assert make(LexicalRerankEndpoint()).to_dict()["class_name"] == "TogetherRerank"


def test_serialization_never_contains_the_key(endpoint: LexicalRerankEndpoint) -> None:
    rerank = make(endpoint, top_n=3)
    for text in (str(rerank.to_dict()), rerank.to_json(), repr(rerank), str(rerank)):
        assert TEST_KEY not in text
    assert "api_key" not in rerank.to_dict()


def test_from_dict_round_trips(
    monkeypatch: pytest.MonkeyPatch, endpoint: LexicalRerankEndpoint
) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", TEST_KEY)
    rerank = TogetherRerank(
        top_n=3,
        model="org/ranker",
        base_url="https://rerank.example/v1",
        timeout=12.5,
        max_retries=1,
        score_threshold=0.1,
        metadata_mode=MetadataMode.NONE,
    )
    data = rerank.to_dict()
    assert TEST_KEY not in rerank.to_json()

    restored = TogetherRerank.from_dict(data)
    assert restored.to_dict() == data
    assert TogetherRerank.from_json(rerank.to_json()).to_dict() == data
    assert restored.client.base_url == "https://rerank.example"
    assert restored.metadata_mode == MetadataMode.NONE

    # the restored instance really works, with the key from the environment
    working = TogetherRerank.from_dict(data, transport=endpoint)
    out = working.postprocess_nodes(nodes_of(FRUIT), query_str=FRUIT_QUERY)
    assert endpoint.requests[0]["model"] == "org/ranker"
    assert endpoint.requests[0]["top_n"] == 3
    assert len(out) <= 3


def test_key_passed_as_argument_is_not_serialized(endpoint: LexicalRerankEndpoint) -> None:
    data = make(endpoint).to_dict()
    with pytest.raises(RerankConfigError, match="TOGETHER_API_KEY"):
        TogetherRerank.from_dict(data)


@pytest.mark.parametrize(
    ("bad", "closest"), [({"topn": 3}, "top_n"), ({"top_k": 3}, "top_n"), ({"modle": "x"}, "model")]
)
def test_unknown_argument_is_rejected_by_name(
    endpoint: LexicalRerankEndpoint, bad: dict[str, Any], closest: str
) -> None:
    with pytest.raises(RerankConfigError) as info:
        make(endpoint, **bad)
    (name,) = bad
    message = str(info.value)
    assert f"unknown argument {name!r}" in message
    assert f"did you mean {closest!r}?" in message  # the closest known one,
    assert "max_concurrency" not in message  # not the list of every argument
    assert TEST_KEY not in message


def test_an_unknown_argument_like_no_known_one_lists_them(endpoint: LexicalRerankEndpoint) -> None:
    with pytest.raises(RerankConfigError, match="unknown argument 'colour'") as info:
        make(endpoint, colour="red")
    assert "top_n" in str(info.value)
    assert "metadata_mode" in str(info.value)


def _recording_transport(seen: list[httpx.Request]) -> httpx.MockTransport:
    return answering(
        lambda body: [
            {"index": i, "relevance_score": 1.0 / (i + 1)} for i in range(len(body["documents"]))
        ],
        seen,
    )


def test_arguments_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOGETHER_RERANK_MODEL", "env/model")
    monkeypatch.setenv("TOGETHER_BASE_URL", "https://env.example")
    monkeypatch.setenv("TOGETHER_API_KEY", "env-key-zzzzzzzzzzzz")
    seen: list[httpx.Request] = []
    rerank = make(_recording_transport(seen), model="arg/model", base_url="https://arg.example")
    rerank.postprocess_nodes(nodes_of(FRUIT), query_str=FRUIT_QUERY)
    (request,) = seen
    assert str(request.url) == "https://arg.example/v1/rerank"
    assert json.loads(request.read())["model"] == "arg/model"
    assert request.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert rerank.to_dict()["model"] == "arg/model"


def test_environment_beats_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOGETHER_RERANK_MODEL", "env/model")
    monkeypatch.setenv("TOGETHER_BASE_URL", "https://env.example/v1")
    monkeypatch.setenv("TOGETHER_API_KEY", "env-key-zzzzzzzzzzzz")
    seen: list[httpx.Request] = []
    rerank = TogetherRerank(transport=_recording_transport(seen))
    rerank.postprocess_nodes(nodes_of(FRUIT), query_str=FRUIT_QUERY)
    (request,) = seen
    assert str(request.url) == "https://env.example/v1/rerank"
    assert json.loads(request.read())["model"] == "env/model"
    assert request.headers["authorization"] == "Bearer env-key-zzzzzzzzzzzz"
    data = rerank.to_dict()
    assert (data["model"], data["base_url"]) == ("env/model", "https://env.example")


def test_defaults_without_environment() -> None:
    seen: list[httpx.Request] = []
    rerank = make(_recording_transport(seen))
    rerank.postprocess_nodes(nodes_of(FRUIT), query_str=FRUIT_QUERY)
    (request,) = seen
    assert str(request.url) == "https://api.together.ai/v1/rerank"
    assert json.loads(request.read())["model"] == DEFAULT_MODEL


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("http://localhost:8000", "http://localhost:8000/v1/rerank"),
        ("http://localhost:8000/v1", "http://localhost:8000/v1/rerank"),
        ("http://localhost:8000/v1/", "http://localhost:8000/v1/rerank"),
        ("https://proxy.example/together", "https://proxy.example/together/v1/rerank"),
        ("https://proxy.example/together/v1", "https://proxy.example/together/v1/rerank"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
async def test_base_url_with_or_without_v1(base_url: str, expected: str, mode: str) -> None:
    seen: list[httpx.Request] = []
    rerank = make(_recording_transport(seen), base_url=base_url)
    out = await run(rerank, mode, nodes_of(FRUIT), query_str=FRUIT_QUERY)
    assert len(out) == 5
    (request,) = seen
    assert str(request.url) == expected


def test_missing_key_is_a_config_error() -> None:
    with pytest.raises(RerankConfigError, match="TOGETHER_API_KEY") as info:
        TogetherRerank(transport=LexicalRerankEndpoint())
    assert isinstance(info.value, ValueError)


# -- 9. errors ------------------------------------------------------------------------------
_TWO = ["red apples", "green pears"]

MALFORMED = {
    "index out of range": [
        {"index": 0, "relevance_score": 0.9},
        {"index": 2, "relevance_score": 0.5},
    ],
    "negative index": [
        {"index": -1, "relevance_score": 0.9},
        {"index": 0, "relevance_score": 0.5},
    ],
    "repeated index": [
        {"index": 0, "relevance_score": 0.9},
        {"index": 0, "relevance_score": 0.5},
    ],
    "missing score": [{"index": 0, "relevance_score": 0.9}, {"index": 1}],
    "string score": [
        {"index": 0, "relevance_score": "0.9"},
        {"index": 1, "relevance_score": 0.5},
    ],
    "too few results": [{"index": 0, "relevance_score": 0.9}],
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_results_raise(case: str, mode: str) -> None:
    rerank = make(answering(MALFORMED[case]), top_n=None, max_retries=0)
    with pytest.raises(MalformedResponseError) as info:
        await run(rerank, mode, nodes_of(_TWO), query_str="red apples")
    assert isinstance(info.value, RerankError)
    assert TEST_KEY not in str(info.value)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_score_raises(mode: str, token: str) -> None:
    results = (
        f'[{{"index": 0, "relevance_score": {token}}}, {{"index": 1, "relevance_score": 0.5}}]'
    )
    content = ('{"object": "rerank", "results": ' + results + "}").encode()
    rerank = make(raw_answer(content), top_n=None, max_retries=0)
    with pytest.raises(MalformedResponseError, match="finite"):
        await run(rerank, mode, nodes_of(_TWO), query_str="red apples")


@pytest.mark.parametrize("mode", MODES)
async def test_invalid_json_raises(mode: str) -> None:
    rerank = make(raw_answer(b"<html>not json</html>"), max_retries=0)
    with pytest.raises(MalformedResponseError):
        await run(rerank, mode, nodes_of(_TWO), query_str="red apples")


def _error_body(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "x"}}).encode()


@pytest.mark.parametrize("mode", MODES)
async def test_404_is_endpoint_not_found(mode: str) -> None:
    calls: list[int] = []
    transport = raw_answer(_error_body(f"Unable to access model (key {TEST_KEY})"), 404, calls)
    rerank = make(transport, model="org/missing", max_retries=0)
    with pytest.raises(EndpointNotFoundError) as info:
        await run(rerank, mode, nodes_of(_TWO), query_str="red apples")
    message = str(info.value)
    assert "dedicated endpoint" in message
    assert "org/missing" in message
    assert TEST_KEY not in message
    assert TEST_KEY not in repr(info.value)
    assert info.value.status_code == 404
    assert isinstance(info.value, RerankError)
    assert isinstance(info.value.__cause__, together.APIStatusError)
    assert calls == [1]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_is_authentication_error(mode: str, status: int) -> None:
    transport = raw_answer(_error_body(f"Invalid API key provided: {TEST_KEY}"), status)
    rerank = make(transport, max_retries=0)
    with pytest.raises(AuthenticationError) as info:
        await run(rerank, mode, nodes_of(_TWO), query_str="red apples")
    assert info.value.status_code == status
    assert "TOGETHER_API_KEY" in str(info.value)
    assert TEST_KEY not in str(info.value)
    assert TEST_KEY not in repr(info.value)
    assert TEST_KEY not in (info.value.server_message or "")
    assert isinstance(info.value, RerankError)


async def test_embedded_endpoint_rejects_wrong_key() -> None:
    endpoint = LexicalRerankEndpoint(api_keys={"the-right-key-123456"})
    rerank = make(endpoint, max_retries=0)
    with pytest.raises(AuthenticationError):
        await rerank.apostprocess_nodes(nodes_of(_TWO), query_str="red apples")
    assert endpoint.requests == []


# -- 10. the server's order is not trusted ----------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("top_n", [None, 3])
async def test_scrambled_server_order_is_sorted(mode: str, top_n: int | None) -> None:
    scores = lexical_scores(FRUIT_QUERY, FRUIT)

    def scrambled(body: dict[str, Any]) -> list[dict[str, Any]]:
        # a server that ignores top_n and answers in an arbitrary order
        items = [{"index": i, "relevance_score": s} for i, s in enumerate(scores)]
        random.Random(7).shuffle(items)
        return items

    rerank = make(answering(scrambled), top_n=top_n, max_retries=0)
    out = await run(rerank, mode, nodes_of(FRUIT), query_str=FRUIT_QUERY)
    assert [(n.node.node_id, n.score) for n in out] == [
        (f"node-{i}", s) for i, s in expected_ranking(FRUIT_QUERY, FRUIT, top_n)
    ]
    served = [item["index"] for item in scrambled({})]
    assert served != sorted(served, key=lambda i: (-scores[i], i))  # really scrambled


# -- what a reader sees: repr and misspelled arguments --------------------------------------
def test_repr_is_short_and_true_with_key_and_family_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Resolved model and host, settings that differ from defaults, whether a key is set:
    no CallbackManager address, no MetadataMode enum, no None for what the env supplied."""
    monkeypatch.setenv("TOGETHER_API_KEY", TEST_KEY)
    monkeypatch.setenv("TOGETHER_RERANK_MODEL", "acme/rerank-prod")
    monkeypatch.setenv("TOGETHER_RERANK_MODEL_FAMILY", "mxbai")
    assert repr(TogetherRerank()) == (
        "TogetherRerank(model='acme/rerank-prod', model_family='mxbai', "
        "base_url='https://api.together.ai', api_key=<set, from TOGETHER_API_KEY>)"
    )
    tuned = TogetherRerank(
        api_key="another-key-0123456789", top_n=3, metadata_mode=MetadataMode.LLM, timeout=5
    )
    assert repr(tuned) == (
        "TogetherRerank(model='acme/rerank-prod', model_family='mxbai', "
        "base_url='https://api.together.ai', top_n=3, timeout=5.0, metadata_mode='llm', "
        "api_key=<set>)"
    )
    assert str(tuned).startswith("model='acme/rerank-prod' ")
    for text in (repr(tuned), str(tuned)):
        assert "another-key" not in text
        assert TEST_KEY not in text
        assert " at 0x" not in text
