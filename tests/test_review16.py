"""Issue 16, reviewed where its fixes meet each other and the other features (failover,
breaker, deadline, resolver, settings). Each test failed on the code before its fix. No
test opens a non-loopback socket."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import together_rerank_plugins as trp
from together_rerank_plugins import RerankClient

from .conftest import TEST_KEY
from .test_hot_path import DOCS, QUERY, Server


# -- a hanging failover endpoint behind a primary that fails fast -----------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_hanging_failover_behind_a_fast_failing_primary_opens_its_breaker(mode: str) -> None:
    """The primary answers 503 at once; the failover hangs, with the default ``timeout``
    (60 s, above the deadline). It had nearly the whole deadline and gave no answer: that
    is evidence against it. Its breaker must open, so later calls fall back at once instead
    of spending the whole deadline on it every time. (On the code before the fix the cut
    was never counted: the breaker stayed closed with 0 failures, and every call waited
    the deadline out.)"""
    breaker = trp.CircuitBreaker(failure_threshold=2, recovery_time=60)
    hung = Server(latency=None)
    secondary = RerankClient(
        model="acme/rerank-backup",
        api_key=TEST_KEY,
        base_url="http://backup.example",
        transport=hung,
        max_retries=0,
        circuit_breaker=breaker,
    )
    primary = RerankClient(
        api_key=TEST_KEY,
        transport=httpx.MockTransport(lambda r: httpx.Response(503, json={})),
        max_retries=0,
        deadline=0.3,
        failover=[secondary],
        on_error="fallback",
    ).warm_up()

    async def calls() -> list[Any]:
        return [await primary.arerank(QUERY, DOCS) for _ in range(4)]

    results = [primary.rerank(QUERY, DOCS) for _ in range(4)] if mode == "sync" else (
        asyncio.run(calls()))  # fmt: skip
    assert all(r.fallback for r in results)
    assert breaker.state == "open"
    assert hung.requests == 2  # the last two calls fell back without waiting on it
    assert isinstance(results[-1].error, trp.CircuitOpenError)
