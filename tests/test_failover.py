"""failover=: the whole call scored by the next endpoint, never a mix; errors that need a fix
are not passed over. In-process transports (no sockets); see test_resilience_loopback.py."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

import together_rerank_plugins as trp
from together_rerank_plugins import CircuitBreaker, RerankClient
from together_rerank_plugins.langchain import SERVED_BY_KEY
from together_rerank_plugins.langchain import TogetherRerank as LCRerank
from together_rerank_plugins.llama_index import TogetherRerank as LIRerank
from together_rerank_plugins.testing import LexicalRerankEndpoint, pointwise_lexical_scores

from .conftest import TEST_KEY, failing, hanging, malformed

DOCS = ["red apples", "green pears", "red cherries", "yellow bananas", "red apples pie"]
QUERY = "red apples"


def secondary_scores(query: str, texts: list[str]) -> list[float]:
    """Different from the primary's scale, so a mixed ranking would show."""
    return [round(1.0 + s, 6) for s in pointwise_lexical_scores(query, texts)]


COVERED = {
    "503": lambda: failing(503),
    "500": lambda: failing(500),
    "429": lambda: failing(429),
    "timeout": hanging,
    "malformed": malformed,
}


def make_secondary(**kw: Any) -> tuple[RerankClient, LexicalRerankEndpoint]:
    endpoint = LexicalRerankEndpoint(scorer=secondary_scores)
    client = RerankClient(
        model="acme/rerank-backup",
        api_key="secondary-key-0123456789",
        base_url="http://backup.example/v1",
        transport=endpoint,
        **kw,
    )
    return client, endpoint


def expected_secondary(docs: list[str], top_n: int | None = None) -> list[tuple[int, float]]:
    solo, _ = make_secondary()
    return [(r.index, r.relevance_score) for r in solo.rerank(QUERY, docs, top_n=top_n)]


def pairs(results: Any) -> list[tuple[int, float]]:
    return [(r.index, r.relevance_score) for r in results]


@pytest.mark.parametrize("cause", COVERED)
async def test_covered_failures_fail_over_to_the_secondary_sync_and_async(cause: str) -> None:
    secondary, seen = make_secondary()
    primary = RerankClient(
        api_key=TEST_KEY, max_retries=0, transport=COVERED[cause](), failover=[secondary]
    )
    for results in (
        primary.rerank(QUERY, DOCS, top_n=3),
        await primary.arerank(QUERY, DOCS, top_n=3),
    ):
        assert pairs(results) == expected_secondary(DOCS, 3)
        assert results.failed_over
        assert not results.fallback
        assert results.served_by == trp.Endpoint("acme/rerank-backup", "http://backup.example")
        assert str(results.served_by) == "acme/rerank-backup @ http://backup.example"
    assert [r["model"] for r in seen.requests] == ["acme/rerank-backup"] * 2


def test_the_primary_answering_names_itself_and_is_not_failed_over() -> None:
    secondary, seen = make_secondary()
    primary = RerankClient(api_key=TEST_KEY, transport=LexicalRerankEndpoint(), failover=secondary)
    results = primary.rerank(QUERY, DOCS)
    assert results.served_by == primary.endpoint
    assert not results.failed_over
    assert seen.requests == []


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (400, trp.BadRequestError),
        (401, trp.AuthenticationError),
        (403, trp.AuthenticationError),
        (404, trp.EndpointNotFoundError),
        (402, trp.APIStatusError),
        (422, trp.BadRequestError),
    ],
)
async def test_errors_that_need_a_fix_raise_from_the_primary_without_failover(
    code: int, error: type
) -> None:
    secondary, seen = make_secondary()
    primary = RerankClient(
        api_key=TEST_KEY, transport=failing(code), failover=[secondary], on_error="fallback"
    )
    with pytest.raises(error):
        primary.rerank(QUERY, DOCS)
    with pytest.raises(error):
        await primary.arerank(QUERY, DOCS)
    assert seen.requests == []


