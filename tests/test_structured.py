"""Structured documents: ``rank_fields`` in the core and both adapters (Llama-Rank only).

Requests go to the embedded lexical endpoint (which ranks mapping documents by the named
fields, as the API documents) or to ``httpx.MockTransport`` handlers: no socket is opened.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import inspect
import json
import uuid
from pathlib import PurePosixPath
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from llama_index.core.callbacks import CallbackManager, CBEventType
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from together_rerank_plugins import (
    BadRequestError,
    RerankClient,
    RerankConfigError,
    RerankInputError,
)
from together_rerank_plugins.langchain import RELEVANCE_SCORE_KEY
from together_rerank_plugins.langchain import TogetherRerank as LangChainRerank
from together_rerank_plugins.llama_index import TogetherRerank as LlamaIndexRerank
from together_rerank_plugins.testing import LexicalRerankEndpoint

from .conftest import TEST_KEY

MXBAI = "mixedbread-ai/Mxbai-Rerank-Large-V2"
MODES = ["sync", "async"]

# The text of record 0 matches "red apples"; the title of record 1 does.
RECORDS = [
    {"title": "Orchard notes", "year": 2020, "text": "Red apples ripen in the autumn sun."},
    {"title": "Red apples", "year": 2021, "text": "A short note on fruit."},
    {"title": "Bananas", "year": 2022, "text": "Yellow, sweet and rich in potassium."},
]
QUERY = "red apples"


def nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(
            node=TextNode(
                text=r["text"], id_=f"n{i}", metadata={"title": r["title"], "year": r["year"]}
            ),
            score=0.5,
        )
        for i, r in enumerate(RECORDS)
    ]


def documents() -> list[Document]:
    return [
        Document(r["text"], id=f"d{i}", metadata={"title": r["title"], "year": r["year"]})
        for i, r in enumerate(RECORDS)
    ]


def llama(transport: Any, **kwargs: Any) -> LlamaIndexRerank:
    return LlamaIndexRerank(api_key=TEST_KEY, transport=transport, max_retries=0, **kwargs)


def langchain(transport: Any, **kwargs: Any) -> LangChainRerank:
    return LangChainRerank(api_key=TEST_KEY, transport=transport, max_retries=0, **kwargs)


async def postprocess(rr: LlamaIndexRerank, mode: str, items: list[NodeWithScore]) -> Any:
    if mode == "sync":
        return rr.postprocess_nodes(items, query_str=QUERY)
    return await rr.apostprocess_nodes(items, query_str=QUERY)


async def compress(rr: LangChainRerank, mode: str, items: list[Document]) -> Any:
    if mode == "sync":
        return rr.compress_documents(items, QUERY)
    return await rr.acompress_documents(items, QUERY)


async def outcome(call: Any) -> Any:
    """Run a sync call, or await an async one."""
    result = call()
    return await result if inspect.isawaitable(result) else result


# -- LlamaIndex ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_llama_index_sends_metadata_fields_and_text(mode: str) -> None:
    endpoint = LexicalRerankEndpoint()
    rr = llama(endpoint, rank_fields=["title", "text"], top_n=None)
    items = nodes()
    out = await postprocess(rr, mode, items)

    (body,) = endpoint.requests
    assert body["rank_fields"] == ["title", "text"]
    assert body["documents"] == [
        {"title": r["title"], "text": n.node.get_content(MetadataMode.NONE)}
        for r, n in zip(RECORDS, items, strict=True)
    ]
    # the text is the node's own text, without the metadata header EMBED mode would add
    assert all("title:" not in d["text"] for d in body["documents"])
    assert "title: Orchard notes" in items[0].node.get_content(MetadataMode.EMBED)
    # the nodes come back whole, ranked
    assert out[0].node.node_id in {"n0", "n1"}
    assert {n.node.node_id for n in out} == {"n0", "n1", "n2"}
    assert out[0].node.metadata["title"] in {"Orchard notes", "Red apples"}


@pytest.mark.parametrize(
    ("fields", "best"), [(["title"], "n1"), (["text"], "n0"), (["year", "text"], "n0")]
)
def test_llama_index_ranks_by_the_named_fields(fields: list[str], best: str) -> None:
    endpoint = LexicalRerankEndpoint()
    out = llama(endpoint, rank_fields=fields, top_n=1).postprocess_nodes(nodes(), query_str=QUERY)
    assert [n.node.node_id for n in out] == [best]
    assert all(set(d) == set(fields) for d in endpoint.requests[0]["documents"])


def test_llama_index_rank_fields_per_call_with_options() -> None:
    endpoint = LexicalRerankEndpoint()
    shared = llama(endpoint, top_n=1)
    by_title = shared.with_options(rank_fields=["title"])
    assert [n.node.node_id for n in by_title.postprocess_nodes(nodes(), query_str=QUERY)] == ["n1"]
    assert endpoint.requests[-1]["rank_fields"] == ["title"]
    # the shared instance still sends plain strings
    shared.postprocess_nodes(nodes(), query_str=QUERY)
    assert "rank_fields" not in endpoint.requests[-1]
    assert all(isinstance(d, str) for d in endpoint.requests[-1]["documents"])
    assert shared.rank_fields is None


@pytest.mark.parametrize("mode", MODES)
async def test_llama_index_without_rank_fields_sends_strings(mode: str) -> None:
    endpoint = LexicalRerankEndpoint()
    items = nodes()
    await postprocess(llama(endpoint), mode, items)
    (body,) = endpoint.requests
    assert "rank_fields" not in body
    assert body["documents"] == [n.node.get_content(MetadataMode.EMBED) for n in items]


class _Events(BaseCallbackHandler):
    def __init__(self) -> None:
        super().__init__([], [])
        self.seen: list[CBEventType] = []

    def on_event_start(self, event_type: CBEventType, *a: Any, **k: Any) -> str:
        self.seen.append(event_type)
        return ""

    def on_event_end(self, event_type: CBEventType, *a: Any, **k: Any) -> None:
        self.seen.append(event_type)

    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(self, trace_id: str | None = None, trace_map: Any = None) -> None:
        return None


@pytest.mark.parametrize("mode", MODES)
async def test_llama_index_node_missing_a_field_is_named(mode: str) -> None:
    endpoint = LexicalRerankEndpoint()
    events = _Events()
    rr = llama(endpoint, rank_fields=["title", "text"], callback_manager=CallbackManager([events]))
    items = nodes()
    del items[1].node.metadata["title"]
    with pytest.raises(RerankInputError) as info:
        await postprocess(rr, mode, items)
    assert "documents[1]" in str(info.value)
    assert "'title'" in str(info.value)
    assert endpoint.requests == []
    assert events.seen == []  # refused before any event starts


# -- LangChain ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_langchain_sends_metadata_fields_and_page_content(mode: str) -> None:
    endpoint = LexicalRerankEndpoint()
    rr = langchain(endpoint, rank_fields=["title", "year", "text"], top_n=2)
    items = documents()
    out = await compress(rr, mode, items)

    (body,) = endpoint.requests
    assert body["rank_fields"] == ["title", "year", "text"]
    assert body["documents"] == [
        {"title": d.metadata["title"], "year": d.metadata["year"], "text": d.page_content}
        for d in items
    ]
    assert len(out) == 2
    assert {d.id for d in out} == {"d0", "d1"}
    assert all(d.page_content == items[int(d.id[1])].page_content for d in out)
    assert all(RELEVANCE_SCORE_KEY in d.metadata for d in out)


@pytest.mark.parametrize("adapter", ["llama_index", "langchain"])
def test_the_items_own_text_is_sent_under_text_even_with_a_text_metadata_key(
    adapter: str,
) -> None:
    """The docs say the node's (document's) own text goes under "text". A metadata key
    named "text" (a loader's "(see body)" placeholder) used to replace it: the passage was
    never scored, and a relevant one could rank last."""
    endpoint = LexicalRerankEndpoint()
    passages = ["Berlin is in Germany.", "Paris is the capital of France."]
    meta = {"title": "Cities", "text": "(see body)"}
    if adapter == "llama_index":
        li = LlamaIndexRerank(
            api_key=TEST_KEY, transport=endpoint, rank_fields=["title", "text"], top_n=1
        )
        given = [NodeWithScore(node=TextNode(text=t, metadata=dict(meta))) for t in passages]
        best = li.postprocess_nodes(given, query_str="capital of France")[0].node.get_content(
            MetadataMode.NONE
        )
    else:
        lc = LangChainRerank(
            api_key=TEST_KEY, transport=endpoint, rank_fields=["title", "text"], top_n=1
        )
        docs = [Document(t, metadata=dict(meta)) for t in passages]
        best = lc.compress_documents(docs, "capital of France")[0].page_content
    (body,) = endpoint.requests
    assert [d["text"] for d in body["documents"]] == passages
    assert best == passages[1]


@pytest.mark.parametrize(("fields", "best"), [(["title"], "d1"), (["text"], "d0")])
def test_langchain_compress_ranks_by_the_named_fields(fields: list[str], best: str) -> None:
    out = langchain(LexicalRerankEndpoint(), rank_fields=fields, top_n=1).compress_documents(
        documents(), QUERY
    )
    assert [d.id for d in out] == [best]


@pytest.mark.parametrize("mode", MODES)
async def test_langchain_rank_fields_per_call(mode: str) -> None:
    endpoint = LexicalRerankEndpoint()
    rr = langchain(endpoint, top_n=1)  # no rank_fields on the instance
    if mode == "sync":
        ranking = rr.rerank(documents(), QUERY, rank_fields=["title"])
    else:
        ranking = await rr.arerank(documents(), QUERY, rank_fields=["title"])
    assert [r["index"] for r in ranking] == [1]
    assert endpoint.requests[-1]["rank_fields"] == ["title"]
    assert endpoint.requests[-1]["documents"] == [{"title": r["title"]} for r in RECORDS]
    # a per-call value wins over the instance's, and None turns it off for the call
    fielded = langchain(endpoint, top_n=1, rank_fields=["title"])
    assert [r["index"] for r in fielded.rerank(documents(), QUERY, rank_fields=["text"])] == [0]
    fielded.rerank(documents(), QUERY, rank_fields=None)
    assert "rank_fields" not in endpoint.requests[-1]
    assert endpoint.requests[-1]["documents"] == [r["text"] for r in RECORDS]
    assert fielded.rank_fields == ["title"]


@pytest.mark.parametrize("mode", MODES)
async def test_langchain_without_rank_fields_sends_page_content(mode: str) -> None:
    endpoint = LexicalRerankEndpoint()
    await compress(langchain(endpoint), mode, documents())
    (body,) = endpoint.requests
    assert "rank_fields" not in body
    assert body["documents"] == [r["text"] for r in RECORDS]


def test_langchain_document_missing_a_field_is_named() -> None:
    endpoint = LexicalRerankEndpoint()
    items = documents()
    items[2].metadata.pop("title")
    with pytest.raises(RerankInputError, match=r"documents\[2\].*'title'"):
        langchain(endpoint, rank_fields=["title", "text"]).compress_documents(items, QUERY)
    assert endpoint.requests == []


# -- core ---------------------------------------------------------------------------------
def test_core_sends_mappings_and_rank_fields_and_strings_without() -> None:
    endpoint = LexicalRerankEndpoint()
    client = RerankClient(api_key=TEST_KEY, transport=endpoint)
    ranked = client.rerank(QUERY, RECORDS, rank_fields=["title"])
    assert ranked[0].index == 1
    assert endpoint.requests[-1]["documents"] == RECORDS
    assert endpoint.requests[-1]["rank_fields"] == ["title"]
    client.rerank(QUERY, [r["text"] for r in RECORDS])
    assert "rank_fields" not in endpoint.requests[-1]


# -- Llama-Rank only ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_mxbai_with_rank_fields_is_a_clear_error_everywhere(mode: str) -> None:
    endpoint = LexicalRerankEndpoint()
    client = RerankClient(api_key=TEST_KEY, transport=endpoint, model=MXBAI)
    li = llama(endpoint, model=MXBAI, rank_fields=["title", "text"])
    lc = langchain(endpoint, model=MXBAI, rank_fields=["title", "text"])
    lc_plain = langchain(endpoint, model=MXBAI)
    sync_calls = [
        lambda: client.rerank(QUERY, RECORDS, rank_fields=["title"]),
        lambda: li.postprocess_nodes(nodes(), query_str=QUERY),
        lambda: lc.compress_documents(documents(), QUERY),
        lambda: lc_plain.rerank(documents(), QUERY, rank_fields=["text"]),
    ]
    async_calls = [
        lambda: client.arerank(QUERY, RECORDS, rank_fields=["title"]),
        lambda: li.apostprocess_nodes(nodes(), query_str=QUERY),
        lambda: lc.acompress_documents(documents(), QUERY),
        lambda: lc_plain.arerank(documents(), QUERY, rank_fields=["text"]),
    ]
    runs = sync_calls if mode == "sync" else async_calls
    for call in runs:
        with pytest.raises(RerankInputError) as info:
            await outcome(call)
        message = str(info.value)
        assert "rank_fields" in message
        assert "Llama-Rank" in message
        assert MXBAI in message
    assert endpoint.requests == []
    # the same model without rank_fields works
    assert client.rerank(QUERY, [r["text"] for r in RECORDS])[0].index == 0


def _bad_request(seen: list[dict[str, Any]]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.read()))
        return httpx.Response(
            400,
            json={"error": {"message": "documents must be a list of strings", "type": "invalid"}},
        )

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("mode", MODES)
async def test_server_400_with_rank_fields_mentions_llama_rank(mode: str) -> None:
    """A dedicated endpoint whose name does not say Mxbai: only the server can refuse."""
    seen: list[dict[str, Any]] = []
    model = "my-org/my-dedicated-reranker"
    li = llama(_bad_request(seen), model=model, rank_fields=["title", "text"])
    lc = langchain(_bad_request(seen), model=model, rank_fields=["title", "text"])
    for adapter_call in (
        (lambda: li.postprocess_nodes(nodes(), query_str=QUERY))
        if mode == "sync"
        else (lambda: li.apostprocess_nodes(nodes(), query_str=QUERY)),
        (lambda: lc.compress_documents(documents(), QUERY))
        if mode == "sync"
        else (lambda: lc.acompress_documents(documents(), QUERY)),
    ):
        with pytest.raises(BadRequestError) as info:
            await outcome(adapter_call)
        assert info.value.status_code == 400
        assert "Llama-Rank" in str(info.value)
        assert "documents must be a list of strings" in str(info.value)  # server quoted
    assert len(seen) == 2
    assert all("rank_fields" in body for body in seen)


def test_server_400_without_rank_fields_does_not_blame_them() -> None:
    seen: list[dict[str, Any]] = []
    with pytest.raises(BadRequestError) as info:
        llama(_bad_request(seen)).postprocess_nodes(nodes(), query_str=QUERY)
    assert "Llama-Rank" not in str(info.value)
    assert "rank_fields" not in seen[0]


# -- values JSON cannot carry -------------------------------------------------------------
class Colour(enum.Enum):
    RED = "red"


ODD_VALUES: dict[str, Any] = {
    "published": dt.datetime(2024, 5, 17, 9, 30, tzinfo=dt.timezone.utc),
    "day": dt.date(2024, 5, 17),
    "price": decimal.Decimal("12.50"),
    "ref": uuid.UUID(int=42),
    "path": PurePosixPath("/data/fruit.md"),
    "colour": Colour.RED,
}
ODD_FIELDS = [*ODD_VALUES, "text"]


def _expected_odd(text: str) -> dict[str, Any]:
    return {**{k: str(v) for k, v in ODD_VALUES.items()}, "text": text}


@pytest.mark.parametrize("mode", MODES)
async def test_llama_index_metadata_json_cannot_carry_is_sent_as_strings(mode: str) -> None:
    endpoint = LexicalRerankEndpoint()
    node = NodeWithScore(node=TextNode(text="red apples", metadata=dict(ODD_VALUES)))
    out = await postprocess(llama(endpoint, rank_fields=ODD_FIELDS), mode, [node])
    assert endpoint.requests[0]["documents"] == [_expected_odd("red apples")]
    assert out[0].node.metadata["published"] == ODD_VALUES["published"]  # returned untouched


@pytest.mark.parametrize("mode", MODES)
async def test_langchain_metadata_json_cannot_carry_is_sent_as_strings(mode: str) -> None:
    endpoint = LexicalRerankEndpoint()
    doc = Document("red apples", metadata=dict(ODD_VALUES))
    out = await compress(langchain(endpoint, rank_fields=ODD_FIELDS), mode, [doc])
    assert endpoint.requests[0]["documents"] == [_expected_odd("red apples")]
    assert out[0].metadata["day"] == ODD_VALUES["day"]


def test_json_values_are_sent_as_they_are() -> None:
    endpoint = LexicalRerankEndpoint()
    meta = {"n": 3, "x": 1.5, "ok": True, "none": None, "tags": ["a", "b"], "d": {"k": 1}}
    node = NodeWithScore(node=TextNode(text="t", metadata=meta))
    llama(endpoint, rank_fields=[*meta, "text"]).postprocess_nodes([node], query_str="t")
    assert endpoint.requests[0]["documents"] == [{**meta, "text": "t"}]


def test_nested_values_json_cannot_carry_are_sent_as_strings() -> None:
    endpoint = LexicalRerankEndpoint()
    meta = {"dates": [dt.date(2024, 1, 2)], "span": {"from": dt.date(2024, 1, 1)}}
    doc = Document("red apples", metadata=meta)
    langchain(endpoint, rank_fields=["dates", "span", "text"]).compress_documents([doc], QUERY)
    assert endpoint.requests[0]["documents"] == [
        {"dates": ["2024-01-02"], "span": {"from": "2024-01-01"}, "text": "red apples"}
    ]


def test_non_finite_metadata_is_sent_as_a_string() -> None:
    endpoint = LexicalRerankEndpoint()
    node = NodeWithScore(node=TextNode(text="red apples", metadata={"rating": float("nan")}))
    llama(endpoint, rank_fields=["rating", "text"]).postprocess_nodes([node], query_str=QUERY)
    assert endpoint.requests[0]["documents"] == [{"rating": "nan", "text": "red apples"}]


def test_non_finite_value_in_a_mapping_document_is_an_input_error() -> None:
    client = RerankClient(api_key=TEST_KEY, transport=LexicalRerankEndpoint())
    with pytest.raises(RerankInputError, match=r"documents\[0\]"):
        client.rerank(QUERY, [{"text": "a", "score": float("inf")}])


@pytest.mark.parametrize("adapter", [LlamaIndexRerank, LangChainRerank])
def test_empty_rank_fields_is_a_config_error(adapter: type) -> None:
    with pytest.raises(RerankConfigError, match="rank_fields"):
        adapter(api_key=TEST_KEY, transport=LexicalRerankEndpoint(), rank_fields=[])


@pytest.mark.parametrize("adapter", [LlamaIndexRerank, LangChainRerank])
def test_rank_fields_must_be_a_list(adapter: type) -> None:
    with pytest.raises(RerankConfigError, match="rank_fields"):
        adapter(api_key=TEST_KEY, transport=LexicalRerankEndpoint(), rank_fields="title")
