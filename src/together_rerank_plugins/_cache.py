"""Per-document score cache: the key, the store protocol, and an in-memory LRU store.

LlamaRank scores each (query, document) pair on its own, so a score can be reused for the
same model, query, rank fields and document as sent, whatever else is in the list. A call
then sends only the documents that miss: an overlapping candidate list is cheap, and a
repeated query sends nothing.

Stores are pluggable. Anything with ``mget(keys) -> list[float | None]`` and
``mset(items)`` works (async callers also use ``amget``/``amset`` when present). Each
adapter also accepts its framework's own store (a LlamaIndex ``BaseKVStore``, a LangChain
``BaseStore[str, bytes]``), so a Redis or file store shares scores across processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "BytesScoreStore",
    "InMemoryScoreStore",
    "KVScoreStore",
    "ScoreStore",
    "amget",
    "amset",
    "cache_key",
    "document_digest",
    "wrap_framework_store",
]

_KEY_VERSION = "trp1"


@runtime_checkable
class ScoreStore(Protocol):
    """Where cached scores live. Keys are hex strings; values are floats."""

    def mget(self, keys: Sequence[str]) -> list[float | None]: ...

    def mset(self, items: Sequence[tuple[str, float]]) -> None: ...


def document_digest(canonical: str) -> str:
    """SHA-256 of a document as sent (a string, or a mapping's canonical JSON)."""
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def cache_key(
    *, model: str, query: str, rank_fields: Sequence[str] | None, variant: str, digest: str
) -> str:
    """The key of one score: model, query, rank fields, long-document variant, document.

    ``variant`` names how the document was fitted to the model (e.g. ``chunk:8192``), since
    a chunked score and a truncated one differ.
    """
    head = json.dumps(
        [_KEY_VERSION, model, query, list(rank_fields or []), variant], ensure_ascii=False
    )
    # only [a-z0-9_]: safe as a file name (LocalFileStore), a Redis key, a URL part
    return f"{_KEY_VERSION}_{document_digest(head)[:32]}_{digest}"


class InMemoryScoreStore:
    """A thread-safe LRU store of at most ``maxsize`` scores (``cache=True`` uses one).

    >>> store = InMemoryScoreStore(maxsize=2)
    >>> store.mset([("a", 0.5), ("b", 0.25), ("c", 1.0)])
    >>> store.mget(["a", "b", "c"])
    [None, 0.25, 1.0]
    """

    def __init__(self, maxsize: int = 100_000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._data: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"InMemoryScoreStore(maxsize={self.maxsize}, size={len(self._data)})"

    def mget(self, keys: Sequence[str]) -> list[float | None]:
        out: list[float | None] = []
        with self._lock:
            for key in keys:
                value = self._data.get(key)
                if value is not None:
                    self._data.move_to_end(key)
                out.append(value)
        return out

    def mset(self, items: Sequence[tuple[str, float]]) -> None:
        with self._lock:
            for key, value in items:
                self._data[key] = value
                self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)


async def amget(store: Any, keys: Sequence[str]) -> list[float | None]:
    fn = getattr(store, "amget", None)
    if fn is not None and inspect.iscoroutinefunction(fn):
        return list(await fn(keys))
    return list(store.mget(keys))


async def amset(store: Any, items: Sequence[tuple[str, float]]) -> None:
    fn = getattr(store, "amset", None)
    if fn is not None and inspect.iscoroutinefunction(fn):
        await fn(items)
    else:
        store.mset(items)


class BytesScoreStore:
    """A byte-valued key-value store (LangChain ``BaseStore[str, bytes]``: Redis, files, ...)
    as a score store. Scores are stored as 8-byte IEEE-754 doubles, read back bit for bit."""

    def __init__(self, store: Any) -> None:
        self.store = store

    @staticmethod
    def _decode(value: Any) -> float | None:
        if isinstance(value, (bytes, bytearray)) and len(value) == 8:
            return float(struct.unpack("<d", value)[0])
        return None

    def mget(self, keys: Sequence[str]) -> list[float | None]:
        return [self._decode(v) for v in self.store.mget(list(keys))]

    def mset(self, items: Sequence[tuple[str, float]]) -> None:
        self.store.mset([(k, struct.pack("<d", v)) for k, v in items])

    async def amget(self, keys: Sequence[str]) -> list[float | None]:
        return [self._decode(v) for v in await self.store.amget(list(keys))]

    async def amset(self, items: Sequence[tuple[str, float]]) -> None:
        await self.store.amset([(k, struct.pack("<d", v)) for k, v in items])


class KVScoreStore:
    """A LlamaIndex ``BaseKVStore`` (simple, Redis, Mongo, ...) as a score store: one entry
    ``{"score": float}`` per key, in the collection ``together_rerank_scores``."""

    collection = "together_rerank_scores"

    def __init__(self, store: Any) -> None:
        self.store = store

    @staticmethod
    def _score(value: Any) -> float | None:
        score = value.get("score") if isinstance(value, dict) else None
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            return float(score)
        return None

    def mget(self, keys: Sequence[str]) -> list[float | None]:
        return [self._score(self.store.get(k, collection=self.collection)) for k in keys]

    def mset(self, items: Sequence[tuple[str, float]]) -> None:
        self.store.put_all([(k, {"score": v}) for k, v in items], collection=self.collection)

    async def amget(self, keys: Sequence[str]) -> list[float | None]:
        values = await asyncio.gather(
            *(self.store.aget(k, collection=self.collection) for k in keys)
        )
        return [self._score(v) for v in values]

    async def amset(self, items: Sequence[tuple[str, float]]) -> None:
        pairs = [(k, {"score": v}) for k, v in items]
        await self.store.aput_all(pairs, collection=self.collection)


def _derives_from(obj: Any, module: str, name: str) -> bool:
    return any(c.__name__ == name and c.__module__ == module for c in type(obj).__mro__)


def wrap_framework_store(store: Any) -> ScoreStore | None:
    """Recognise the frameworks' own stores by their base class, without importing either
    framework (the core imports none), so both adapters accept both kinds."""
    if _derives_from(store, "llama_index.core.storage.kvstore.types", "BaseKVStore"):
        return KVScoreStore(store)
    if _derives_from(store, "langchain_core.stores", "BaseStore"):
        return BytesScoreStore(store)
    return None