async def test_an_open_primary_breaker_goes_straight_to_the_secondary() -> None:
    calls = []

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, json={"error": {"message": "down"}})

    secondary, _ = make_secondary()
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=60)
    primary = RerankClient(
        api_key=TEST_KEY,
        max_retries=0,
        transport=httpx.MockTransport(down),
        circuit_breaker=breaker,
        failover=[secondary],
    )
    primary.rerank(QUERY, DOCS)
    for results in (primary.rerank(QUERY, DOCS), await primary.arerank(QUERY, DOCS)):
        assert results.failed_over
        assert pairs(results) == expected_secondary(DOCS)
    assert len(calls) == 1


def test_chain_tries_each_endpoint_in_order_with_its_own_breaker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    second_breaker = CircuitBreaker(failure_threshold=1, recovery_time=60)
    second = RerankClient(
        api_key=TEST_KEY,
        base_url="http://second.example",
        max_retries=0,
        transport=failing(500),
        circuit_breaker=second_breaker,
    )
    third, seen = make_secondary()
    primary = RerankClient(
        api_key=TEST_KEY, max_retries=0, transport=failing(503), failover=[second, third]
    )
    results = primary.rerank(QUERY, DOCS)
    assert results.served_by == third.endpoint
    assert pairs(results) == expected_secondary(DOCS)
    assert second_breaker.state == "open"
    moves = [r.getMessage() for r in caplog.records if "failover endpoint" in r.getMessage()]
    assert len(moves) == 2
    assert "ServerError" in moves[0]
    assert "http://second.example" in moves[0]
    assert "http://backup.example" in moves[1]
    assert len(seen.requests) == 1


async def test_when_every_endpoint_fails_on_error_decides() -> None:
    second = RerankClient(api_key=TEST_KEY, max_retries=0, transport=hanging(), timeout=1)
    raising = RerankClient(
        api_key=TEST_KEY, max_retries=0, transport=failing(503), failover=[second]
    )
    with pytest.raises(trp.RerankTimeoutError):  # the last endpoint's error
        raising.rerank(QUERY, DOCS)
    with pytest.raises(trp.RerankTimeoutError):
        await raising.arerank(QUERY, DOCS)
    lenient = RerankClient(
        api_key=TEST_KEY,
        max_retries=0,
        transport=failing(503),
        failover=[second],
        on_error="fallback",
    )
    for results in (lenient.rerank(QUERY, DOCS, top_n=2), await lenient.arerank(QUERY, DOCS)):
        assert results.fallback
        assert results.served_by is None
        assert not results.failed_over
        assert isinstance(results.error, trp.RerankTimeoutError)
        assert all(math.isnan(r.relevance_score) for r in results)


async def test_a_failover_endpoint_with_a_wrong_key_raises_even_with_fallback() -> None:
    bad_key = RerankClient(
        api_key="wrong-key-0123456789", transport=LexicalRerankEndpoint(api_keys={TEST_KEY})
    )
    primary = RerankClient(
        api_key=TEST_KEY,
        max_retries=0,
        transport=failing(503),
        failover=[bad_key],
        on_error="fallback",
    )
    with pytest.raises(trp.AuthenticationError):
        primary.rerank(QUERY, DOCS)
    with pytest.raises(trp.AuthenticationError):
        await primary.arerank(QUERY, DOCS)


