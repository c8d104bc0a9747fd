"""A score store in Redis, shared by every process that talks to the same server.

Several replicas of a service that point their ``cache=`` at one Redis share their scores:
a query scored by one costs no document in another. This module wraps a plain ``redis``
client (``redis.Redis``, and optionally ``redis.asyncio.Redis``) in the score-store protocol
(``mget``/``mset``, ``amget``/``amset``); it never imports ``redis`` itself except in
:meth:`RedisScoreStore.from_url`. The frameworks' own Redis stores (LangChain's
``RedisStore`` from ``langchain-community``, LlamaIndex's ``RedisKVStore``) work as well,
through the adapters (see ``_cache.wrap_framework_store``).

Why not LangChain's or LlamaIndex's store for everyone: the core imports no framework, and
LlamaIndex's ``RedisKVStore`` keeps entries in one hash, which cannot expire per entry.

A Redis that is down is a miss, not a failed rerank: the client's guard
(``_cache.GuardedStore``) logs one WARNING and reranks without the cache until Redis
answers again. Bound each wait with the redis client's ``socket_timeout`` and
``socket_connect_timeout`` (:meth:`RedisScoreStore.from_url` sets both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._cache import finite_score
from ._install import install_hint

__all__ = ["RedisScoreStore"]


def _decode(value: Any) -> float | None:
    """A stored score (ASCII ``repr`` of a float, as bytes or str), or None."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        return finite_score(float(value))
    except ValueError:
        return None


class RedisScoreStore:
    """Scores in Redis: one string key per score, optionally expiring after ``ttl`` seconds.

    ``client`` is a ``redis.Redis`` (or anything with its ``mget`` and ``pipeline``);
    ``async_client`` an optional ``redis.asyncio.Redis`` for the async path (without one,
    async calls use the sync client, briefly blocking the event loop). Keys are
    ``prefix`` + the score's key; values are the score's exact decimal ``repr``.

    Example (not run: needs a Redis server)::

        from together_rerank_plugins import RedisScoreStore, RerankClient

        store = RedisScoreStore.from_url("redis://cache:6379/0", ttl=24 * 3600)
        client = RerankClient(cache=store)  # every replica with this store shares scores
    """

    def __init__(
        self,
        client: Any,
        *,
        async_client: Any = None,
        ttl: float | None = None,
        prefix: str = "together-rerank:",
    ) -> None:
        if ttl is not None and (
            isinstance(ttl, bool)
            or not isinstance(ttl, (int, float))
            or not math.isfinite(ttl)
            or ttl <= 0
        ):
            raise ValueError(f"ttl must be a number of seconds > 0, or None; got {ttl!r}")
        self.client = client
        self.async_client = async_client
        self.ttl = ttl
        self.prefix = prefix
        self._px = None if ttl is None else max(1, round(ttl * 1000))

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ttl: float | None = None,
        prefix: str = "together-rerank:",
        timeout: float = 1.0,
        **redis_kwargs: Any,
    ) -> RedisScoreStore:
        """A store over ``redis.Redis.from_url(url)``; ``timeout`` bounds each connect and
        each command (seconds), so a Redis that hangs costs at most that per call."""
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - exercised only without redis
            raise ImportError(
                "RedisScoreStore.from_url needs the redis client: run `pip install redis` (or "
                f"{install_hint('redis')})"
            ) from exc
        redis_kwargs.setdefault("socket_timeout", timeout)
        redis_kwargs.setdefault("socket_connect_timeout", timeout)
        return cls(redis.Redis.from_url(url, **redis_kwargs), ttl=ttl, prefix=prefix)

    def __repr__(self) -> str:
        # the client's repr may show the URL with its password: name its type only
        return (
            f"RedisScoreStore(client={type(self.client).__name__}, ttl={self.ttl!r}, "
            f"prefix={self.prefix!r})"
        )

    def _keys(self, keys: Sequence[str]) -> list[str]:
        return [self.prefix + k for k in keys]

    def mget(self, keys: Sequence[str]) -> list[float | None]:
        if not keys:
            return []
        return [_decode(v) for v in self.client.mget(self._keys(keys))]

    def mset(self, items: Sequence[tuple[str, float]]) -> None:
        if not items:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, score in items:
            pipe.set(self.prefix + key, repr(float(score)), px=self._px)
        pipe.execute()

    async def amget(self, keys: Sequence[str]) -> list[float | None]:
        if self.async_client is None:
            return self.mget(keys)
        if not keys:
            return []
        return [_decode(v) for v in await self.async_client.mget(self._keys(keys))]

    async def amset(self, items: Sequence[tuple[str, float]]) -> None:
        if self.async_client is None:
            self.mset(items)
            return
        if not items:
            return
        pipe = self.async_client.pipeline(transaction=False)
        for key, score in items:
            pipe.set(self.prefix + key, repr(float(score)), px=self._px)
        await pipe.execute()
