"""Tests of the LangChain adapter ``together_rerank_plugins.langchain.TogetherRerank``.

Everything runs in process: the embedded lexical endpoint (or a crafted ``httpx.MockTransport``)
replaces the network, so no socket is opened.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest
import together
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore

from together_rerank_plugins import (
    AuthenticationError,
    EndpointNotFoundError,
    MalformedResponseError,
    RateLimitError,
    RerankConfigError,
    RerankError,
    RerankInputError,
    ServerError,
)
from together_rerank_plugins.langchain import RELEVANCE_SCORE_KEY, TogetherRerank
from together_rerank_plugins.testing import LexicalRerankEndpoint, lexical_scores

from .conftest import TEST_KEY

DEFAULT_MODEL = "Salesforce/Llama-Rank-V1"

# -- helpers ---------------------------------------------------------------------------------


class HashingBagOfWords(Embeddings):
    """Deterministic bag-of-words embeddings (crc32 word hashing): similar words, close vectors."""

    dim = 256

    def _embed(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        vec[0] = 1.0  # never a zero vector (cosine similarity would divide by zero)
        for word in re.findall(r"\w+", text.lower()):
            vec[1 + zlib.crc32(word.encode()) % (self.dim - 1)] += 1.0
        return vec

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


CORPUS_TEXTS = [
    "Solar panels convert sunlight into electricity using photovoltaic cells.",
    "Photovoltaic cells are made of silicon that releases electrons in sunlight.",
    "Wind turbines turn the kinetic energy of moving air into electricity.",
    "Hydroelectric dams generate electricity from falling water.",
    "A solar inverter converts the direct current from panels into alternating current.",
    "Sunlight reaching the earth carries about a kilowatt per square metre.",
    "Batteries store electricity from solar panels for use at night.",
    "The capital of France is Paris, on the river Seine.",
    "Berlin is the capital and largest city of Germany.",
    "Bread is made from flour, water, yeast and salt.",
    "Sourdough bread rises with wild yeast instead of baker's yeast.",
    "Photosynthesis lets plants convert sunlight into chemical energy.",
    "Geothermal plants use heat from inside the earth to make electricity.",
    "Nuclear reactors split uranium atoms to heat water into steam.",
    "Coal power stations burn coal to boil water and spin turbines.",
    "Electric cars run on batteries charged from the grid.",
    "The grid balances electricity supply and demand every second.",
    "Cats sleep for most of the day.",
    "Dogs were domesticated from wolves thousands of years ago.",
    "Tea is the most consumed drink in the world after water.",
    "Coffee beans are the roasted seeds of the coffee plant.",
    "Panels on rooftops make homes produce their own electricity.",
    "Monocrystalline solar cells convert about twenty percent of sunlight.",
    "Tides are caused by the gravity of the moon and the sun.",
    "The sun is a star at the centre of our solar system.",
]
PIPELINE_QUERY = "how do solar panels convert sunlight into electricity"


def corpus() -> list[Document]:
    return [
        Document(text, id=f"doc-{i:02d}", metadata={"source": f"s{i}", "n": i})
        for i, text in enumerate(CORPUS_TEXTS)
    ]


def expected_order(query: str, texts: list[str], top_n: int | None) -> list[int]:
    """The ranking the lexical endpoint implies: descending score, ties keep input order."""
    scores = lexical_scores(query, texts)
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
    return order if top_n is None else order[:top_n]


def make_rerank(transport: httpx.BaseTransport, **kwargs: Any) -> TogetherRerank:
    kwargs.setdefault("api_key", TEST_KEY)
    return TogetherRerank(transport=transport, **kwargs)


class Recorder(httpx.MockTransport):
    """A MockTransport whose handler is a function; records every request (URL, headers, body,
    thread) before answering."""

    def __init__(self, answer: Callable[[httpx.Request, dict[str, Any]], httpx.Response]):
        self.calls: list[dict[str, Any]] = []
        self._answer = answer
        super().__init__(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        self.calls.append(
            {
                "url": str(request.url),
                "authorization": request.headers.get("authorization"),
                "body": body,
                "thread": threading.get_ident(),
            }
        )
        return self._answer(request, body)


def lexical_answer(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
    """Answer like the real API, scoring with the lexical scorer."""
    return LexicalRerankEndpoint().handle(request)


def behind_a_gateway(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
    """A gateway that serves the API under a path prefix: it strips everything before
    ``/v1/rerank`` and passes the request on (the endpoint itself answers that path only)."""
    path = request.url.path
    inner = path[path.index("/v1/rerank") :]
    forwarded = httpx.Request(
        request.method, request.url.copy_with(path=inner), headers=request.headers, json=body
    )
    return LexicalRerankEndpoint().handle(forwarded)


def fixed_answer(
    payload: Any = None, *, status: int = 200, content: bytes | None = None
) -> Callable[[httpx.Request, dict[str, Any]], httpx.Response]:
    def answer(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if content is not None:
            return httpx.Response(
                status, content=content, headers={"content-type": "application/json"}
            )
        return httpx.Response(status, json=payload)

    return answer


async def compress(
    rerank: TogetherRerank, mode: str, documents: Sequence[Any], query: str
) -> Sequence[Document]:
    if mode == "sync":
        return rerank.compress_documents(documents, query)
    return await rerank.acompress_documents(documents, query)


async def call_rerank(
    rerank: TogetherRerank, mode: str, documents: Sequence[Any], query: str, **kwargs: Any
) -> list[dict[str, Any]]:
    if mode == "sync":
        return rerank.rerank(documents, query, **kwargs)
    return await rerank.arerank(documents, query, **kwargs)


MODES = pytest.mark.parametrize("mode", ["sync", "async"])


# -- 1. a real pipeline ----------------------------------------------------------------------


@pytest.fixture
def vector_retriever() -> Any:
    store = InMemoryVectorStore(HashingBagOfWords())
    store.add_documents(corpus())
    return store.as_retriever(search_kwargs={"k": 20})


def check_pipeline_result(
    result: list[Document], endpoint: LexicalRerankEndpoint, retrieved: list[Document]
) -> None:
    by_id = {d.id: d for d in corpus()}
    assert len(endpoint.requests) == 1
    request = endpoint.requests[0]
    received = request["documents"]
    # exactly the 20 retrieved texts, in retrieval order, and top_n=5 asked of the server
    assert len(received) == 20
    assert received == [d.page_content for d in retrieved]
    assert request["query"] == PIPELINE_QUERY
    assert request["top_n"] == 5
    assert request["model"] == DEFAULT_MODEL

    assert len(result) == 5
    scores = [d.metadata[RELEVANCE_SCORE_KEY] for d in result]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > scores[-1]  # the ranking is not degenerate
    expected_scores = lexical_scores(PIPELINE_QUERY, received)
    order = expected_order(PIPELINE_QUERY, received, 5)
    assert [d.page_content for d in result] == [received[i] for i in order]
    assert scores == [expected_scores[i] for i in order]
    for doc in result:
        original = by_id[doc.id]  # id preserved
        assert doc.page_content == original.page_content
        assert doc.metadata == {
            **original.metadata,
            RELEVANCE_SCORE_KEY: doc.metadata[RELEVANCE_SCORE_KEY],
        }
    assert result[0].page_content == CORPUS_TEXTS[0]


def test_pipeline_invoke(endpoint: LexicalRerankEndpoint, vector_retriever: Any) -> None:
    retriever = ContextualCompressionRetriever(
        base_compressor=TogetherRerank(top_n=5, api_key=TEST_KEY, transport=endpoint),
        base_retriever=vector_retriever,
    )
    result = retriever.invoke(PIPELINE_QUERY)
    check_pipeline_result(result, endpoint, vector_retriever.invoke(PIPELINE_QUERY))


async def test_pipeline_ainvoke(endpoint: LexicalRerankEndpoint, vector_retriever: Any) -> None:
    retriever = ContextualCompressionRetriever(
        base_compressor=TogetherRerank(top_n=5, api_key=TEST_KEY, transport=endpoint),
        base_retriever=vector_retriever,
    )
    result = await retriever.ainvoke(PIPELINE_QUERY)
    check_pipeline_result(result, endpoint, await vector_retriever.ainvoke(PIPELINE_QUERY))


# -- 3. copies, not mutations ----------------------------------------------------------------


@MODES
async def test_compress_returns_copies(mode: str, endpoint: LexicalRerankEndpoint) -> None:
    docs = [
        Document("green pears", id="a", metadata={"colour": "green", "tags": ["fruit"]}),
        Document("red apples are red", id="b", metadata={"colour": "red"}),
        Document("blue sky", id="c", metadata={}),
    ]
    before = [(d.id, d.page_content, dict(d.metadata)) for d in docs]
    metadata_objects = [d.metadata for d in docs]

    result = await compress(make_rerank(endpoint, top_n=None), mode, docs, "red apples")

    # the caller's documents are untouched
    assert [(d.id, d.page_content, d.metadata) for d in docs] == before
    assert all(RELEVANCE_SCORE_KEY not in d.metadata for d in docs)
    assert [d.metadata for d in docs] == metadata_objects
    assert all(a.metadata is b for a, b in zip(docs, metadata_objects, strict=True))
    # the results are new objects with id and metadata kept, plus the score
    assert [d.id for d in result] == ["b", "a", "c"]
    originals = {d.id: d for d in docs}
    for doc in result:
        assert doc is not originals[doc.id]
        assert doc.metadata is not originals[doc.id].metadata
        assert doc.page_content == originals[doc.id].page_content
        extra = {k: v for k, v in doc.metadata.items() if k != RELEVANCE_SCORE_KEY}
        assert extra == originals[doc.id].metadata
        assert isinstance(doc.metadata[RELEVANCE_SCORE_KEY], float)
    assert result[0].metadata[RELEVANCE_SCORE_KEY] == 1.0


# -- 4. rerank / arerank ---------------------------------------------------------------------


def check_ranking(results: list[dict[str, Any]], query: str, texts: list[str]) -> None:
    scores = lexical_scores(query, texts)
    assert all(set(r) == {"index", "relevance_score"} for r in results)
    assert all(type(r["index"]) is int and type(r["relevance_score"]) is float for r in results)
    assert [r["relevance_score"] for r in results] == sorted(
        (r["relevance_score"] for r in results), reverse=True
    )
    for r in results:
        assert r["relevance_score"] == scores[r["index"]]


FRUIT = ["green pears", "red apples", "yellow bananas", "red cherries and red apples", "plums"]


@MODES
async def test_rerank_documents(mode: str, endpoint: LexicalRerankEndpoint) -> None:
    docs = [Document(t, id=str(i)) for i, t in enumerate(FRUIT)]
    results = await call_rerank(make_rerank(endpoint), mode, docs, "red apples", top_n=None)
    check_ranking(results, "red apples", FRUIT)
    assert [r["index"] for r in results] == expected_order("red apples", FRUIT, None)
    assert endpoint.requests[0]["documents"] == FRUIT


@MODES
async def test_rerank_strings(mode: str, endpoint: LexicalRerankEndpoint) -> None:
    results = await call_rerank(make_rerank(endpoint), mode, FRUIT, "yellow bananas", top_n=2)
    check_ranking(results, "yellow bananas", FRUIT)
    assert [r["index"] for r in results] == expected_order("yellow bananas", FRUIT, 2)
    assert results[0]["index"] == 2


@MODES
async def test_rerank_dicts_with_rank_fields(mode: str, endpoint: LexicalRerankEndpoint) -> None:
    # The body of the first record matches the query; the title of the second one does.
    records = [
        {"title": "Orchard notes", "body": "red apples ripen in autumn"},
        {"title": "Red apples", "body": "a short note on fruit"},
        {"title": "Bananas", "body": "yellow and sweet"},
    ]
    rerank = make_rerank(endpoint, top_n=None)

    by_title = await call_rerank(rerank, mode, records, "red apples", rank_fields=["title"])
    sent = endpoint.requests[-1]
    assert sent["rank_fields"] == ["title"]
    assert sent["documents"] == records
    assert by_title[0]["index"] == 1
    check_ranking(by_title, "red apples", [r["title"] for r in records])

    by_body = await call_rerank(rerank, mode, records, "red apples ripen", rank_fields=["body"])
    assert endpoint.requests[-1]["rank_fields"] == ["body"]
    assert by_body[0]["index"] == 0


@MODES
async def test_rerank_top_n_default_and_override(
    mode: str, endpoint: LexicalRerankEndpoint
) -> None:
    rerank = make_rerank(endpoint, top_n=2)
    assert len(await call_rerank(rerank, mode, FRUIT, "red apples")) == 2
    assert len(await call_rerank(rerank, mode, FRUIT, "red apples", top_n=3)) == 3
    everything = await call_rerank(rerank, mode, FRUIT, "red apples", top_n=None)
    assert sorted(r["index"] for r in everything) == list(range(len(FRUIT)))
    assert rerank.top_n == 2  # a per-call top_n does not change the instance


@MODES
async def test_rerank_mixed_strings_and_dicts(mode: str, endpoint: LexicalRerankEndpoint) -> None:
    rerank = make_rerank(endpoint)
    with pytest.raises(RerankInputError, match="mixes strings and mappings") as info:
        await call_rerank(rerank, mode, ["red apples", {"text": "green pears"}], "red")
    assert isinstance(info.value, ValueError)
    # a Document is sent as its text, so Documents and dicts are mixed too
    with pytest.raises(RerankInputError):
        await call_rerank(rerank, mode, [Document("red apples"), {"text": "pears"}], "red")
    with pytest.raises(RerankInputError, match="documents\\[1\\] is a int"):
        await call_rerank(rerank, mode, ["red apples", 3], "red")
    assert endpoint.requests == []


# -- 5. top_n, score_threshold and input validation ------------------------------------------

EIGHT = [Document(f"red apple number {i}" if i % 2 else f"pear {i}") for i in range(8)]


@MODES
async def test_top_n_default_is_five(mode: str, endpoint: LexicalRerankEndpoint) -> None:
    rerank = make_rerank(endpoint)
    assert rerank.top_n == 5
    result = await compress(rerank, mode, EIGHT, "red apple")
    assert len(result) == 5
    assert endpoint.requests[0]["top_n"] == 5


@MODES
async def test_top_n_none_keeps_all_reordered(mode: str, endpoint: LexicalRerankEndpoint) -> None:
    result = await compress(make_rerank(endpoint, top_n=None), mode, EIGHT, "red apple")
    assert len(result) == 8
    texts = [d.page_content for d in EIGHT]
    assert [d.page_content for d in result] == [
        texts[i] for i in expected_order("red apple", texts, None)
    ]
    assert "top_n" not in endpoint.requests[0]


@MODES
async def test_top_n_above_candidates_keeps_all(mode: str, endpoint: LexicalRerankEndpoint) -> None:
    result = await compress(make_rerank(endpoint, top_n=10), mode, EIGHT[:4], "red apple")
    assert len(result) == 4
    assert {d.page_content for d in result} == {d.page_content for d in EIGHT[:4]}


@MODES
async def test_score_threshold_applies_after_top_n(
    mode: str, endpoint: LexicalRerankEndpoint
) -> None:
    docs = [
        Document("red apples"),  # 1.0
        Document("red cherries"),  # matches "red" only
        Document("green apples"),  # matches "apples" only
        Document("red apples and more red apples"),  # 1.0
        Document("pears"),  # 0.0
    ]
    texts = [d.page_content for d in docs]
    scores = lexical_scores("red apples", texts)
    top3 = expected_order("red apples", texts, 3)
    threshold = (scores[top3[1]] + scores[top3[2]]) / 2
    assert scores[top3[1]] > threshold > scores[top3[2]]

    rerank = make_rerank(endpoint, top_n=3, score_threshold=threshold)
    result = await compress(rerank, mode, docs, "red apples")
    # top_n picks 3, then the threshold drops the third: no back-filling from below
    assert [d.page_content for d in result] == [texts[i] for i in top3[:2]]
    assert all(d.metadata[RELEVANCE_SCORE_KEY] >= threshold for d in result)
    assert endpoint.requests[0]["top_n"] == 3

    strict = make_rerank(endpoint, top_n=3, score_threshold=1.5)
    assert await compress(strict, mode, docs, "red apples") == []


@pytest.mark.parametrize("top_n", [0, -1, -10])
def test_top_n_below_one_rejected_at_construction(top_n: int) -> None:
    with pytest.raises(RerankConfigError, match="top_n") as info:
        TogetherRerank(top_n=top_n, api_key=TEST_KEY)
    assert isinstance(info.value, ValueError)


@MODES
async def test_empty_documents_no_request(mode: str, endpoint: LexicalRerankEndpoint) -> None:
    rerank = make_rerank(endpoint)
    assert list(await compress(rerank, mode, [], "red apples")) == []
    assert await call_rerank(rerank, mode, [], "red apples") == []
    assert endpoint.requests == []


@MODES
@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
async def test_empty_query_rejected_no_request(
    mode: str, query: str, endpoint: LexicalRerankEndpoint
) -> None:
    rerank = make_rerank(endpoint)
    with pytest.raises(ValueError, match="query"):
        await compress(rerank, mode, EIGHT, query)
    with pytest.raises(RerankInputError, match="query"):
        await call_rerank(rerank, mode, ["a", "b"], query)
    assert endpoint.requests == []


@MODES
@pytest.mark.parametrize("bad", ["a plain string", {"page_content": "a dict"}, 42])
async def test_compress_rejects_non_documents(
    mode: str, bad: Any, endpoint: LexicalRerankEndpoint
) -> None:
    with pytest.raises(RerankInputError, match=r"documents\[1\].*LangChain Documents"):
        await compress(make_rerank(endpoint), mode, [Document("red apples"), bad], "red")
    assert endpoint.requests == []


# -- 6. configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["api_key", "together_api_key"])
def test_accepts_api_key_and_together_api_key(field: str) -> None:
    recorder = Recorder(lexical_answer)
    rerank = TogetherRerank(transport=recorder, **{field: TEST_KEY})
    assert rerank.together_api_key is not None
    assert rerank.together_api_key.get_secret_value() == TEST_KEY
    rerank.compress_documents([Document("red apples")], "red")
    assert recorder.calls[0]["authorization"] == f"Bearer {TEST_KEY}"


def test_env_key_used_and_argument_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", "env-key-abcdefghijkl")
    recorder = Recorder(lexical_answer)
    TogetherRerank(transport=recorder).rerank(["a"], "a")
    TogetherRerank(transport=recorder, api_key=TEST_KEY).rerank(["a"], "a")
    assert [c["authorization"] for c in recorder.calls] == [
        "Bearer env-key-abcdefghijkl",
        f"Bearer {TEST_KEY}",
    ]


def test_unknown_argument_raises_naming_it() -> None:
    with pytest.raises(RerankConfigError, match="topn") as info:
        TogetherRerank(topn=3, api_key=TEST_KEY)
    assert isinstance(info.value, ValueError)
    assert "top_n" in str(info.value)  # the known names help spot the misspelling


def test_bad_field_type_raises_config_error() -> None:
    with pytest.raises(RerankConfigError, match="max_retries"):
        TogetherRerank(max_retries="many", api_key=TEST_KEY)


@pytest.mark.parametrize(
    ("arg", "env", "expected"),
    [
        ("arg/model", "env/model", "arg/model"),
        (None, "env/model", "env/model"),
        (None, None, DEFAULT_MODEL),
    ],
)
def test_model_precedence(
    arg: str | None, env: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is not None:
        monkeypatch.setenv("TOGETHER_RERANK_MODEL", env)
    endpoint = LexicalRerankEndpoint()
    kwargs = {"model": arg} if arg is not None else {}
    rerank = make_rerank(endpoint, **kwargs)
    assert rerank.model == expected
    assert rerank.model_dump()["model"] == expected
    rerank.rerank(["red apples"], "red")
    assert endpoint.requests[0]["model"] == expected


@pytest.mark.parametrize(
    ("arg", "env", "expected_url"),
    [
        ("http://arg.example:8000", "http://env.example", "http://arg.example:8000/v1/rerank"),
        (None, "http://env.example/v1", "http://env.example/v1/rerank"),
        (None, None, "https://api.together.ai/v1/rerank"),
    ],
)
def test_base_url_precedence(
    arg: str | None, env: str | None, expected_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is not None:
        monkeypatch.setenv("TOGETHER_BASE_URL", env)
    recorder = Recorder(lexical_answer)
    kwargs = {"base_url": arg} if arg is not None else {}
    make_rerank(recorder, **kwargs).rerank(["red apples"], "red")
    assert recorder.calls[0]["url"] == expected_url


@MODES
@pytest.mark.parametrize(
    ("base_url", "expected_url"),
    [
        ("http://rerank.local", "http://rerank.local/v1/rerank"),
        ("http://rerank.local/", "http://rerank.local/v1/rerank"),
        ("http://rerank.local/v1", "http://rerank.local/v1/rerank"),
        ("http://rerank.local/v1/", "http://rerank.local/v1/rerank"),
        ("https://proxy.local/together/v1", "https://proxy.local/together/v1/rerank"),
        ("https://proxy.local/together", "https://proxy.local/together/v1/rerank"),
    ],
)
async def test_base_url_with_or_without_v1(mode: str, base_url: str, expected_url: str) -> None:
    recorder = Recorder(behind_a_gateway)
    rerank = make_rerank(recorder, base_url=base_url)
    await compress(rerank, mode, [Document("red apples")], "red")
    assert recorder.calls[0]["url"] == expected_url


def test_missing_key_raises_config_error() -> None:
    with pytest.raises(RerankConfigError, match="TOGETHER_API_KEY") as info:
        TogetherRerank()
    assert isinstance(info.value, ValueError)


def test_key_never_in_repr_str_or_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    env_key = "env-secret-key-9876543210"
    monkeypatch.setenv("TOGETHER_API_KEY", env_key)
    for rerank, key in [
        (TogetherRerank(api_key=TEST_KEY, transport=LexicalRerankEndpoint()), TEST_KEY),
        (TogetherRerank(together_api_key=TEST_KEY, transport=LexicalRerankEndpoint()), TEST_KEY),
        (TogetherRerank(transport=LexicalRerankEndpoint()), env_key),
    ]:
        rerank.rerank(["x"], "x")  # after a call too (the SDK client exists then)
        texts = [
            repr(rerank),
            str(rerank),
            repr(rerank.model_dump()),
            repr(rerank.model_dump(by_alias=True)),
            repr(rerank.model_dump(mode="json")),
            rerank.model_dump_json(),
            rerank.model_dump_json(by_alias=True),
            repr(rerank.client),
            f"{rerank}",
        ]
        for text in texts:
            assert key not in text
        dumped = rerank.model_dump()
        assert "together_api_key" not in dumped
        assert "api_key" not in dumped
        assert "transport" not in dumped


def test_authorization_header_is_bearer_key() -> None:
    recorder = Recorder(lexical_answer)
    make_rerank(recorder).compress_documents([Document("red apples")], "red")
    assert recorder.calls[0]["authorization"] == f"Bearer {TEST_KEY}"


async def test_async_authorization_header_is_bearer_key() -> None:
    recorder = Recorder(lexical_answer)
    await make_rerank(recorder).acompress_documents([Document("red apples")], "red")
    assert recorder.calls[0]["authorization"] == f"Bearer {TEST_KEY}"


# -- 7. native async -------------------------------------------------------------------------


def forbid_worker_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_to_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("asyncio.to_thread was called: the async path used a worker thread")

    def no_executor(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("run_in_executor was called: the async path used a worker thread")

    monkeypatch.setattr(asyncio, "to_thread", no_to_thread)
    monkeypatch.setattr(asyncio.get_running_loop(), "run_in_executor", no_executor)


async def test_acompress_runs_on_the_loop_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(lexical_answer)
    rerank = make_rerank(recorder)
    docs = [Document("red apples"), Document("pears")]
    await rerank.acompress_documents(docs, "red apples")  # warm: the loop's client exists
    forbid_worker_threads(monkeypatch)
    loop_thread = threading.get_ident()
    for _ in range(3):
        result = await rerank.acompress_documents(docs, "red apples")
        assert result[0].page_content == "red apples"
    await rerank.arerank(docs, "red apples")
    assert len(recorder.calls) == 5
    assert all(c["thread"] == loop_thread for c in recorder.calls)


async def test_first_acompress_on_a_loop_runs_no_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder(lexical_answer)
    rerank = make_rerank(recorder)
    forbid_worker_threads(monkeypatch)
    await rerank.acompress_documents([Document("red apples")], "red apples")
    assert recorder.calls[0]["thread"] == threading.get_ident()


class CountingAsyncTogether(together.AsyncTogether):
    created = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).created += 1
        super().__init__(*args, **kwargs)


@pytest.fixture
def counting_async(monkeypatch: pytest.MonkeyPatch) -> type[CountingAsyncTogether]:
    monkeypatch.setattr(CountingAsyncTogether, "created", 0)
    monkeypatch.setattr(together, "AsyncTogether", CountingAsyncTogether)
    return CountingAsyncTogether


async def test_one_async_client_per_loop_reused(
    endpoint: LexicalRerankEndpoint, counting_async: type[CountingAsyncTogether]
) -> None:
    rerank = make_rerank(endpoint)
    docs = [Document("red apples"), Document("pears")]
    await rerank.acompress_documents(docs, "red")
    await rerank.acompress_documents(docs, "pears")
    await rerank.arerank(docs, "apples")
    await asyncio.gather(*(rerank.acompress_documents(docs, "red") for _ in range(5)))
    assert len(endpoint.requests) == 8
    assert counting_async.created == 1


def test_each_event_loop_gets_its_own_client(
    endpoint: LexicalRerankEndpoint, counting_async: type[CountingAsyncTogether]
) -> None:
    rerank = make_rerank(endpoint)
    docs = [Document("red apples"), Document("pears")]

    async def twice() -> list[str]:
        first = await rerank.acompress_documents(docs, "red apples")
        second = await rerank.acompress_documents(docs, "pears")
        return [first[0].page_content, second[0].page_content]

    # a client bound to a closed loop must not be reused by the next loop
    assert asyncio.run(twice()) == ["red apples", "pears"]
    assert asyncio.run(twice()) == ["red apples", "pears"]
    assert counting_async.created == 2
    assert len(endpoint.requests) == 4


# -- 8. errors -------------------------------------------------------------------------------

THREE = [Document("red apples"), Document("green pears"), Document("red cherries")]


@MODES
@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        (
            fixed_answer({"results": [{"index": 3, "relevance_score": 0.9}]}),
            "out of range",
        ),
        (
            fixed_answer({"results": [{"index": -1, "relevance_score": 0.9}]}),
            "out of range",
        ),
        (
            fixed_answer(
                {
                    "results": [
                        {"index": 0, "relevance_score": 0.9},
                        {"index": 0, "relevance_score": 0.8},
                    ]
                }
            ),
            "more than once",
        ),
        (
            fixed_answer(
                content=b'{"results": [{"index": 0, "relevance_score": NaN},'
                b' {"index": 1, "relevance_score": 0.5}, {"index": 2, "relevance_score": 0.1}]}'
            ),
            "not a finite number",
        ),
        (
            fixed_answer({"results": [{"index": 0}, {"index": 1, "relevance_score": 0.5}]}),
            "not a number",
        ),
        (fixed_answer({"data": []}), "'results' list is missing"),
        (fixed_answer(content=b"<html>gateway</html>"), "not valid JSON"),
        (
            fixed_answer({"results": [{"index": 0, "relevance_score": 0.9}]}),
            "1 results for 3 documents",
        ),
    ],
    ids=[
        "index-too-high",
        "index-negative",
        "repeated-index",
        "nan-score",
        "missing-score",
        "no-results",
        "not-json",
        "too-few",
    ],
)
async def test_malformed_responses(mode: str, answer: Any, detail: str) -> None:
    rerank = make_rerank(Recorder(answer), top_n=None, max_retries=0)
    with pytest.raises(MalformedResponseError, match=re.escape(detail)) as info:
        await compress(rerank, mode, THREE, "red apples")
    assert isinstance(info.value, RerankError)


@MODES
async def test_scrambled_results_are_resorted(mode: str) -> None:
    answer = fixed_answer(
        {
            "results": [
                {"index": 1, "relevance_score": 0.1},
                {"index": 2, "relevance_score": 0.5},
                {"index": 0, "relevance_score": 0.9},
            ]
        }
    )
    rerank = make_rerank(Recorder(answer), top_n=None)
    result = await compress(rerank, mode, THREE, "red apples")
    assert [d.page_content for d in result] == ["red apples", "red cherries", "green pears"]
    assert [d.metadata[RELEVANCE_SCORE_KEY] for d in result] == [0.9, 0.5, 0.1]
    ranked = await call_rerank(rerank, mode, THREE, "red apples", top_n=2)
    assert ranked == [{"index": 0, "relevance_score": 0.9}, {"index": 2, "relevance_score": 0.5}]


def error_answer(status: int, message: str) -> Any:
    return fixed_answer({"error": {"message": message, "type": "error"}}, status=status)


@MODES
@pytest.mark.parametrize(
    ("status", "error_type", "sdk_type", "hint"),
    [
        (401, AuthenticationError, together.AuthenticationError, "TOGETHER_API_KEY"),
        (403, AuthenticationError, together.PermissionDeniedError, "API key was refused"),
        (404, EndpointNotFoundError, together.NotFoundError, "dedicated endpoints"),
        (429, RateLimitError, together.RateLimitError, "Rate limited"),
        (500, ServerError, together.InternalServerError, "server failed (500)"),
        (503, ServerError, together.InternalServerError, "server failed (503)"),
    ],
)
async def test_status_errors(
    mode: str, status: int, error_type: type[Exception], sdk_type: type[Exception], hint: str
) -> None:
    # The server echoes the key: the message must not carry it on.
    recorder = Recorder(error_answer(status, f"Request with key {TEST_KEY} failed"))
    rerank = make_rerank(recorder, max_retries=0)
    with pytest.raises(error_type, match=re.escape(hint)) as info:
        await compress(rerank, mode, THREE, "red apples")
    err = info.value
    assert isinstance(err, RerankError)
    assert err.status_code == status  # type: ignore[attr-defined]
    assert isinstance(err.__cause__, sdk_type)
    assert isinstance(err.__cause__, together.APIStatusError)
    assert TEST_KEY not in str(err)
    assert TEST_KEY not in repr(err)
    assert TEST_KEY not in (err.server_message or "")  # type: ignore[attr-defined]
    assert "***" in str(err)  # the server's message is quoted, scrubbed
    assert len(recorder.calls) == 1  # max_retries=0: no retry


async def test_404_from_embedded_endpoint_names_model() -> None:
    endpoint = LexicalRerankEndpoint(models={"my-org/my-dedicated-rerank"})
    rerank = make_rerank(endpoint, model="Salesforce/Llama-Rank-V1", max_retries=0)
    with pytest.raises(EndpointNotFoundError, match="dedicated endpoints") as info:
        await rerank.acompress_documents(THREE, "red apples")
    assert "Salesforce/Llama-Rank-V1" in str(info.value)
    ok = make_rerank(endpoint, model="my-org/my-dedicated-rerank")
    assert len(ok.compress_documents(THREE, "red apples")) == 3


def test_401_from_embedded_endpoint_with_wrong_key() -> None:
    endpoint = LexicalRerankEndpoint(api_keys={"the-right-key-123456"})
    with pytest.raises(AuthenticationError) as info:
        make_rerank(endpoint, max_retries=0).compress_documents(THREE, "red apples")
    assert TEST_KEY not in str(info.value)
    assert isinstance(info.value.__cause__, together.AuthenticationError)


# -- 9. import cost --------------------------------------------------------------------------


def test_import_loads_neither_llama_index_nor_together() -> None:
    code = (
        "import sys, json\n"
        "import together_rerank_plugins.langchain\n"
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('llama_index', 'together', 'langchain_core'))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = json.loads(proc.stdout)
    assert "langchain_core" in loaded  # sanity: the check sees what was imported
    assert not [m for m in loaded if m.split(".")[0] in ("llama_index", "together")]


# -- what a reader sees: repr and misspelled arguments --------------------------------------
def test_repr_says_whether_a_key_is_set_and_what_differs_from_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", TEST_KEY)
    assert repr(TogetherRerank()) == (
        "TogetherRerank(model='Salesforce/Llama-Rank-V1', model_family='llama-rank', "
        "base_url='https://api.together.ai', api_key=<set, from TOGETHER_API_KEY>)"
    )
    tuned = TogetherRerank(together_api_key="another-key-0123456789", top_n=None, dedupe=False)
    assert repr(tuned) == (
        "TogetherRerank(model='Salesforce/Llama-Rank-V1', model_family='llama-rank', "
        "base_url='https://api.together.ai', top_n=None, dedupe=False, api_key=<set>)"
    )
    assert "another-key" not in repr(tuned) + str(tuned)


@pytest.mark.parametrize(("wrong", "right"), [("top_k", "top_n"), ("model_name", "model")])
def test_an_unknown_argument_names_the_closest_known_one(wrong: str, right: str) -> None:
    with pytest.raises(RerankConfigError, match=f"unknown argument '{wrong}'") as info:
        TogetherRerank(api_key=TEST_KEY, **{wrong: 3})
    assert f"did you mean '{right}'?" in str(info.value)
    assert "max_concurrency" not in str(info.value)
    with pytest.raises(RerankConfigError, match=f"did you mean '{right}'"):
        TogetherRerank(api_key=TEST_KEY).with_options(**{wrong: 3})
