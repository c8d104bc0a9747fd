"""The score cache never serves a score that the call would not have got.

- The key holds every input that can change a score: endpoint, model, query, document as
  sent, rank fields, long-document policy and budget, tokenizer identity, extra fields.
  A tokenizer with no identity switches a shared cache off (one WARNING).
- What a store returns is never trusted: NaN, infinities, huge integers, strings, a list
  of the wrong length are misses (scored again), and a store that raises is a miss too,
  logged once at WARNING until it works again.

No socket: the embedded endpoint is the transport.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Sequence
from typing import Any

import pytest

from together_rerank_plugins import InMemoryScoreStore
from together_rerank_plugins._cache import BytesScoreStore, KVScoreStore, cache_key

from .test_scale import (
    DOCS_1000,
    MODES,
    QUERY,
    call,
    expected_ranking,
    make,
    pointwise_endpoint,
    sent_documents,
)

DOCS = DOCS_1000[:6]
LOGGER = "together_rerank_plugins"


# -- 1. the key ---------------------------------------------------------------------------
def test_two_endpoints_sharing_a_store_never_reuse_each_others_scores() -> None:
    """Same model name, two servers (possibly two different models behind it)."""
    store = InMemoryScoreStore()
    first, second = pointwise_endpoint(), pointwise_endpoint()
    make(first, cache=store, base_url="http://rerank-a.internal:8000").rerank(QUERY, DOCS)
    results = make(second, cache=store, base_url="http://rerank-b.internal:8000").rerank(
        QUERY, DOCS
    )
    assert results.cache_hits == 0
    assert sent_documents(second) == DOCS
    # the same endpoint spelled another way (with /v1, upper-case host) shares
    again = pointwise_endpoint()
    same = make(again, cache=store, base_url="http://RERANK-A.internal:8000/v1/")
    assert same.rerank(QUERY, DOCS).cache_hits == len(DOCS)
    assert again.requests == []


def count_a(text: str) -> int:
    return len(text.split()) * 2


def count_b(text: str) -> int:
    return len(text) // 2 + 1


LONG = [" ".join(f"w{i}x{j}" for j in range(400)) for i in range(3)]


def test_two_tokenizers_sharing_a_store_never_reuse_each_others_scores() -> None:
    """A different tokenizer cuts a long document elsewhere: a different max-pooled score."""
    count_a.cache_id = "words-x2"  # type: ignore[attr-defined]
    count_b.cache_id = "chars-half"  # type: ignore[attr-defined]
    store = InMemoryScoreStore()
    first, second = pointwise_endpoint(), pointwise_endpoint()
    kw: dict[str, Any] = {"cache": store, "max_tokens_per_doc": 400}
    make(first, tokenizer=count_a, **kw).rerank("w1x3", LONG)
    results = make(second, tokenizer=count_b, **kw).rerank("w1x3", LONG)
    assert results.cache_hits == 0
    assert second.requests  # scored with its own windows
    # the same named tokenizer shares
    third = pointwise_endpoint()
    assert make(third, tokenizer=count_a, **kw).rerank("w1x3", LONG).cache_hits == len(LONG)
    assert third.requests == []


def test_the_built_in_estimate_and_a_named_tokenizer_do_not_share() -> None:
    count_a.cache_id = "words-x2"  # type: ignore[attr-defined]
    store = InMemoryScoreStore()
    make(pointwise_endpoint(), cache=store, max_tokens_per_doc=400).rerank("w1x3", LONG)
    endpoint = pointwise_endpoint()
    results = make(endpoint, cache=store, max_tokens_per_doc=400, tokenizer=count_a).rerank(
        "w1x3", LONG
    )
    assert results.cache_hits == 0


def anonymous(text: str) -> int:
    return len(text.split()) * 2


@pytest.mark.parametrize("mode", MODES)
async def test_an_anonymous_tokenizer_turns_a_shared_cache_off_with_one_warning(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    store = InMemoryScoreStore()
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=store, tokenizer=anonymous)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cache_id" in warnings[0].getMessage()
    await call(client, mode, QUERY, DOCS)
    again = await call(client, mode, QUERY, DOCS)
    assert again.cache_hits == 0
    assert len(store) == 0  # nothing written that another tokenizer could read
    assert len(endpoint.requests) == 2


def test_an_anonymous_tokenizer_keeps_a_private_cache() -> None:
    """``cache=True`` is this client's own store: its one tokenizer needs no name."""
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=True, tokenizer=anonymous)
    client.rerank(QUERY, DOCS)
    assert client.rerank(QUERY, DOCS).cache_hits == len(DOCS)
    assert len(endpoint.requests) == 1


