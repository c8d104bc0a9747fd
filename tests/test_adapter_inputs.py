"""Adapters and the caller's objects.

- Results map onto the snapshot that was sent, even if the caller's list changes while the
  call is in flight (another thread, a callback): the transport here reverses or empties
  the caller's list between the request and the answer.
- LangChain's ``TogetherRerank(api_key=..., together_api_key=...)`` says the key was given
  twice (not "unknown argument").

No socket: the transport is an in-process ``httpx.MockTransport``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import together_rerank_plugins as trp
from together_rerank_plugins.testing import LexicalRerankEndpoint, lexical_scores

from .conftest import TEST_KEY

TEXTS = ["snow trail", "coffee market prices", "river bank", "coffee beans", "tea garden"]
QUERY = "coffee market"


class Meddler(httpx.MockTransport):
    """Answers as the lexical endpoint, after changing ``victim`` (the caller's list)."""

    def __init__(self, how: str) -> None:
        self.endpoint = LexicalRerankEndpoint()
        self.victim: list[Any] = []
        self.how = how
        super().__init__(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        response = self.endpoint.handle(request)
        if self.how == "reverse":
            self.victim.reverse()
        else:
            self.victim.clear()
        return response


def expected_texts(top_n: int | None = None) -> list[str]:
    scores = lexical_scores(QUERY, TEXTS)
    order = sorted(range(len(TEXTS)), key=lambda i: (-scores[i], i))[:top_n]
    return [TEXTS[i] for i in order]


def _langchain(meddler: Meddler) -> tuple[Any, list[Any]]:
    from langchain_core.documents import Document

    from together_rerank_plugins.langchain import TogetherRerank

    docs = [Document(t, id=f"d{i}") for i, t in enumerate(TEXTS)]
    meddler.victim = docs
    return TogetherRerank(top_n=3, api_key=TEST_KEY, transport=meddler, max_retries=0), docs


def _llama_index(meddler: Meddler) -> tuple[Any, list[Any]]:
    from llama_index.core.schema import NodeWithScore, TextNode

    from together_rerank_plugins.llama_index import TogetherRerank

    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}")) for i, t in enumerate(TEXTS)]
    meddler.victim = nodes
    return TogetherRerank(top_n=3, api_key=TEST_KEY, transport=meddler, max_retries=0), nodes


@pytest.mark.parametrize("how", ["reverse", "clear"])
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_langchain_maps_results_onto_what_was_sent(how: str, mode: str) -> None:
    rerank, docs = _langchain(Meddler(how))
    sent = list(docs)
    if mode == "sync":
        out = rerank.compress_documents(docs, QUERY)
    else:
        out = await rerank.acompress_documents(docs, QUERY)
    assert [d.page_content for d in out] == expected_texts(3)
    scores = dict(zip(TEXTS, lexical_scores(QUERY, TEXTS), strict=True))
    for d in out:
        assert d.metadata["relevance_score"] == scores[d.page_content]
        assert d.id == sent[TEXTS.index(d.page_content)].id


@pytest.mark.parametrize("how", ["reverse", "clear"])
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_llama_index_maps_results_onto_what_was_sent(how: str, mode: str) -> None:
    rerank, nodes = _llama_index(Meddler(how))
    if mode == "sync":
        out = rerank.postprocess_nodes(nodes, query_str=QUERY)
    else:
        out = await rerank.apostprocess_nodes(nodes, query_str=QUERY)
    assert [n.node.get_content() for n in out] == expected_texts(3)
    scores = dict(zip(TEXTS, lexical_scores(QUERY, TEXTS), strict=True))
    for n in out:
        assert n.score == scores[n.node.get_content()]
        assert n.node.node_id == f"n{TEXTS.index(n.node.get_content())}"


def test_langchain_key_given_under_both_names_says_so() -> None:
    from together_rerank_plugins.langchain import TogetherRerank

    with pytest.raises(trp.RerankConfigError) as info:
        TogetherRerank(api_key=TEST_KEY, together_api_key=TEST_KEY)
    message = str(info.value)
    assert "given twice" in message
    assert "`api_key`" in message
    assert "`together_api_key`" in message
    assert "unknown" not in message
    assert TEST_KEY not in message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
