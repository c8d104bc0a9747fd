"""on_error="fallback": retrieval order, logged, flagged; never masking the caller's errors."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

import together_rerank_plugins as trp
from together_rerank_plugins import RerankClient
from together_rerank_plugins.langchain import TogetherRerank as LCRerank
from together_rerank_plugins.llama_index import TogetherRerank as LIRerank

from .conftest import TEST_KEY, failing, hanging, malformed

DOCS = ["first retrieved", "second retrieved", "third retrieved", "fourth retrieved"]


FALLBACK_CAUSES = {
    "server error": lambda: failing(503),
    "rate limited": lambda: failing(429),
    "timeout": hanging,
    "malformed": malformed,
}


@pytest.mark.parametrize("cause", FALLBACK_CAUSES)
async def test_core_falls_back_to_retrieval_order_and_logs(
    cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = RerankClient(
        api_key=TEST_KEY, max_retries=0, on_error="fallback", transport=FALLBACK_CAUSES[cause]()
    )
    for results in (
        client.rerank("q", DOCS, top_n=2),
        await client.arerank("q", DOCS, top_n=2),
    ):
        assert results.fallback is True
        assert isinstance(results.error, trp.RerankError)
        assert [r.index for r in results] == [0, 1]
        assert all(math.isnan(r.relevance_score) for r in results)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "retrieval order" in warnings[0].getMessage()
    assert type(results.error).__name__ in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, trp.AuthenticationError), (403, trp.AuthenticationError), (400, trp.BadRequestError)],
)
def test_fallback_never_masks_authentication_or_bad_request(status: int, error: type) -> None:
    client = RerankClient(
        api_key=TEST_KEY, max_retries=0, on_error="fallback", transport=failing(status)
    )
    with pytest.raises(error):
        client.rerank("q", DOCS)


def test_fallback_never_masks_bad_input() -> None:
    client = RerankClient(api_key=TEST_KEY, on_error="fallback", transport=failing(500))
    with pytest.raises(trp.RerankInputError):
        client.rerank("   ", DOCS)


def test_default_is_raise() -> None:
    client = RerankClient(api_key=TEST_KEY, max_retries=0, transport=failing(500))
    with pytest.raises(trp.ServerError):
        client.rerank("q", DOCS)
    with pytest.raises(trp.RerankConfigError, match="on_error"):
        RerankClient(api_key=TEST_KEY, on_error="ignore")


def test_dedupe_applies_to_fallback_too() -> None:
    client = RerankClient(
        api_key=TEST_KEY, max_retries=0, on_error="fallback", transport=failing(500)
    )
    results = client.rerank("q", ["a", "a", "b"])
    assert [r.index for r in results] == [0, 2]


# -- LlamaIndex ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_llama_index_fallback_flags_nodes_keeps_scores_and_ends_events(mode: str) -> None:
    debug = LlamaDebugHandler()
    rerank = LIRerank(
        api_key=TEST_KEY,
        top_n=3,
        max_retries=0,
        on_error="fallback",
        transport=failing(502),
        callback_manager=CallbackManager([debug]),
    )
    nodes = [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=1.0 - i / 10)
        for i, t in enumerate(DOCS)
    ]
    if mode == "sync":
        out = rerank.postprocess_nodes(nodes, query_str="q")
    else:
        out = await rerank.apostprocess_nodes(nodes, query_str="q")
    assert [n.node.node_id for n in out] == ["n0", "n1", "n2"]
    assert [n.score for n in out] == [1.0, 0.9, 0.8]  # retrieval scores, not NaN
    for n in out:
        assert n.node.metadata["rerank_fallback"] is True
        assert n.node.metadata["retrieval_score"] == n.score  # the key is there, as scored
        assert n.node.metadata["relevance_score"] is None  # there, as in LangChain: unscored
        assert "rerank_fallback" not in n.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "rerank_fallback" not in nodes[0].node.metadata  # caller's nodes untouched
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 1
    assert len(pairs[0]) == 2  # start and end


# -- LangChain -----------------------------------------------------------------------------
class Runs(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_retriever_end(self, documents: Any, **kwargs: Any) -> None:
        self.events.append("end")

    def on_retriever_error(self, error: BaseException, **kwargs: Any) -> None:
        self.events.append("error")


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_langchain_fallback_flags_documents_and_ends_the_run(mode: str) -> None:
    rerank = LCRerank(
        api_key=TEST_KEY, top_n=2, max_retries=0, on_error="fallback", transport=hanging()
    )
    docs = [Document(t, id=f"d{i}", metadata={"n": i}) for i, t in enumerate(DOCS)]
    runs = Runs()
    if mode == "sync":
        out = rerank.compress_documents(docs, "q", callbacks=[runs])
    else:
        out = await rerank.acompress_documents(docs, "q", callbacks=[runs])
    assert [d.id for d in out] == ["d0", "d1"]
    for d in out:
        assert d.metadata["rerank_fallback"] is True
        # the README's `d.metadata["relevance_score"]` works on a fallback too: None, no score
        assert d.metadata["relevance_score"] is None
    assert runs.events == ["end"]
    assert "rerank_fallback" not in docs[0].metadata


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_langchain_fallback_replaces_an_earlier_stages_score_with_none(mode: str) -> None:
    """A score left by an earlier rerank stage is not this call's: a fallback says None."""
    rerank = LCRerank(api_key=TEST_KEY, max_retries=0, on_error="fallback", transport=failing(503))
    docs = [Document(t, metadata={"relevance_score": 0.9}) for t in DOCS]
    if mode == "sync":
        out = rerank.compress_documents(docs, "q")
    else:
        out = await rerank.acompress_documents(docs, "q")
    assert [d.metadata["relevance_score"] for d in out] == [None] * len(out)
    assert all(d.metadata["rerank_fallback"] is True for d in out)
    assert docs[0].metadata == {"relevance_score": 0.9}  # the caller's documents untouched


def test_llama_index_retrieval_score_key_is_present_without_a_retrieval_score() -> None:
    rerank = LIRerank(api_key=TEST_KEY, max_retries=0, on_error="fallback", transport=failing(503))
    nodes = [NodeWithScore(node=TextNode(text=t), score=None) for t in DOCS]
    out = rerank.postprocess_nodes(nodes, query_str="q")
    assert [n.node.metadata["retrieval_score"] for n in out] == [None] * len(out)
    assert "retrieval_score" not in out[0].node.get_content(metadata_mode=MetadataMode.LLM)