def test_an_anonymous_tokenizer_is_harmless_when_long_documents_are_refused() -> None:
    """With ``long_documents="error"`` a scored document was always sent whole."""
    store = InMemoryScoreStore()
    make(pointwise_endpoint(), cache=store, long_documents="error").rerank(QUERY, DOCS)
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=store, long_documents="error", tokenizer=anonymous)
    assert client.rerank(QUERY, DOCS).cache_hits == len(DOCS)


@pytest.mark.parametrize(
    "change",
    [
        {"endpoint": "http://other:8000"},
        {"model": "other-model"},
        {"query": "another query"},
        {"rank_fields": ["title"]},
        {"variant": "truncate:8192"},
        {"variant": "chunk:4096"},
        {"tokenizer": "custom:hf-llama3"},
        {"extra": {"instruction": "Rank legal passages"}},
        {"digest": "0" * 64},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_part_of_the_key_changes_it(change: dict[str, Any]) -> None:
    base: dict[str, Any] = {
        "endpoint": "https://api.together.ai",
        "model": "Salesforce/Llama-Rank-V1",
        "query": "q",
        "rank_fields": None,
        "variant": "chunk:8192",
        "tokenizer": "estimate-1",
        "extra": None,
        "digest": "f" * 64,
    }
    key = cache_key(**base)
    assert cache_key(**base) == key
    assert cache_key(**(base | change)) != key
    assert key.replace("_", "").isalnum()
    assert key.islower()


# -- 2. what a store returns --------------------------------------------------------------
class RiggedStore:
    """Answers ``values`` (cycled) to every read; records writes."""

    def __init__(self, values: Sequence[Any]) -> None:
        self.values = list(values)
        self.writes: list[tuple[str, float]] = []

    def mget(self, keys: Sequence[str]) -> list[Any]:
        return [self.values[i % len(self.values)] for i in range(len(keys))]

    def mset(self, items: Sequence[tuple[str, float]]) -> None:
        self.writes.extend(items)


CORRUPT = [
    math.nan,
    math.inf,
    -math.inf,
    10**400,
    "0.99",
    b"\x00" * 8,
    True,
    [0.5],
    {"score": 0.5},
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("value", CORRUPT, ids=repr)
async def test_a_value_that_is_not_a_finite_number_is_a_miss(mode: str, value: Any) -> None:
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=RiggedStore([value]))
    results = await call(client, mode, QUERY, DOCS, top_n=None)
    assert results == expected_ranking(QUERY, DOCS)
    assert results.cache_hits == 0
    assert sent_documents(endpoint) == DOCS


@pytest.mark.parametrize("mode", MODES)
async def test_a_nan_is_never_ranked_above_a_real_score(mode: str) -> None:
    """The defect: a store answering NaN for one document put it first, unsent."""
    endpoint = pointwise_endpoint()
    store = RiggedStore([math.nan, 0.25, 0.75])
    results = await call(make(endpoint, cache=store), mode, QUERY, DOCS[:3], top_n=None)
    assert all(math.isfinite(r.relevance_score) for r in results)
    assert sent_documents(endpoint) == [DOCS[0]]
    assert results.cache_hits == 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("answer", [[], [0.5] * 20, None], ids=["short", "long", "none"])
async def test_a_store_answering_the_wrong_number_of_values_is_all_misses(
    mode: str, answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Wrong(RiggedStore):
        def mget(self, keys: Sequence[str]) -> Any:
            return answer

    endpoint = pointwise_endpoint()
    results = await call(make(endpoint, cache=Wrong([0.0])), mode, QUERY, DOCS, top_n=None)
    assert results == expected_ranking(QUERY, DOCS)
    assert results.cache_hits == 0


def test_framework_store_wrappers_refuse_non_finite_values() -> None:
    nan, huge = struct.pack("<d", math.nan), struct.pack("<d", math.inf)

    class Bytes:
        def mget(self, keys: Sequence[str]) -> list[Any]:
            return [nan, huge, struct.pack("<d", 0.5), b"short"]

    class KV:
        def get(self, key: str, collection: str) -> Any:
            return {"a": {"score": math.nan}, "b": {"score": 10**400}, "c": {"score": 0.5}}.get(key)

    assert BytesScoreStore(Bytes()).mget(["a", "b", "c", "d"]) == [None, None, 0.5, None]
    assert KVScoreStore(KV()).mget(["a", "b", "c", "d"]) == [None, None, 0.5, None]


class FlakyStore:
    """A store that raises while ``down`` (like a Redis that went away)."""

    def __init__(self) -> None:
        self.data: dict[str, float] = {}
        self.down = False

    def mget(self, keys: Sequence[str]) -> list[float | None]:
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")
        return [self.data.get(k) for k in keys]

    def mset(self, items: Sequence[tuple[str, float]]) -> None:
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")
        self.data.update(items)


class AsyncFlakyStore(FlakyStore):
    async def amget(self, keys: Sequence[str]) -> list[float | None]:
        return self.mget(keys)

    async def amset(self, items: Sequence[tuple[str, float]]) -> None:
        self.mset(items)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("store_cls", [FlakyStore, AsyncFlakyStore])
async def test_a_store_that_raises_is_a_miss_logged_once_until_it_works_again(
    mode: str,
    store_cls: type[FlakyStore],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import together_rerank_plugins._cache as cache_module

    now = [1000.0]
    monkeypatch.setattr(cache_module, "_clock", lambda: now[0])
    caplog.set_level(logging.WARNING, logger=LOGGER)
    store = store_cls()
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=store)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    store.down = True
    for query in ["cats", "dogs", "rivers"]:  # reads and writes fail on every call
        results = await call(client, mode, query, DOCS, top_n=None)
        assert results == expected_ranking(query, DOCS)
    assert len(warnings()) == 1, warnings()
    assert "ConnectionError" in warnings()[0]
    assert "once" in warnings()[0]
    assert len(endpoint.requests) == 3

    store.down = False  # back: scores are cached again, and a new outage is logged again
    now[0] += cache_module.STORE_RETRY_AFTER + 0.1  # once the store is tried again
    await call(client, mode, "cats", DOCS)
    assert (await call(client, mode, "cats", DOCS)).cache_hits == len(DOCS)
    store.down = True
    await call(client, mode, "cats", DOCS)
    assert len(warnings()) == 2


@pytest.mark.parametrize("mode", MODES)
async def test_a_plan_sent_by_another_client_is_cached_under_that_clients_keys(
    mode: str,
) -> None:
    """One client's plan sent through another (other endpoint, maybe another model) is
    planned again for it: its scores are never stored under, nor read from, the first
    one's keys, only its own."""
    store = InMemoryScoreStore()
    primary = make(pointwise_endpoint(), cache=store, base_url="http://primary:8000")
    backup_endpoint = pointwise_endpoint()
    backup = make(backup_endpoint, cache=store, base_url="http://backup:8000")
    primary.rerank(QUERY, DOCS)  # cached under the primary's keys
    plan = primary.plan(QUERY, DOCS, top_n=None)
    if mode == "sync":
        results = backup.execute(plan)
    else:
        results = await backup.aexecute(plan)
    assert results.cache_hits == 0
    assert sent_documents(backup_endpoint) == DOCS
    assert len(store) == 2 * len(DOCS)  # the backup's scores, under the backup's own keys
    again = backup.execute(plan) if mode == "sync" else await backup.aexecute(plan)
    assert again.cache_hits == len(DOCS)
    assert [r.index for r in again] == [r.index for r in results]


class CountingDownStore(FlakyStore):
    """A store that is down and counts how often it is asked (a blackholed Redis costs its
    whole socket timeout on every ask)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.asked = 0

    def mget(self, keys: Sequence[str]) -> list[float | None]:
        self.asked += 1
        return super().mget(keys)

    def mset(self, items: Sequence[tuple[str, float]]) -> None:
        self.asked += 1
        super().mset(items)


@pytest.mark.parametrize("mode", MODES)
async def test_a_store_known_down_is_not_asked_again_until_its_retry_time(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a store failed, the next calls skip it (microseconds, not its timeout again) for
    ``STORE_RETRY_AFTER`` seconds; then one call tries it again."""
    import together_rerank_plugins._cache as cache_module

    now = [1000.0]
    monkeypatch.setattr(cache_module, "_clock", lambda: now[0])
    store = CountingDownStore()
    endpoint = pointwise_endpoint()
    client = make(endpoint, cache=store)
    for query in ["cats", "dogs", "rivers"]:
        results = await call(client, mode, query, DOCS, top_n=None)
        assert results == expected_ranking(query, DOCS)
    assert store.asked == 1  # the first read failed; nothing more was asked of it
    now[0] += cache_module.STORE_RETRY_AFTER + 0.1
    store.down = False
    await call(client, mode, "cats", DOCS)  # retried: read (miss) and write
    assert store.asked == 3
    assert (await call(client, mode, "cats", DOCS)).cache_hits == len(set(DOCS))
