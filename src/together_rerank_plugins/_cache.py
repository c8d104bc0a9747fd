"""Per-document score cache: the key, the store protocol, and an in-memory LRU store.

LlamaRank scores each (query, document) pair on its own, so a score can be reused for the
same endpoint, model, query, rank fields and document as sent, whatever else is in the list.
A call then sends only the documents that miss: an overlapping candidate list is cheap, and
a repeated query sends nothing.

The key holds every input that can change a score (:func:`cache_key`): the endpoint (its
URL without credentials) and model, the query, the rank fields, the long-document policy
and budget, the tokenizer's identity (it decides where a long document is cut), any extra
request fields, and the SHA-256 of the document as sent. A tokenizer with no identity
(:func:`tokenizer_identity`) disables a shared cache rather than risk mixing chunkings.

Stores are pluggable. Anything with ``mget(keys) -> list[float | None]`` and
``mset(items)`` works (async callers also use ``amget``/``amset`` when present). Each
adapter also accepts its framework's own store (a LlamaIndex ``BaseKVStore``, a LangChain
``BaseStore[str, bytes]``), so a Redis or file store shares scores across processes.
A store is never trusted: a value that is not a finite number is a miss, and a store that
raises is a miss too (:class:`GuardedStore`, one WARNING until it works again; it is left
alone for a few seconds after each failure, so a store that hangs costs its timeout once).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import math
import os
import struct
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from ._errors import RerankConfigError

__all__ = [
    "BUILTIN_TOKENIZER_ID",
    "BytesScoreStore",
    "GuardedStore",
    "resolve_cache",
    "InMemoryScoreStore",
    "KVScoreStore",
    "ScoreStore",
    "amget",
    "amset",
    "cache_key",
    "document_digest",
    "endpoint_identity",
    "finite_score",
    "tokenizer_identity",
    "wrap_framework_store",
]

logger = logging.getLogger("together_rerank_plugins")

# trp2: endpoint, tokenizer identity and extra request fields joined the key
# trp3: an object document's digest is marked as an object's (a string may spell its JSON)
# (a base_url user or default_headers add a digest to the endpoint part: no bump, since
# keys without them are unchanged and keys with them never existed before)
_KEY_VERSION = "trp3"
#: the identity of the built-in token estimate; bump it when the estimate changes
BUILTIN_TOKENIZER_ID = "estimate-2"


@runtime_checkable
class ScoreStore(Protocol):
    """Where cached scores live. Keys are hex strings; values are floats."""

    def mget(self, keys: Sequence[str]) -> list[float | None]: ...

    def mset(self, items: Sequence[tuple[str, float]]) -> None: ...


def document_digest(canonical: str) -> str:
    """SHA-256 of a document as sent (a string, or a mapping's canonical JSON)."""
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def endpoint_identity(base_url: str, headers: Mapping[str, str] | None = None) -> str:
    """The endpoint part of a key: scheme, host (lower case), port and path of ``base_url``
    and, when there are any, a digest of what else a gateway may route on: the user name
    in ``base_url`` (not its password: rotating it keeps the scores) and the
    ``default_headers`` (two routes behind one URL may be two scorers). Never the
    credentials or header values themselves."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    where = f"{parts.scheme.lower()}://{host}{port}{parts.path.rstrip('/')}"
    user = parts.username or ""
    if not user and not headers:
        return where
    route = sorted((k.lower(), v) for k, v in (headers or {}).items())
    return f"{where}#{document_digest(json.dumps([unquote(user), route]))[:32]}"


def tokenizer_identity(tokenizer: Any) -> str | None:
    """A stable name for a ``tokenizer`` (None: the built-in estimate's), or None when it
    has none: a function or object with a ``cache_id`` string attribute names itself
    (``count.cache_id = "hf:meta-llama/Llama-3.1-8B"``); any other callable is anonymous,
    and two anonymous tokenizers cannot be told apart, so no shared cache may hold scores
    that depend on them."""
    if tokenizer is None:
        return BUILTIN_TOKENIZER_ID
    ident = getattr(tokenizer, "cache_id", None)
    if isinstance(ident, str) and ident:
        return f"custom:{ident}"
    return None


def cache_key(
    *,
    model: str,
    query: str,
    rank_fields: Sequence[str] | None,
    variant: str,
    digest: str,
    endpoint: str = "",
    tokenizer: str = BUILTIN_TOKENIZER_ID,
    extra: Any = None,
) -> str:
    """The key of one score: everything that can change it.

    ``endpoint`` (:func:`endpoint_identity`) and ``model`` name the scorer; ``variant``
    how a long document is fitted (e.g. ``chunk:8192``: a chunked score and a truncated one
    differ) and ``tokenizer`` (:func:`tokenizer_identity`) where it is cut; ``extra`` is any
    JSON-serialisable value of further request fields that change scores (an instruction
    for an instruction-following reranker); ``digest`` is :func:`document_digest` of the
    document as sent.
    """
    head = json.dumps(
        [
            _KEY_VERSION,
            endpoint,
            model,
            query,
            list(rank_fields or []),
            variant,
            tokenizer,
            extra,
        ],
        ensure_ascii=False,
        sort_keys=True,
        default=repr,
    )
    # only [a-z0-9_]: safe as a file name (LocalFileStore), a Redis key, a URL part
    return f"{_KEY_VERSION}_{document_digest(head)[:32]}_{digest}"


def finite_score(value: Any) -> float | None:
    """``value`` as a score if it is a finite real number (not a bool), else None: what a
    store returns is never trusted (a corrupt or shared store may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        score = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return score if math.isfinite(score) else None


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
        _LOCKED.add(self)

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
            return finite_score(struct.unpack("<d", value)[0])
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
        return finite_score(value.get("score")) if isinstance(value, dict) else None

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


#: seconds a store that failed is left alone before one call tries it again
STORE_RETRY_AFTER = 5.0
_clock = time.monotonic  # replaced in tests


class GuardedStore:
    """A store as the client uses it: a store that raises (a Redis that is down, a full
    disk) or answers the wrong number of values is a miss, never a failed rerank.

    After a failure the store is left alone for :data:`STORE_RETRY_AFTER` seconds: calls
    skip it (all misses, nothing written) instead of paying its timeout again, as a
    blackholed Redis would make every call do; then one call tries it again. The first
    failure is logged at WARNING; later ones are not, until a read or write succeeds again,
    so a store that stays down logs once, not once per call.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._failing = False
        self._skip_until = 0.0
        self._lock = threading.Lock()
        _LOCKED.add(self)

    def _skipped(self) -> bool:
        if not self._failing:
            return False
        with self._lock:
            now = _clock()
            if now < self._skip_until:
                return True
            # this call tries the store again; the others skip it while it does
            self._skip_until = now + STORE_RETRY_AFTER
            return False

    def _failed(self, action: str, exc: BaseException) -> None:
        with self._lock:
            first, self._failing = not self._failing, True
            self._skip_until = _clock() + STORE_RETRY_AFTER
        if first:
            detail = str(exc)
            if len(detail) > 200:
                detail = detail[:200] + "..."
            logger.warning(
                "The score cache (%s) failed to %s (%s: %s); reranking without it until it "
                "works again (logged once).",
                type(self.store).__name__,
                action,
                type(exc).__name__,
                detail,
            )

    def _worked(self) -> None:
        if self._failing:
            with self._lock:
                self._failing = False

    def _checked(self, keys: Sequence[str], values: Any) -> list[float | None]:
        values = list(values)
        if len(values) != len(keys):
            raise ValueError(f"{len(values)} values for {len(keys)} keys")
        self._worked()
        return [finite_score(v) for v in values]

    def mget(self, keys: Sequence[str]) -> list[float | None]:
        if self._skipped():
            return [None] * len(keys)
        try:
            return self._checked(keys, self.store.mget(keys))
        except Exception as exc:
            self._failed("read", exc)
            return [None] * len(keys)

    async def amget(self, keys: Sequence[str]) -> list[float | None]:
        if self._skipped():
            return [None] * len(keys)
        try:
            return self._checked(keys, await amget(self.store, keys))
        except Exception as exc:
            self._failed("read", exc)
            return [None] * len(keys)

    def mset(self, items: Sequence[tuple[str, float]]) -> None:
        if self._skipped():
            return
        try:
            self.store.mset(items)
        except Exception as exc:
            self._failed("write", exc)
        else:
            self._worked()

    async def amset(self, items: Sequence[tuple[str, float]]) -> None:
        if self._skipped():
            return
        try:
            await amset(self.store, items)
        except Exception as exc:
            self._failed("write", exc)
        else:
            self._worked()


#: stores with a lock, for the fork hook: a thread of the parent holding one at the fork
#: does not exist in the child, so the child needs new locks (or would wait forever)
_LOCKED: weakref.WeakSet[Any] = weakref.WeakSet()


def _new_locks_in_child() -> None:
    for store in list(_LOCKED):
        store._lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_new_locks_in_child)


def resolve_cache(cache: Any) -> ScoreStore | None:
    """The store a ``cache=`` argument names (None: no cache)."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return InMemoryScoreStore()
    framework_store = wrap_framework_store(cache)
    if framework_store is not None:
        return framework_store
    if callable(getattr(cache, "mget", None)) and callable(getattr(cache, "mset", None)):
        return cache  # type: ignore[no-any-return]
    raise RerankConfigError(
        "`cache` must be True (in-memory LRU), False/None, a store with mget(keys)/"
        "mset(items), a LlamaIndex BaseKVStore or a LangChain BaseStore[str, bytes]; got "
        f"{type(cache).__name__}."
    )
