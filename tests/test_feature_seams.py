"""The features at their seams: deadline, breaker, failover, cache, extras and adapters
where they meet. Each test failed on the merged code before its fix."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from typing import Any

import httpx
import pytest

from together_rerank_plugins import CircuitBreaker, RerankClient, ServerError
from together_rerank_plugins.testing import LexicalRerankEndpoint, pointwise_lexical_scores

from .conftest import TEST_KEY, recording, run_in_fork

DOCS = ["red apples", "green pears", "red cherries"]
QUERY = "red apples"


def slow_timeout(seconds: float) -> httpx.MockTransport:
    """A server that answers nothing for ``seconds``, then the read times out."""

    def handler(request: httpx.Request) -> httpx.Response:
        time.sleep(seconds)
        raise httpx.ReadTimeout("no answer", request=request)

    return httpx.MockTransport(handler)


def reference_rankings(queries: list[str], docs: list[str]) -> dict[str, list[tuple[int, float]]]:
    """(index, score) per query from a plain client on the same test double: the right
    answer the concurrent, cached, breaker-guarded calls must give."""
    reference = RerankClient(
        api_key=TEST_KEY, transport=LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    )
    return {q: [(r.index, r.relevance_score) for r in reference.rerank(q, docs)] for q in queries}


# -- a deadline spent by the primary is not the failover endpoint's failure -----------------
def test_failover_reached_with_no_time_left_is_not_counted_by_its_breaker() -> None:
    backup = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
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
    backup = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
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
    client = RerankClient(
        api_key=TEST_KEY,
        base_url="http://alice:s3cr3t-pass@rerank.example.com/v1",
        transport=recording(seen),
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


# -- cancellation: no probe slot, task or client left behind --------------------------------
async def test_cancelled_probe_frees_the_half_open_slot_and_the_client_still_works() -> None:
    import asyncio

    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=10, clock=lambda: now[0])
    scorer = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    hang = asyncio.Event()
    mode = {"hang": True}

    async def handler(request: httpx.Request) -> httpx.Response:
        if mode["hang"]:
            await hang.wait()  # never set: a server that never answers
        return scorer.handle(request)

    client = RerankClient(
        api_key=TEST_KEY,
        max_retries=0,
        max_batch_size=1,  # three batches, three tasks in flight
        transport=httpx.MockTransport(handler),
        circuit_breaker=breaker,
    )
    probe = breaker.admit()
    breaker.record(probe, "failure")  # open
    now[0] = 10.0  # half-open: the next call is the probe
    before = asyncio.all_tasks()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.arerank(QUERY, DOCS), 0.05)
    assert asyncio.all_tasks() == before  # no batch task left running
    assert breaker.state == "half_open"  # the cancelled probe said nothing...
    mode["hang"] = False
    results = await client.arerank(QUERY, DOCS)  # ...and freed the slot for the next one
    assert [r.index for r in results] == [r.index for r in scorer_reference()]
    assert breaker.state == "closed"


def scorer_reference() -> Any:
    return RerankClient(
        api_key=TEST_KEY, transport=LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    ).rerank(QUERY, DOCS)


# -- threads: one client, batches, cache and breaker ----------------------------------------
def test_one_client_from_16_threads_with_batches_cache_and_breaker() -> None:
    from concurrent.futures import ThreadPoolExecutor

    queries = [f"red apples {i % 4}" for i in range(64)]
    docs = [f"red apples {j}" if j % 3 else f"green pears {j}" for j in range(12)]
    expected = reference_rankings(queries, docs)
    breaker = CircuitBreaker(failure_threshold=1)
    client = RerankClient(
        api_key=TEST_KEY,
        transport=LexicalRerankEndpoint(scorer=pointwise_lexical_scores),
        max_batch_size=3,
        max_concurrency=3,
        cache=True,
        circuit_breaker=breaker,
    )
    with ThreadPoolExecutor(16) as pool:
        got = list(
            pool.map(
                lambda q: [(r.index, r.relevance_score) for r in client.rerank(q, docs)], queries
            )
        )
    assert got == [expected[q] for q in queries]
    assert breaker.state == "closed"


# -- adapters: a result's flags describe this call, not an earlier one ------------------------
def _two_stage_clients() -> tuple[dict[str, Any], dict[str, Any]]:
    """Options of a stage that fails over (answered by a backup) and of one that falls back."""
    backup = RerankClient(
        api_key=TEST_KEY,
        model="acme/backup",
        base_url="http://backup.example",
        transport=LexicalRerankEndpoint(scorer=pointwise_lexical_scores),
    )
    down = httpx.MockTransport(lambda r: httpx.Response(503, json={"error": {"message": "x"}}))
    failing_over = {"api_key": TEST_KEY, "max_retries": 0, "transport": down, "failover": [backup]}
    falling_back = {
        "api_key": TEST_KEY,
        "max_retries": 0,
        "transport": down,
        "on_error": "fallback",
    }
    return failing_over, falling_back


def test_langchain_second_stage_flags_describe_its_own_call() -> None:
    from langchain_core.documents import Document

    from together_rerank_plugins.langchain import FALLBACK_KEY, SERVED_BY_KEY
    from together_rerank_plugins.langchain import TogetherRerank as LC

    failing_over, falling_back = _two_stage_clients()
    docs = [Document(page_content=t) for t in DOCS]
    stage1 = LC(**failing_over).compress_documents(docs, QUERY)
    assert all(SERVED_BY_KEY in d.metadata for d in stage1)
    stage2 = LC(**falling_back).compress_documents(stage1, QUERY)
    assert all(d.metadata[FALLBACK_KEY] is True for d in stage2)
    assert not any(SERVED_BY_KEY in d.metadata for d in stage2)  # a fallback: nobody served it
    good = LC(api_key=TEST_KEY, transport=LexicalRerankEndpoint(scorer=pointwise_lexical_scores))
    stage3 = good.compress_documents(stage2, QUERY)
    assert not any(FALLBACK_KEY in d.metadata for d in stage3)  # ranked: not a fallback
    assert all(isinstance(d.metadata["relevance_score"], float) for d in stage3)


def test_llama_index_second_stage_flags_describe_its_own_call() -> None:
    from llama_index.core.schema import NodeWithScore, TextNode

    from together_rerank_plugins.llama_index import FALLBACK_KEY, SERVED_BY_KEY
    from together_rerank_plugins.llama_index import TogetherRerank as LI

    failing_over, falling_back = _two_stage_clients()
    nodes = [NodeWithScore(node=TextNode(text=t), score=1.0) for t in DOCS]
    stage1 = LI(**failing_over).postprocess_nodes(nodes, query_str=QUERY)
    assert all(SERVED_BY_KEY in n.node.metadata for n in stage1)
    stage2 = LI(**falling_back).postprocess_nodes(stage1, query_str=QUERY)
    assert all(n.node.metadata[FALLBACK_KEY] is True for n in stage2)
    assert not any(SERVED_BY_KEY in n.node.metadata for n in stage2)
    good = LI(api_key=TEST_KEY, transport=LexicalRerankEndpoint(scorer=pointwise_lexical_scores))
    stage3 = good.postprocess_nodes(stage2, query_str=QUERY)
    assert not any(FALLBACK_KEY in n.node.metadata for n in stage3)


# -- the deadline bounds the whole failover chain, on real sockets ---------------------------
@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_deadline_bounds_a_failover_chain_of_hanging_servers(mode: str) -> None:
    import asyncio
    import socket

    # listening sockets that never accept: connections complete, nothing is ever answered
    hangs = [socket.socket(), socket.socket()]
    try:
        urls = []
        for sock in hangs:
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            urls.append(f"http://127.0.0.1:{sock.getsockname()[1]}")
        secondary = RerankClient(api_key=TEST_KEY, base_url=urls[1], timeout=30, max_retries=2)
        primary = RerankClient(
            api_key=TEST_KEY,
            base_url=urls[0],
            timeout=30,
            max_retries=2,
            deadline=0.8,
            failover=[secondary],
            on_error="fallback",
        )
        start = time.monotonic()
        if mode == "sync":
            results = primary.rerank(QUERY, DOCS)
        else:
            results = asyncio.run(primary.arerank(QUERY, DOCS))
        elapsed = time.monotonic() - start
        assert results.fallback
        # without the fix: timeout 30 s x 3 attempts; 4 s of slack for a loaded machine
        assert elapsed < 0.8 + 4.0, elapsed
        primary.close()
        secondary.close()
    finally:
        for sock in hangs:
            sock.close()


def test_credentials_of_base_url_echoed_by_a_server_are_scrubbed_from_errors() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        token = auth.split(" ", 1)[-1]
        message = f"bad credentials {token} ({base64.b64decode(token).decode()})"
        return httpx.Response(500, json={"error": {"message": message}})

    client = RerankClient(
        api_key=TEST_KEY,
        base_url="http://alice:s3cr3t-pass@rerank.example.com",
        transport=httpx.MockTransport(echo),
        max_retries=0,
    )
    with pytest.raises(ServerError) as info:
        client.rerank(QUERY, DOCS)
    token = base64.b64encode(b"alice:s3cr3t-pass").decode()
    texts = [str(info.value), str(info.value.__cause__), repr(info.value.__cause__)]
    assert "bad credentials" in texts[0]
    for text in texts:
        assert "s3cr3t-pass" not in text
        assert token not in text


# -- fork: a lock held by another thread at fork time does not hang the child ---------------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_a_child_forked_while_breaker_and_cache_locks_are_held_still_reranks() -> None:

    breaker = CircuitBreaker()
    client = RerankClient(
        api_key=TEST_KEY,
        transport=LexicalRerankEndpoint(scorer=pointwise_lexical_scores),
        circuit_breaker=breaker,
        cache=True,
    )
    expected = [r.index for r in client.rerank(QUERY, DOCS)]
    store = client._store
    assert store is not None
    # what another thread of the parent could be holding at the moment of the fork
    held = [breaker._lock, store._lock, store.store._lock]
    for lock in held:
        lock.acquire()

    def child() -> list[int]:  # the cache hits, then a miss is sent
        got = [r.index for r in client.rerank(QUERY, DOCS)]
        return got + [r.index for r in client.rerank("green pears", DOCS)]

    try:
        theirs = run_in_fork(child)
    finally:
        for lock in held:
            lock.release()
    green = [r.index for r in client.rerank("green pears", DOCS)]
    assert theirs == expected + green


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_a_child_forked_during_the_parents_probe_can_probe_itself() -> None:

    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=10, clock=lambda: now[0])
    client = RerankClient(
        api_key=TEST_KEY,
        transport=LexicalRerankEndpoint(scorer=pointwise_lexical_scores),
        circuit_breaker=breaker,
    )
    breaker.record(breaker.admit(), "failure")  # open
    now[0] = 10.0
    probe = breaker.admit()  # a parent's call probing at the moment of the fork
    assert probe
    theirs = run_in_fork(lambda: [r.index for r in client.rerank(QUERY, DOCS)])
    breaker.record(probe, "success")
    assert theirs == [r.index for r in client.rerank(QUERY, DOCS)]


# -- cache keys: a string and an object are different documents -------------------------------
def test_a_string_document_and_an_object_of_the_same_json_do_not_share_cached_scores() -> None:
    from together_rerank_plugins import InMemoryScoreStore

    store = InMemoryScoreStore()
    objects = [{"text": t} for t in DOCS]
    strings = [json.dumps(o, sort_keys=True, separators=(",", ":")) for o in objects]
    first = RerankClient(api_key=TEST_KEY, transport=LexicalRerankEndpoint(), cache=store)
    first.rerank(QUERY, strings)
    endpoint = LexicalRerankEndpoint()
    second = RerankClient(api_key=TEST_KEY, transport=endpoint, cache=store)
    results = second.rerank(QUERY, objects)
    assert results.cache_hits == 0  # the object was never scored: it is sent
    assert endpoint.requests[0]["documents"] == objects


def test_16_threads_on_a_flaky_endpoint_get_the_right_ranking_or_the_flagged_fallback() -> None:
    import random
    import threading
    from concurrent.futures import ThreadPoolExecutor

    scorer = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    rng = random.Random(7)
    lock = threading.Lock()

    def flaky(request: httpx.Request) -> httpx.Response:
        with lock:
            fail = rng.random() < 0.3
        if fail:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        return scorer.handle(request)

    docs = [f"red apples {j}" if j % 3 else f"green pears {j}" for j in range(12)]
    queries = [f"red apples {i % 5}" for i in range(96)]
    expected = reference_rankings(queries, docs)
    client = RerankClient(
        api_key=TEST_KEY,
        transport=httpx.MockTransport(flaky),
        max_retries=0,
        max_batch_size=3,
        max_concurrency=3,
        cache=True,
        circuit_breaker=CircuitBreaker(failure_threshold=1000),
        on_error="fallback",
    )

    def call(q: str) -> tuple[bool, list[tuple[int, float]]]:
        results = client.rerank(q, docs)
        return results.fallback, [(r.index, r.relevance_score) for r in results]

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(call, queries))
    wrong = [
        q
        for q, (fell_back, got) in zip(queries, outcomes, strict=True)
        if not fell_back and got != expected[q]
    ]
    fallbacks = [got for fell_back, got in outcomes if fell_back]
    assert wrong == []
    assert all([i for i, _ in got] == list(range(len(docs))) for got in fallbacks)
    assert 0 < len(fallbacks) < len(queries)


@pytest.mark.loopback
def test_no_library_logs_a_secret_at_debug_over_a_real_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from together_rerank_plugins.testing import serve_loopback

    def any_auth(request: httpx.Request) -> httpx.Response:  # Basic or Bearer
        body = json.loads(request.read())
        scores = pointwise_lexical_scores(body["query"], body["documents"])
        results = [{"index": i, "relevance_score": s} for i, s in enumerate(scores)]
        return httpx.Response(200, json={"results": results})

    caplog.set_level(logging.DEBUG)
    secrets = ["sk-key-0123456789", "gw-token-0123456789", "pw-0123456789"]
    with serve_loopback(any_auth) as url:
        with_password = url.replace("http://", "http://bob:pw-0123456789@")
        for base_url in (url, with_password):
            client = RerankClient(
                api_key="sk-key-0123456789",
                base_url=base_url,
                default_headers={"X-Gateway-Token": "gw-token-0123456789"},
            )
            assert [r.index for r in client.rerank(QUERY, DOCS)] == [0, 2, 1]
            client.close()
    names = {record.name.split(".")[0] for record in caplog.records}
    assert {"httpx", "httpcore", "together"} <= names  # they did log, at DEBUG
    text = "\n".join(record.getMessage() for record in caplog.records)
    basic = base64.b64encode(b"bob:pw-0123456789").decode()
    assert [s for s in [*secrets, basic] if s in text] == []


@pytest.mark.loopback
async def test_a_call_cancelled_in_flight_never_hands_its_late_answer_to_the_next_call() -> None:
    import asyncio
    import threading

    from together_rerank_plugins.testing import serve_loopback

    scorer = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    release = threading.Event()

    def slow_for_pears(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        if "slow" in body["query"]:
            release.wait(5)  # answers only after the caller gave up
        return scorer.handle(request)

    docs = ["green pears", "red apples", "red cherries", "pears and apples"]
    reference = RerankClient(
        api_key=TEST_KEY, transport=LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    )
    with serve_loopback(slow_for_pears) as url:
        client = RerankClient(api_key=TEST_KEY, base_url=url, max_retries=0, timeout=5)
        for n in range(5):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.arerank(f"slow green pears {n}", docs), 0.1)
            release.set()  # the late answer is on its way now
            got = await client.arerank(f"red apples {n}", docs)
            release.clear()
            want = reference.rerank(f"red apples {n}", docs)
            assert [(r.index, r.relevance_score) for r in got] == [
                (r.index, r.relevance_score) for r in want
            ]
        await client.aclose()
        release.set()


def test_failover_to_the_same_endpoint_with_other_extra_body_never_feeds_the_primarys_cache() -> (
    None
):
    from together_rerank_plugins import InMemoryScoreStore

    store = InMemoryScoreStore()
    backup = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    secondary = RerankClient(
        api_key=TEST_KEY, transport=backup, cache=store, extra_body={"instruction": "b"}
    )
    down = httpx.MockTransport(lambda r: httpx.Response(503, json={"error": {"message": "x"}}))
    primary = RerankClient(
        api_key=TEST_KEY,
        transport=down,
        max_retries=0,
        cache=store,
        extra_body={"instruction": "a"},
        failover=[secondary],
    )
    assert primary.rerank(QUERY, DOCS).failed_over
    assert backup.requests[0]["instruction"] == "b"
    healthy = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    again = RerankClient(
        api_key=TEST_KEY, transport=healthy, cache=store, extra_body={"instruction": "a"}
    )
    results = again.rerank(QUERY, DOCS)
    assert results.cache_hits == 0
    assert healthy.requests[0]["instruction"] == "a"


def test_16_threads_each_running_asyncio_run_on_one_client() -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    docs = [f"red apples {j}" if j % 3 else f"green pears {j}" for j in range(12)]
    queries = [f"red apples {i % 4}" for i in range(48)]
    expected = reference_rankings(queries, docs)
    breaker = CircuitBreaker(failure_threshold=1)
    client = RerankClient(
        api_key=TEST_KEY,
        transport=LexicalRerankEndpoint(scorer=pointwise_lexical_scores),
        max_batch_size=3,
        cache=True,
        circuit_breaker=breaker,
    )

    def call(q: str) -> list[tuple[int, float]]:
        results = asyncio.run(client.arerank(q, docs))
        return [(r.index, r.relevance_score) for r in results]

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(call, queries))
    assert got == [expected[q] for q in queries]
    assert breaker.state == "closed"
    assert len(client._sdk._async) == 0  # every loop's client was closed with its loop


def test_model_family_changing_the_token_budget_changes_the_cache_key() -> None:
    from together_rerank_plugins import InMemoryScoreStore

    store = InMemoryScoreStore()
    long_doc = "red apples " + "filler words here " * 3000  # over 8,192 tokens, under 32,768
    docs = [long_doc, "green pears"]

    def client(family: str, endpoint: LexicalRerankEndpoint) -> RerankClient:
        return RerankClient(
            api_key=TEST_KEY,
            model="acme/rerank-prod",
            model_family=family,
            transport=endpoint,
            cache=store,
        )

    client("llama-rank", LexicalRerankEndpoint(scorer=pointwise_lexical_scores)).rerank(QUERY, docs)
    endpoint = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    results = client("mxbai", endpoint).rerank(QUERY, docs)
    assert results.cache_hits == 0  # the budget is part of every key
    assert long_doc in [d for r in endpoint.requests for d in r["documents"]]  # sent whole


def test_no_exception_in_the_chain_of_a_deadline_error_shows_base_url_credentials() -> None:
    # a 429 whose Retry-After does not fit in the deadline: a RateLimitError
    from together_rerank_plugins import RateLimitError

    limited = httpx.MockTransport(
        lambda r: httpx.Response(
            429, headers={"retry-after": "30"}, json={"error": {"message": "slow down"}}
        )
    )
    client = RerankClient(
        api_key=TEST_KEY,
        base_url="http://alice:s3cr3t-pass@rerank.example.com",
        transport=limited,
        deadline=1.0,
    )
    with pytest.raises(RateLimitError) as info:
        client.rerank(QUERY, DOCS)
    chain: list[BaseException] = []
    exc: BaseException | None = info.value
    while exc is not None and len(chain) < 20:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert len(chain) > 2  # the SDK's and httpx's exceptions are there
    for link in chain:
        assert "s3cr3t-pass" not in f"{link} {link!r} {link.args}"


# -- one breaker per endpoint: a failover sharing the primary's breaker keeps it closed ------
def test_a_failover_client_sharing_the_primarys_breaker_is_refused() -> None:
    from together_rerank_plugins import RerankConfigError

    breaker = CircuitBreaker(failure_threshold=2)
    secondary = RerankClient(
        api_key=TEST_KEY,
        base_url="http://backup.example",
        transport=LexicalRerankEndpoint(),
        circuit_breaker=breaker,
    )
    # each call: the primary fails (+1), the secondary answers (reset to 0): the down
    # primary's breaker would never open, and every call would pay for its failure
    with pytest.raises(RerankConfigError, match="circuit_breaker"):
        RerankClient(api_key=TEST_KEY, circuit_breaker=breaker, failover=[secondary])
    other = RerankClient(api_key=TEST_KEY, base_url="http://third.example", circuit_breaker=breaker)
    with pytest.raises(RerankConfigError, match="circuit_breaker"):
        RerankClient(api_key=TEST_KEY, failover=[secondary, other])


@pytest.mark.parametrize("adapter", ["llama_index", "langchain"])
def test_an_adapter_loaded_without_its_url_credentials_says_so_instead_of_sending_them(
    adapter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials in ``base_url`` are never serialized (``https://***@host``). A loaded
    adapter must not send ``***`` as the password (a 401 blaming the key): it must say that
    the URL's credentials have to be given again."""
    import pickle

    from together_rerank_plugins import RerankConfigError

    module = __import__(f"together_rerank_plugins.{adapter}", fromlist=["TogetherRerank"])
    monkeypatch.setenv("TOGETHER_API_KEY", TEST_KEY)
    original = module.TogetherRerank(
        base_url="https://user:s3cr3t-pass@rerank.example/v1", transport=LexicalRerankEndpoint()
    )
    data = pickle.dumps(original)
    assert b"s3cr3t-pass" not in data
    with pytest.raises(RerankConfigError, match="credentials") as err:
        pickle.loads(data)
    assert "s3cr3t-pass" not in str(err.value)
    assert "base_url" in str(err.value)
