"""Defects found by the review of the merged features (deadline, breaker, failover, cache,
extras, adapters) at their seams. Each test failed on the merged code before its fix."""

from __future__ import annotations

import base64
import logging
import time

import httpx
import pytest

from together_rerank_plugins import CircuitBreaker, RerankClient
from together_rerank_plugins.testing import LexicalRerankEndpoint

from .conftest import TEST_KEY

DOCS = ["red apples", "green pears", "red cherries"]
QUERY = "red apples"


def slow_timeout(seconds: float) -> httpx.MockTransport:
    """A server that answers nothing for ``seconds``, then the read times out."""

    def handler(request: httpx.Request) -> httpx.Response:
        time.sleep(seconds)
        raise httpx.ReadTimeout("no answer", request=request)

    return httpx.MockTransport(handler)


# -- a deadline spent by the primary is not the failover endpoint's failure -----------------
def test_failover_reached_with_no_time_left_is_not_counted_by_its_breaker() -> None:
    backup = LexicalRerankEndpoint()
    breaker = CircuitBreaker(failure_threshold=1)
    secondary = RerankClient(
        api_key=TEST_KEY,
        base_url="http://backup.example",
        transport=backup,
        circuit_breaker=breaker,
    )
    primary = RerankClient(
        api_key=TEST_KEY,
        max_retries=0,
        deadline=0.2,
        transport=slow_timeout(0.3),
        failover=[secondary],
        on_error="fallback",
    )
    results = primary.rerank(QUERY, DOCS)
    assert results.fallback
    assert backup.requests == []  # nothing was sent to the secondary...
    assert breaker.state == "closed"  # ...so its breaker learnt nothing about it
    assert breaker.failures == 0
    # and the healthy secondary still serves the next call that reaches it
    assert secondary.rerank(QUERY, DOCS).served_by == secondary.endpoint


async def test_async_failover_reached_with_no_time_left_is_not_counted() -> None:
    backup = LexicalRerankEndpoint()
    breaker = CircuitBreaker(failure_threshold=1)
    secondary = RerankClient(
        api_key=TEST_KEY,
        base_url="http://backup.example",
        transport=backup,
        circuit_breaker=breaker,
    )

    async def handler(request: httpx.Request) -> httpx.Response:
        import asyncio

        await asyncio.sleep(0.3)
        raise httpx.ReadTimeout("no answer", request=request)

    primary = RerankClient(
        api_key=TEST_KEY,
        max_retries=0,
        deadline=0.2,
        transport=httpx.MockTransport(handler),
        failover=[secondary],
        on_error="fallback",
    )
    results = await primary.arerank(QUERY, DOCS)
    assert results.fallback
    assert backup.requests == []
    assert breaker.state == "closed"
    assert breaker.failures == 0


# -- credentials in base_url ----------------------------------------------------------------
def test_credentials_in_base_url_reach_no_log_line_of_any_library(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, together, httpx, httpcore
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"results": [{"index": 0, "relevance_score": 0.5}]})

    client = RerankClient(
        api_key=TEST_KEY,
        base_url="http://alice:s3cr3t-pass@rerank.example.com/v1",
        transport=httpx.MockTransport(handler),
        default_headers={"X-Gateway-Token": "gw-token-0123456789"},
    )
    assert [r.index for r in client.rerank(QUERY, ["a"])] == [0]
    text = "\n".join(record.getMessage() for record in caplog.records)
    for secret in ("s3cr3t-pass", TEST_KEY, "gw-token-0123456789"):
        assert secret not in text
    assert "rerank.example.com" in text  # the requests were logged, without credentials
    # what was sent: HTTP Basic auth from the URL's credentials (httpx's rule, kept), the
    # gateway header, and a URL without credentials
    request = seen[0]
    expected = base64.b64encode(b"alice:s3cr3t-pass").decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert request.headers["x-gateway-token"] == "gw-token-0123456789"
    assert "s3cr3t" not in str(request.url)
