"""Per-call overrides: ``with_options`` on both adapters, and LangChain's ``rerank(top_n=...)``.

No sockets: the embedded lexical endpoint answers every request.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode

from together_rerank_plugins import RerankConfigError
from together_rerank_plugins.langchain import RELEVANCE_SCORE_KEY
from together_rerank_plugins.langchain import TogetherRerank as LangChainRerank
from together_rerank_plugins.llama_index import TogetherRerank as LlamaIndexRerank
from together_rerank_plugins.testing import LexicalRerankEndpoint, lexical_scores

from .conftest import TEST_KEY

QUERY = "sweet red apples"
TEXTS = [
    "green pears and yellow bananas",
    "red apples are sweet",
    "red cars are fast",
    "apples and pears in a basket",
    "an apple a day keeps the doctor away",
    "red apples and green apples",
    "nothing relevant here",
    "sweet red fruit",
]
ADAPTERS = [LlamaIndexRerank, LangChainRerank]
ids = pytest.mark.parametrize("adapter", ADAPTERS, ids=["llama_index", "langchain"])


def make(adapter: type, endpoint: LexicalRerankEndpoint, **kwargs: Any) -> Any:
    return adapter(api_key=TEST_KEY, transport=endpoint, **kwargs)


def items(adapter: type) -> list[Any]:
    if adapter is LlamaIndexRerank:
        return [NodeWithScore(node=TextNode(text=t, id_=f"x{i}")) for i, t in enumerate(TEXTS)]
    return [Document(t, id=f"x{i}") for i, t in enumerate(TEXTS)]


def run(rr: Any, objs: list[Any]) -> list[tuple[str, float]]:
    """(id, score) best first, whichever adapter."""
    if isinstance(rr, LlamaIndexRerank):
        out = rr.postprocess_nodes(objs, query_str=QUERY)
        return [(n.node.node_id, n.score) for n in out]
    docs = rr.compress_documents(objs, QUERY)
    return [(d.id, d.metadata[RELEVANCE_SCORE_KEY]) for d in docs]


async def arun(rr: Any, objs: list[Any]) -> list[tuple[str, float]]:
    if isinstance(rr, LlamaIndexRerank):
        out = await rr.apostprocess_nodes(objs, query_str=QUERY)
        return [(n.node.node_id, n.score) for n in out]
    docs = await rr.acompress_documents(objs, QUERY)
    return [(d.id, d.metadata[RELEVANCE_SCORE_KEY]) for d in docs]


def expected(top_n: int | None, threshold: float | None = None) -> list[tuple[str, float]]:
    scores = lexical_scores(QUERY, TEXTS)
    order = sorted(range(len(TEXTS)), key=lambda i: (-scores[i], i))[:top_n]
    return [(f"x{i}", scores[i]) for i in order if threshold is None or scores[i] >= threshold]


@ids
def test_call_options_copy_shares_the_client_and_leaves_the_instance(adapter: type) -> None:
    endpoint = LexicalRerankEndpoint()
    shared = make(adapter, endpoint, top_n=5)
    before = shared.model_dump()

    one = shared.with_options(top_n=2)
    some = shared.with_options(top_n=None, score_threshold=0.3)

    assert one is not shared
    assert type(one) is adapter
    assert one.client._sdk is shared.client._sdk  # same connection pool...
    assert some.client._sdk is shared.client._sdk
    assert not one.client._owns_connections  # ...which closing a copy's client leaves open
    assert (one.top_n, some.top_n, some.score_threshold) == (2, None, 0.3)
    assert shared.top_n == 5
    assert shared.score_threshold is None
    assert shared.model_dump() == before

    assert run(one, items(adapter)) == expected(2)
    assert run(some, items(adapter)) == expected(None, threshold=0.3)
    assert run(shared, items(adapter)) == expected(5)
    assert [r.get("top_n") for r in endpoint.requests] == [2, None, 5]


@ids
def test_rank_fields_override_shares_the_client(adapter: type) -> None:
    endpoint = LexicalRerankEndpoint()
    shared = make(adapter, endpoint, top_n=1)
    by_title = shared.with_options(rank_fields=["title", "text"])
    assert by_title.client._sdk is shared.client._sdk
    assert shared.rank_fields is None
    if adapter is LlamaIndexRerank:
        objs: list[Any] = [
            NodeWithScore(node=TextNode(text=t, metadata={"title": f"t{i}"}))
            for i, t in enumerate(TEXTS)
        ]
    else:
        objs = [Document(t, metadata={"title": f"t{i}"}) for i, t in enumerate(TEXTS)]
    run(by_title, objs)
    assert endpoint.requests[-1]["rank_fields"] == ["title", "text"]
    assert endpoint.requests[-1]["documents"][0] == {"title": "t0", "text": TEXTS[0]}
    run(shared, objs)
    assert "rank_fields" not in endpoint.requests[-1]


@ids
async def test_concurrent_tasks_with_different_top_n(adapter: type) -> None:
    endpoint = LexicalRerankEndpoint()
    shared = make(adapter, endpoint, top_n=3)
    wanted = [1 + (i % len(TEXTS)) for i in range(40)]

    async def one(top_n: int) -> list[tuple[str, float]]:
        return await arun(shared.with_options(top_n=top_n), items(adapter))

    results = await asyncio.gather(*(one(n) for n in wanted))

    assert [len(r) for r in results] == wanted
    assert all(r == expected(n) for r, n in zip(results, wanted, strict=True))
    assert shared.top_n == 3
    assert len(endpoint.requests) == len(wanted)
    # every copy went through the shared client: one async SDK client for this loop
    assert len(shared.client._sdk._async) == 1


@ids
def test_concurrent_threads_with_different_top_n(adapter: type) -> None:
    endpoint = LexicalRerankEndpoint()
    shared = make(adapter, endpoint, top_n=3)
    wanted = [1 + (i % len(TEXTS)) for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda n: run(shared.with_options(top_n=n), items(adapter)), wanted)
        )
    assert all(r == expected(n) for r, n in zip(results, wanted, strict=True))
    assert shared.top_n == 3


@ids
def test_other_options_build_a_new_client(adapter: type) -> None:
    endpoint = LexicalRerankEndpoint()
    shared = make(adapter, endpoint, top_n=2, timeout=30.0)
    patient = shared.with_options(timeout=120.0, top_n=1)

    assert patient.client is not shared.client
    assert patient.client.timeout == 120.0
    assert shared.client.timeout == 30.0
    assert (patient.top_n, shared.top_n) == (1, 2)
    # everything else is carried over, key and transport included
    assert patient.client.model == shared.client.model
    assert patient.client.base_url == shared.client.base_url
    assert run(patient, items(adapter)) == expected(1)
    assert endpoint.requests[-1]["top_n"] == 1

    other_model = shared.with_options(model="my-org/other-ranker")
    assert other_model.client.model == "my-org/other-ranker"
    assert shared.client.model == "Salesforce/Llama-Rank-V1"


@ids
def test_unknown_or_bad_option_is_a_config_error(adapter: type) -> None:
    shared = make(adapter, LexicalRerankEndpoint())
    with pytest.raises(RerankConfigError, match="topn"):
        shared.with_options(topn=3)
    with pytest.raises(RerankConfigError, match="top_n"):
        shared.with_options(top_n=0)
    with pytest.raises(RerankConfigError):
        shared.with_options(score_threshold=float("nan"))
    assert shared.top_n == 5


async def test_langchain_rerank_top_n_per_call() -> None:
    endpoint = LexicalRerankEndpoint()
    shared = make(LangChainRerank, endpoint, top_n=2)

    def pairs(ranking: list[dict[str, Any]]) -> list[tuple[str, float]]:
        return [(f"x{r['index']}", r["relevance_score"]) for r in ranking]

    assert pairs(shared.rerank(TEXTS, QUERY)) == expected(2)
    assert pairs(shared.rerank(TEXTS, QUERY, top_n=4)) == expected(4)
    assert pairs(await shared.arerank(TEXTS, QUERY, top_n=1)) == expected(1)
    assert pairs(shared.rerank(TEXTS, QUERY, top_n=None)) == expected(None)
    assert [r.get("top_n") for r in endpoint.requests] == [2, 4, 1, None]
    assert shared.top_n == 2


def test_with_options_works_inside_a_retriever() -> None:
    """The documented pattern: a per-request retriever over a shared reranker."""
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.retrievers import BaseRetriever

    class Everything(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return items(LangChainRerank)

    endpoint = LexicalRerankEndpoint()
    shared = make(LangChainRerank, endpoint, top_n=5)
    retriever = ContextualCompressionRetriever(
        base_compressor=shared.with_options(top_n=2), base_retriever=Everything()
    )
    out = retriever.invoke(QUERY)
    assert [(d.id, d.metadata[RELEVANCE_SCORE_KEY]) for d in out] == expected(2)
    assert shared.top_n == 5