class FailsAfterThreeAnswers(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Answers every batch but the one holding "item 12", which fails with a 503 only once
    three other batches have answered. Without that wait, with several batches in flight the
    failing one could come first and the others never be sent (that is what a failure does),
    so the test would not always show scores that came back and were then thrown away."""

    def __init__(self) -> None:
        self.good = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
        self.answered = 0
        self._sync_cond = threading.Condition()
        self._async_count = 0
        self._async_three: asyncio.Event | None = None

    @staticmethod
    def _fails(request: httpx.Request) -> bool:
        return b"item 12" in request.content

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self._sync_cond:
            if self._fails(request):
                assert self._sync_cond.wait_for(lambda: self.answered >= 3, timeout=30)
                return httpx.Response(503, json={"error": {"message": "down"}})
        response = self.good.handle(request)
        with self._sync_cond:
            self.answered += 1
            self._sync_cond.notify_all()
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        if self._async_three is None:
            self._async_three = asyncio.Event()
        if self._fails(request):
            await asyncio.wait_for(self._async_three.wait(), timeout=30)
            return httpx.Response(503, json={"error": {"message": "down"}})
        response = self.good.handle(request)
        self.answered += 1
        self._async_count += 1
        if self._async_count >= 3:
            self._async_three.set()
        return response


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_a_batch_failing_midway_is_rescored_whole_on_the_next_endpoint(
    concurrency: int,
) -> None:
    """The primary answers three batches, then one fails: none of its scores survive."""
    docs = [f"{w} item {i}" for i, w in enumerate(["red", "apples", "green", "pears"] * 5)]
    flaky = FailsAfterThreeAnswers()
    secondary, seen = make_secondary()
    primary = RerankClient(
        api_key=TEST_KEY,
        max_retries=0,
        max_batch_size=4,
        max_concurrency=concurrency,
        transport=flaky,
        failover=[secondary],
    )
    sync = primary.rerank(QUERY, docs)
    assert flaky.answered >= 3  # three of the primary's batches did answer (a 5th may have)
    before = flaky.answered
    async_ = await primary.arerank(QUERY, docs)
    assert flaky.answered - before >= 3
    for results in (sync, async_):
        assert pairs(results) == expected_secondary(docs)
        assert all(r.relevance_score >= 1.0 for r in results)  # all on the secondary's scale
    assert sum(len(r["documents"]) for r in seen.requests) == 2 * len(docs)


async def test_failover_scores_go_to_its_own_cache_never_the_primarys() -> None:
    primary_endpoint = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    switch = {"down": False}

    def maybe_down(request: httpx.Request) -> httpx.Response:
        if switch["down"]:
            return httpx.Response(503, json={"error": {"message": "down"}})
        return primary_endpoint.handle(request)

    primary_cache = trp.InMemoryScoreStore()
    secondary_cache = trp.InMemoryScoreStore()
    secondary, seen = make_secondary(cache=secondary_cache)
    primary = RerankClient(
        api_key=TEST_KEY,
        max_retries=0,
        cache=primary_cache,
        transport=httpx.MockTransport(maybe_down),
        failover=[secondary],
    )
    primary.rerank(QUERY, DOCS[:3])  # the primary caches 3 scores
    assert len(primary_cache) == 3
    switch["down"] = True
    results = primary.rerank(QUERY, DOCS)  # 3 of 5 cached by the primary, then it fails
    assert pairs(results) == expected_secondary(DOCS)  # no primary score mixed in
    assert results.cache_hits == 0
    assert len(seen.requests[0]["documents"]) == 5
    assert len(primary_cache) == 3
    assert len(secondary_cache) == 5
    again = await primary.arerank(QUERY, DOCS)  # the secondary's own cache answers
    assert pairs(again) == pairs(results)
    assert again.cache_hits == 5
    assert len(seen.requests) == 1


def test_failover_uses_its_own_limits_and_the_primarys_call_shape() -> None:
    docs = ["red apples", "red apples", "green pears", "red cherries"]
    secondary, seen = make_secondary(max_batch_size=2, dedupe=True)
    primary = RerankClient(
        api_key=TEST_KEY, max_retries=0, transport=failing(503), dedupe=False, failover=[secondary]
    )
    results = primary.rerank(QUERY, docs, score_threshold=1.5)
    # its batch size (batches run concurrently: compare regardless of order)
    assert sorted(len(r["documents"]) for r in seen.requests) == [1, 2]
    assert sorted(r.index for r in results) == [0, 1]  # the primary's dedupe=False
    assert results.duplicates == 1


def test_score_uses_the_answering_endpoints_scores() -> None:
    secondary, _ = make_secondary()
    primary = RerankClient(
        api_key=TEST_KEY, max_retries=0, transport=failing(503), failover=[secondary]
    )
    docs = ["green pears", "red apples", "green pears"]
    assert primary.score(QUERY, docs) == [
        *secondary_scores(QUERY, ["green pears", "red apples"]),
        secondary_scores(QUERY, ["green pears"])[0],
    ]


def _mxbai_failover() -> tuple[RerankClient, LexicalRerankEndpoint]:
    endpoint = LexicalRerankEndpoint()
    client = RerankClient(
        model="mixedbread-ai/Mxbai-Rerank-Large-V2", api_key=TEST_KEY, transport=endpoint
    )
    return client, endpoint


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_failover_that_cannot_take_rank_fields_is_skipped_then_the_call_falls_back(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An Mxbai failover (accepted at construction) cannot rank object
    documents with `rank_fields`; a 503 from the primary raised RerankInputError, defeating
    on_error="fallback". It is skipped (logged once) and the call falls back as asked."""
    caplog.set_level(logging.INFO, logger="together_rerank_plugins")
    mxbai, endpoint = _mxbai_failover()
    primary = RerankClient(
        api_key=TEST_KEY,
        max_retries=0,
        transport=failing(503),
        failover=[mxbai],
        on_error="fallback",
    )
    docs = [{"text": "green pears"}, {"text": "red apples"}]
    for _ in range(3):
        if mode == "sync":
            results = primary.rerank(QUERY, docs, rank_fields=["text"])
        else:
            results = asyncio.run(primary.arerank(QUERY, docs, rank_fields=["text"]))
        assert results.fallback
        assert [r.index for r in results] == [0, 1]
        assert isinstance(results.error, trp.ServerError)  # the primary's failure, not ours
    assert endpoint.requests == []  # nothing was sent to the endpoint that cannot take it
    skipped = [r for r in caplog.records if "cannot serve" in r.getMessage()]
    assert len(skipped) == 1  # logged once...
    assert skipped[0].levelno == logging.WARNING
    # a call it can serve still goes to it
    assert primary.rerank(QUERY, ["red apples"]).failed_over


def test_a_failover_that_cannot_take_rank_fields_is_skipped_for_the_next_one() -> None:
    mxbai, _ = _mxbai_failover()
    secondary, backup = make_secondary()
    primary = RerankClient(
        api_key=TEST_KEY, max_retries=0, transport=failing(503), failover=[mxbai, secondary]
    )
    results = primary.rerank(QUERY, [{"text": "red apples"}], rank_fields=["text"])
    assert results.served_by == secondary.endpoint
    assert not results.fallback
    assert len(backup.requests) == 1
    # on_error="raise": the primary's own error, not an input error about the failover
    alone = RerankClient(api_key=TEST_KEY, max_retries=0, transport=failing(503), failover=[mxbai])
    with pytest.raises(trp.ServerError):
        alone.rerank(QUERY, [{"text": "red apples"}], rank_fields=["text"])


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("query", "docs"),
    [
        (QUERY, ["red apples " * 400]),  # a document over the failover's budget
        ("red apples " * 200, ["red apples"]),  # a query that takes most of it
    ],
    ids=["long-document", "long-query"],
)
def test_a_failover_whose_token_budget_refuses_the_call_is_skipped(
    mode: str, query: str, docs: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A failover endpoint with a smaller token budget (``max_tokens_per_doc``) and
    ``long_documents="error"`` refuses a call the primary took: during a primary outage
    that raised RerankInputError, defeating on_error="fallback" (and naming no endpoint).
    It is an endpoint that cannot serve this call, as an Mxbai one with rank_fields: it
    is skipped, nothing is sent to it, and the call goes on to the next one or falls back."""
    caplog.set_level(logging.INFO, logger="together_rerank_plugins")
    small = LexicalRerankEndpoint()
    strict = RerankClient(
        model="acme/small-budget",
        api_key=TEST_KEY,
        transport=small,
        max_tokens_per_doc=256,
        long_documents="error",
    )
    secondary, backup = make_secondary()

    def call(client: RerankClient) -> trp.RerankResults:
        if mode == "sync":
            return client.rerank(query, docs)
        return asyncio.run(client.arerank(query, docs))

    falls_back = RerankClient(
        api_key=TEST_KEY,
        max_retries=0,
        transport=failing(503),
        failover=[strict],
        on_error="fallback",
    )
    results = call(falls_back)
    assert results.fallback
    assert isinstance(results.error, trp.ServerError)
    goes_on = RerankClient(
        api_key=TEST_KEY, max_retries=0, transport=failing(503), failover=[strict, secondary]
    )
    assert call(goes_on).served_by == secondary.endpoint
    assert small.requests == []
    assert len(backup.requests) == 1
    skipped = [r for r in caplog.records if "cannot serve" in r.getMessage()]
    assert skipped
    assert "acme/small-budget" in skipped[0].getMessage()


@pytest.mark.parametrize("bad", ["http://x", 3, [object()], [None]])
def test_failover_must_be_rerank_clients(bad: Any) -> None:
    with pytest.raises(trp.RerankConfigError, match="failover"):
        RerankClient(api_key=TEST_KEY, failover=bad)


def test_served_by_and_logs_carry_no_credentials(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="together_rerank_plugins")
    secret_url = RerankClient(
        api_key="secondary-key-0123456789",
        base_url="http://user:hunter2-password@backup.example/v1",
        transport=LexicalRerankEndpoint(api_keys=None),
    )
    assert str(secret_url.endpoint) == "Salesforce/Llama-Rank-V1 @ http://backup.example"
    primary = RerankClient(
        api_key=TEST_KEY, max_retries=0, transport=failing(503), failover=[secret_url]
    )
    with pytest.raises(trp.RerankError):  # httpx turns user:password into Basic auth: 401
        primary.rerank(QUERY, DOCS)
    for record in caplog.records:
        message = record.getMessage()
        assert "hunter2" not in message
        assert "secondary-key" not in message
        assert TEST_KEY not in message


# -- adapters ---------------------------------------------------------------------------------
async def test_llama_index_marks_failover_nodes_out_of_llm_and_embedding_text() -> None:
    secondary, _ = make_secondary()
    rerank = LIRerank(
        api_key=TEST_KEY, max_retries=0, transport=failing(503), failover=[secondary], top_n=2
    )
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in DOCS]
    for out in (
        rerank.postprocess_nodes(nodes, query_str=QUERY),
        await rerank.apostprocess_nodes(nodes, query_str=QUERY),
    ):
        assert [(n.node.text, n.score) for n in out] == [
            (DOCS[i], s) for i, s in expected_secondary(DOCS, 2)
        ]
        for n in out:
            assert n.node.metadata[SERVED_BY_KEY] == "acme/rerank-backup @ http://backup.example"
            assert "backup" not in n.node.get_content(MetadataMode.LLM)
            assert "backup" not in n.node.get_content(MetadataMode.EMBED)
    assert all(SERVED_BY_KEY not in n.node.metadata for n in nodes)  # caller's nodes untouched


def test_llama_index_leaves_primary_answers_unmarked() -> None:
    secondary, _ = make_secondary()
    rerank = LIRerank(api_key=TEST_KEY, transport=LexicalRerankEndpoint(), failover=[secondary])
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in DOCS]
    assert all(
        SERVED_BY_KEY not in n.node.metadata
        for n in rerank.postprocess_nodes(nodes, query_str=QUERY)
    )


async def test_langchain_marks_failover_documents_and_rerank_dicts() -> None:
    secondary, _ = make_secondary()
    rerank = LCRerank(
        api_key=TEST_KEY, max_retries=0, transport=failing(503), failover=[secondary], top_n=2
    )
    docs = [Document(page_content=t, id=f"d{i}") for i, t in enumerate(DOCS)]
    expected = expected_secondary(DOCS, 2)
    for out in (
        rerank.compress_documents(docs, QUERY),
        await rerank.acompress_documents(docs, QUERY),
    ):
        assert [(d.id, d.metadata["relevance_score"]) for d in out] == [
            (f"d{i}", s) for i, s in expected
        ]
        assert {d.metadata[SERVED_BY_KEY] for d in out} == {
            "acme/rerank-backup @ http://backup.example"
        }
        assert all("backup" not in d.page_content for d in out)
    for dicts in (rerank.rerank(docs, QUERY), await rerank.arerank(docs, QUERY)):
        assert dicts == [
            {"index": i, "relevance_score": s, SERVED_BY_KEY: str(secondary.endpoint)}
            for i, s in expected
        ]
    assert all(SERVED_BY_KEY not in d.metadata for d in docs)


def test_adapter_copies_share_the_failover_clients() -> None:
    import copy

    secondary, _ = make_secondary()
    rerank = LCRerank(api_key=TEST_KEY, failover=[secondary])
    for other in (
        copy.deepcopy(rerank),
        rerank.with_options(top_n=1),
        rerank.with_options(timeout=3),
    ):
        assert other.client.failover[0] is secondary
    assert "failover" not in rerank.model_dump()
    assert "secondary" not in repr(rerank)
