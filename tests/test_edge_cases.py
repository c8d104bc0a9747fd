"""Edge cases found in review: several blank candidates, negative scores, transports,
copies, and what fallback never hides."""

from __future__ import annotations

import copy

import httpx
import pytest
from langchain_core.documents import Document
from llama_index.core.schema import ImageNode, NodeWithScore, TextNode

import together_rerank_plugins as trp
from together_rerank_plugins import RerankClient
from together_rerank_plugins.langchain import TogetherRerank as LCRerank
from together_rerank_plugins.llama_index import TogetherRerank as LIRerank
from together_rerank_plugins.testing import LexicalRerankEndpoint

from .conftest import TEST_KEY


def test_every_blank_candidate_comes_back_none_is_merged() -> None:
    endpoint = LexicalRerankEndpoint()
    given = [
        NodeWithScore(node=TextNode(text="cats purr", id_="t")),
        NodeWithScore(node=ImageNode(image="aGVsbG8=", id_="img1")),
        NodeWithScore(node=ImageNode(image="d29ybGQ=", id_="img2")),
        NodeWithScore(node=TextNode(text="", id_="empty")),
    ]
    rerank = LIRerank(api_key=TEST_KEY, top_n=None, transport=endpoint)
    out = rerank.postprocess_nodes(given, query_str="cats")
    assert [n.node.node_id for n in out] == ["t", "img1", "img2", "empty"]
    assert endpoint.requests[0]["documents"] == ["cats purr"]
    docs = [Document("cats", id="a"), Document("", id="b"), Document(" ", id="c")]
    kept = LCRerank(api_key=TEST_KEY, top_n=None, transport=endpoint).compress_documents(
        docs, "cats"
    )
    assert [d.id for d in kept] == ["a", "b", "c"]


def test_blanks_stay_below_negative_scores_so_the_ranking_stays_sorted() -> None:
    def negative(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "results": [
                    {"index": 0, "relevance_score": -1.0},
                    {"index": 1, "relevance_score": -2.0},
                ]
            },
        )

    client = RerankClient(api_key=TEST_KEY, transport=httpx.MockTransport(negative))
    results = client.rerank("q", ["good doc", "", "other doc"])
    assert [r.index for r in results] == [0, 2, 1]
    scores = [r.relevance_score for r in results]
    assert scores == sorted(scores, reverse=True)
    kept = client.rerank("q", ["good doc", "", "other doc"], score_threshold=-1.5)
    assert [r.index for r in kept] == [0]  # the blank is not kept over a real -2.0


def test_a_sync_only_transport_is_refused_at_construction() -> None:
    with pytest.raises(trp.RerankConfigError, match="handle_async_request"):
        RerankClient(api_key=TEST_KEY, transport=httpx.HTTPTransport())


@pytest.mark.parametrize("cls", [LIRerank, LCRerank])
def test_adapters_can_be_copied_and_deep_copied(cls: type) -> None:
    rerank = cls(api_key=TEST_KEY, top_n=2, transport=LexicalRerankEndpoint())
    for other in (copy.copy(rerank), copy.deepcopy(rerank), rerank.model_copy(deep=True)):
        assert other.top_n == 2
        # one pool, which only the original closes: closing a copy's client leaves it open
        assert other.client._sdk is rerank.client._sdk
        assert not other.client._owns_connections


@pytest.mark.parametrize(
    ("status", "error"), [(404, trp.EndpointNotFoundError), (402, trp.APIStatusError)]
)
def test_fallback_never_hides_a_wrong_model_or_no_credit(status: int, error: type) -> None:
    down = httpx.MockTransport(lambda r: httpx.Response(status, json={"error": {"message": "x"}}))
    client = RerankClient(api_key=TEST_KEY, max_retries=0, on_error="fallback", transport=down)
    with pytest.raises(error):
        client.rerank("q", ["a", "b"])


def test_langchain_rerank_flags_a_fallback_instead_of_nan_scores() -> None:
    down = httpx.MockTransport(lambda r: httpx.Response(503, json={"error": {"message": "x"}}))
    rerank = LCRerank(api_key=TEST_KEY, max_retries=0, on_error="fallback", transport=down)
    assert rerank.rerank(["a", "b"], "q") == [
        {"index": 0, "relevance_score": None, "rerank_fallback": True},
        {"index": 1, "relevance_score": None, "rerank_fallback": True},
    ]


def test_core_score_never_falls_back() -> None:
    down = httpx.MockTransport(lambda r: httpx.Response(503, json={"error": {"message": "x"}}))
    client = RerankClient(api_key=TEST_KEY, max_retries=0, on_error="fallback", transport=down)
    with pytest.raises(trp.ServerError):
        client.score("q", ["a", "b"])
