"""The wire under the SDK: ``deadline=``, the attempt bound, redirects, credentials in
``base_url``, fork safety and closing a dead loop's client.

Unit tests inject an ``httpx.MockTransport``; tests marked ``loopback`` use the
fault-injecting server of ``tests/faults.py`` (a child process on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import together_rerank_plugins as trp
from together_rerank_plugins import RerankClient

from .conftest import TEST_KEY
from .faults import NO_FAULT, FaultServer, force

DOCS = ["apple pie", "banana split", "cherry tart"]
SLACK = 2.0  # scheduling on a loaded machine; what these catch takes tens of seconds


def expected(query: str) -> list[int]:
    """The lexical endpoint's ranking: documents sharing a query word first."""
    words = set(query.split())
    return sorted(range(len(DOCS)), key=lambda i: (-len(words & set(DOCS[i].split())), i))


# -- the three ways in: a function (query, docs) -> ranked indices, sync and async ---------
def core(base_url: str, transport: Any = None, **options: Any) -> tuple[Any, Any, Any]:
    client = RerankClient(api_key=TEST_KEY, base_url=base_url, transport=transport, **options)

    def run(query: str) -> Any:
        out = client.rerank(query, DOCS)
        return [r.index for r in out], bool(out.fallback)

    async def arun(query: str) -> Any:
        out = await client.arerank(query, DOCS)
        return [r.index for r in out], bool(out.fallback)

    return run, arun, client


def llama(base_url: str, transport: Any = None, **options: Any) -> tuple[Any, Any, Any]:
    from llama_index.core.schema import NodeWithScore, TextNode

    from together_rerank_plugins.llama_index import TogetherRerank

    pp = TogetherRerank(
        api_key=TEST_KEY, base_url=base_url, transport=transport, top_n=None, **options
    )
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i))) for i, t in enumerate(DOCS)]

    def out(res: Any) -> Any:
        flags = [n.node.metadata.get("rerank_fallback", False) for n in res]
        return [int(n.node.node_id) for n in res], any(flags)

    def run(query: str) -> Any:
        return out(pp.postprocess_nodes(nodes, query_str=query))

    async def arun(query: str) -> Any:
        return out(await pp.apostprocess_nodes(nodes, query_str=query))

    return run, arun, pp.client


def lang(base_url: str, transport: Any = None, **options: Any) -> tuple[Any, Any, Any]:
    from langchain_core.documents import Document

    from together_rerank_plugins.langchain import TogetherRerank

    comp = TogetherRerank(
        api_key=TEST_KEY, base_url=base_url, transport=transport, top_n=None, **options
    )
    docs = [Document(t, id=str(i)) for i, t in enumerate(DOCS)]

    def out(res: Any) -> Any:
        flags = [d.metadata.get("rerank_fallback", False) for d in res]
        return [int(str(d.id)) for d in res], any(flags)

    def run(query: str) -> Any:
        return out(comp.compress_documents(docs, query))

    async def arun(query: str) -> Any:
        return out(await comp.acompress_documents(docs, query))

    return run, arun, comp.client


WAYS = {"core": core, "llama_index": llama, "langchain": lang}


def call(way: Callable[..., Any], mode: str, base_url: str, query: str, **options: Any) -> Any:
    """Run one call; return (outcome or exception, seconds)."""
    run, arun, client = way(base_url, **options)
    start = time.monotonic()
    try:
        if mode == "sync":
            result: Any = run(query)
        else:

            async def main() -> Any:
                try:
                    return await arun(query)
                finally:
                    await client.aclose()

            result = asyncio.run(main())
    except Exception as exc:
        result = exc
    finally:
        client.close()
    return result, time.monotonic() - start


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A server of its own, for tests that read its log (which stopping it collects)."""
    with FaultServer({}) as srv:  # no random faults: each test forces its own
        yield srv


@pytest.fixture(scope="module")
def shared() -> Iterator[FaultServer]:
    """One server for the tests that only look at what the client did."""
    with FaultServer({}) as srv:
        yield srv


# -- deadline= : configuration --------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5", True])
def test_deadline_is_validated(bad: Any) -> None:
    with pytest.raises(trp.RerankConfigError, match="`deadline` must be"):
        RerankClient(api_key=TEST_KEY, deadline=bad)


def test_deadline_is_shown_and_shared_by_adapter_copies() -> None:
    from together_rerank_plugins.langchain import TogetherRerank as LC
    from together_rerank_plugins.llama_index import TogetherRerank as LI

    assert "deadline=2.5" in repr(RerankClient(api_key=TEST_KEY, deadline=2.5))
    for cls in (LI, LC):
        base = cls(api_key=TEST_KEY, deadline=3)
        assert base.client.deadline == 3.0
        assert base.model_dump()["deadline"] == 3.0
        quick = base.with_options(deadline=0.5)
        assert quick.client.deadline == 0.5
        assert base.client.deadline == 3.0
        assert quick.client._sdk is base.client._sdk  # one connection pool
        with pytest.raises(trp.RerankConfigError, match="deadline"):
            base.with_options(deadline=0)
        with pytest.raises(trp.RerankConfigError, match="deadline"):
            cls(api_key=TEST_KEY, deadline=-2)


def test_the_retry_hook_exists_in_the_pinned_sdk() -> None:
    """The deadline caps the SDK's retry sleep through its private hook: if a new SDK
    renames it, this fails (and the cap degrades to the attempt bounds alone)."""
    from together import AsyncTogether, Together

    from together_rerank_plugins._transport import cap_retry_sleep

    for cls in (Together, AsyncTogether):
        assert callable(getattr(cls, "_calculate_retry_timeout", None))
        assert cap_retry_sleep(cls(api_key=TEST_KEY))


# -- deadline= : long Retry-After, backoff (no sockets) -------------------------------------
def _throttled(retry_after: str | None) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"retry-after": retry_after} if retry_after else {}
        return httpx.Response(429, headers=headers, json={"error": {"message": "slow down"}})

    return handler


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("retry_after", ["30", None])  # a long Retry-After; the SDK's backoff
def test_a_wait_longer_than_the_deadline_is_not_taken(
    way: str, mode: str, retry_after: str | None
) -> None:
    """The rate limit stays visible. A 429 whose wait does not fit in the deadline raised
    RerankTimeoutError with no status; it is a RateLimitError (status 429, the server's
    Retry-After in ``retry_after``) whose message says it was not retried because of the
    deadline, raised at once."""
    handler = _throttled(retry_after)
    transport = httpx.MockTransport(handler)
    result, took = call(
        WAYS[way], mode, "https://api.example.com", "apple", transport=transport,
        max_retries=5, deadline=0.5,
    )  # fmt: skip
    assert type(result) is trp.RateLimitError, result
    assert result.status_code == 429
    assert result.retry_after == (30.0 if retry_after else None)
    assert result.server_message == "slow down"
    assert "deadline" in str(result)
    assert "0.5 s" in str(result)
    assert took < 0.5 + SLACK  # failed at once: neither 30 s nor 1 s of backoff was waited


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_deadline_with_fallback_returns_the_fallback_at_once(mode: str) -> None:
    transport = httpx.MockTransport(_throttled("30"))
    result, took = call(
        llama, mode, "https://api.example.com", "apple", transport=transport,
        max_retries=5, deadline=0.5, on_error="fallback",
    )  # fmt: skip
    assert result == ([0, 1, 2], True)
    assert took < 0.5 + SLACK


def test_short_retry_waits_still_happen_within_the_deadline() -> None:
    """A Retry-After that fits is honoured: the call succeeds on its second attempt."""
    answers = iter(
        [
            httpx.Response(429, headers={"retry-after-ms": "10"}, json={}),
            httpx.Response(
                200,
                json={"results": [{"index": i, "relevance_score": 1 - i / 10} for i in (0, 1, 2)]},
            ),
        ]
    )
    run, _, client = core(
        "https://api.example.com",
        transport=httpx.MockTransport(lambda r: next(answers)),
        max_retries=2,
        deadline=5,
    )
    with client:
        assert run("apple") == ([0, 1, 2], False)
    assert next(answers, None) is None  # both answers were used: one retry happened


# -- deadline= and the attempt bound on real sockets ----------------------------------------
@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("way", WAYS)
def test_deadline_holds_against_a_hanging_server(shared: FaultServer, way: str, mode: str) -> None:
    result, took = call(
        WAYS[way], mode, shared.base_url, f"apple {force('hang')}",
        timeout=30, max_retries=3, deadline=0.6,
    )  # fmt: skip
    assert isinstance(result, trp.RerankTimeoutError), result
    assert "deadline" in str(result)
    assert 0.6 * 0.95 <= took < 0.6 + SLACK


@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("way", WAYS)
def test_timeout_bounds_an_attempt_against_a_trickling_server(
    shared: FaultServer, way: str, mode: str
) -> None:
    """Slowloris: the right answer, one byte every 50 ms (each read well within `timeout`);
    the attempt still ends within `timeout`."""
    result, took = call(
        WAYS[way], mode, shared.base_url, f"apple {force('trickle')}",
        timeout=0.5, max_retries=0,
    )  # fmt: skip
    assert isinstance(result, trp.RerankTimeoutError), result
    assert 0.5 * 0.95 <= took < 0.5 + SLACK


@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_deadline_holds_against_a_trickling_server_over_concurrent_batches(
    server: FaultServer, mode: str
) -> None:
    """Three batches in flight; every one trickles: the call ends at its deadline and
    leaves no thread or task behind."""
    threads = threading.active_count()
    run, arun, client = core(
        server.base_url, timeout=30, max_retries=2, deadline=0.7, max_batch_size=1
    )
    query = f"apple {force('trickle')}"

    async def main() -> None:
        try:
            await arun(query)
        finally:
            assert asyncio.all_tasks() == {asyncio.current_task()}
            await client.aclose()

    start = time.monotonic()
    with pytest.raises(trp.RerankTimeoutError, match="deadline"):
        run(query) if mode == "sync" else asyncio.run(main())
    took = time.monotonic() - start
    client.close()
    assert took < 0.7 + SLACK
    assert threading.active_count() == threads
    server.stop()
    assert len(server.attempts_for(query)) == 3  # all three batches were sent, none retried


@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_call_within_its_deadline_is_unaffected(shared: FaultServer, mode: str) -> None:
    query = f"apple {NO_FAULT}"
    result, _ = call(core, mode, shared.base_url, query, deadline=10, max_batch_size=1)
    assert result == (expected(query), False)


# -- redirects ------------------------------------------------------------------------------
class Origins:
    """A MockTransport that serves two hosts and records who was contacted."""

    def __init__(self, location: str, status: int = 307) -> None:
        self.location, self.status = location, status
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(str(request.url))
        if request.url.path == "/v1/rerank" and request.url.host == "api.example.com":
            return httpx.Response(self.status, headers={"location": self.location})
        n = len(json.loads(request.content)["documents"])
        results = [{"index": i, "relevance_score": 1 - i / 10} for i in range(n)]
        return httpx.Response(200, json={"results": results})


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(
    "location",
    [
        "https://evil.example.net/v1/rerank",
        "https://api.example.com:8443/v1/rerank",  # another port
        "http://api.example.com/v1/rerank",  # another scheme
        "https://u:hunter22@evil.example.net/x",  # credentials in the target: redacted
    ],
)
@pytest.mark.parametrize("status", [307, 308])
def test_a_redirect_to_another_origin_is_refused(
    way: str, mode: str, location: str, status: int
) -> None:
    origins = Origins(location, status)
    result, _ = call(
        WAYS[way], mode, "https://api.example.com", "apple",
        transport=httpx.MockTransport(origins), max_retries=2,
    )  # fmt: skip
    assert type(result) is trp.CrossOriginRedirectError, result
    assert result.status_code == status
    shown = location.replace("u:hunter22@", "***@")
    assert result.location == shown
    assert shown in str(result)
    assert "hunter22" not in str(result) + repr(result.__cause__)
    assert origins.seen == ["https://api.example.com/v1/rerank"]  # once: not retried, not followed


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_redirect_within_the_origin_is_followed(mode: str) -> None:
    origins = Origins("/v2/rerank")  # same scheme, host and port
    result, _ = call(
        core, mode, "https://api.example.com", "apple", transport=httpx.MockTransport(origins)
    )
    assert result == ([0, 1, 2], False)
    assert origins.seen == [
        "https://api.example.com/v1/rerank",
        "https://api.example.com/v2/rerank",
    ]


def test_fallback_does_not_mask_a_refused_redirect() -> None:
    origins = Origins("https://evil.example.net/v1/rerank")
    result, _ = call(
        core, "sync", "https://api.example.com", "apple",
        transport=httpx.MockTransport(origins), on_error="fallback",
    )  # fmt: skip
    assert type(result) is trp.CrossOriginRedirectError


@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("way", WAYS)
def test_a_cross_origin_redirect_on_real_sockets_never_reaches_the_other_origin(
    server: FaultServer, way: str, mode: str
) -> None:
    result, _ = call(
        WAYS[way], mode, server.base_url, f"apple {force('redirect_foreign')}", max_retries=2
    )
    assert type(result) is trp.CrossOriginRedirectError, result
    assert server.foreign_url in str(result)
    server.stop()
    assert server.foreign_contacts == 0


# -- credentials in base_url ----------------------------------------------------------------
def test_credentials_in_base_url_are_redacted_everywhere() -> None:
    from together_rerank_plugins.langchain import TogetherRerank as LC
    from together_rerank_plugins.llama_index import TogetherRerank as LI

    url = "https://alice:s3cr3t-pass@rerank.example.com/v1"
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, json={"error": {"message": "no such model"}})

    transport = httpx.MockTransport(handler)
    client = RerankClient(api_key=TEST_KEY, base_url=url, transport=transport, max_retries=0)
    with pytest.raises(trp.EndpointNotFoundError) as info:
        client.rerank("q", ["a"])
    shown = [repr(client), client.base_url, str(info.value), repr(client._sdk.settings)]
    for cls in (LI, LC):
        adapter = cls(api_key=TEST_KEY, base_url=url, transport=transport, max_retries=0)
        shown += [repr(adapter), str(adapter.model_dump()), str(adapter)]
        if cls is LI:
            shown.append(str(adapter.to_dict()))
        # a copy with another option still uses the real credentials
        with pytest.raises(trp.EndpointNotFoundError):
            adapter.with_options(timeout=5).client.rerank("q", ["a"])
    assert all("s3cr3t-pass" not in text and "alice" not in text for text in shown), shown
    assert "https://***@rerank.example.com" in client.base_url
    # the real credentials were used, as HTTP Basic auth, outside the (logged) URL
    basic = "Basic " + base64.b64encode(b"alice:s3cr3t-pass").decode()
    assert all(r.headers["authorization"] == basic and not r.url.password for r in seen)


def test_a_bad_base_url_with_credentials_is_reported_redacted() -> None:
    with pytest.raises(trp.RerankConfigError) as info:
        RerankClient(api_key=TEST_KEY, base_url="https://bob:pw-123456@x.example.com/?q=1")
    assert "pw-123456" not in str(info.value)
    assert "***@x.example.com" in str(info.value)


# -- fork -----------------------------------------------------------------------------------
ROUNDS = 20


@pytest.mark.loopback
@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_after_fork_parent_and_child_never_read_each_others_answers(
    shared: FaultServer, mode: str
) -> None:
    """Warm a client (a pooled keep-alive socket), fork, and have the child and the parent
    rank different queries at the same moment, many times: each gets its own answer.

    Async: the parent keeps its loop (and its pooled connection); the child runs its calls
    with ``asyncio.run`` on the same client. A new loop gets a new async client anyway, so
    the async case checks the outcome, not the fork hook: the sync case is the one that
    fails without it (26 correct, 12 errors, 2 wrong rankings before the fix)."""
    client = RerankClient(api_key=TEST_KEY, base_url=shared.base_url, max_retries=0, timeout=5)
    loop = asyncio.new_event_loop()

    def rank(query: str) -> list[int]:
        if mode == "sync":
            return [r.index for r in client.rerank(query, DOCS)]
        return [r.index for r in loop.run_until_complete(client.arerank(query, DOCS))]

    rank(f"warm {NO_FAULT}")
    wrong = errors = correct = 0
    for n in range(ROUNDS):
        child_query, parent_query = f"apple {n} {NO_FAULT}", f"cherry {n} {NO_FAULT}"
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: rank, report through the pipe, leave at once
            code = 0
            try:
                if mode == "sync":
                    got: Any = [r.index for r in client.rerank(child_query, DOCS)]
                else:
                    got = asyncio.run(client.arerank(child_query, DOCS))
                    got = [r.index for r in got]
            except BaseException as exc:
                got = type(exc).__name__
            try:
                os.write(write_end, json.dumps(got).encode())
            finally:
                os._exit(code)
        os.close(write_end)
        try:
            mine: Any = rank(parent_query)
        except trp.RerankError as exc:
            mine = type(exc).__name__
        _, _status = os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as pipe:
            theirs = json.loads(pipe.read() or b'"no answer"')
        for got, query in ((mine, parent_query), (theirs, child_query)):
            if isinstance(got, str):
                errors += 1
            elif got == expected(query):
                correct += 1
            else:
                wrong += 1
    if mode == "async":
        loop.run_until_complete(client.aclose())
    loop.close()
    client.close()
    print(
        f"\nfork [{mode}]: {2 * ROUNDS} calls in {ROUNDS} forks, {correct} correct, "
        f"{errors} errors, {wrong} wrong rankings"
    )
    assert wrong == 0
    assert errors == 0
    assert correct == 2 * ROUNDS


# -- a loop that dies without closing our client --------------------------------------------
SCRIPT_PRELUDE = """
import asyncio, gc, os, sys, warnings
warnings.simplefilter("always")  # ResourceWarnings printed, never hidden
from together_rerank_plugins import RerankClient

def open_sockets_to(port):
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = 0
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == port and fields[9] in inodes:
                found += 1
    return found

client = RerankClient(api_key="test-key-0123456789abcdef", base_url=sys.argv[1])
port = int(sys.argv[1].rsplit(":", 1)[1])
docs = ["apple pie", "banana split", "cherry tart"]
"""

LLAMA_INDEX_CASE = """
from llama_index.core.async_utils import asyncio_run

async def outer():  # a running loop, as in Jupyter: asyncio_run uses a worker thread
    for _ in range(3):
        asyncio_run(client.arerank("apple inject-none", docs))

asyncio.run(outer())
gc.collect()
print("open", open_sockets_to(port))
"""

NEST_ASYNCIO_CASE = """
import nest_asyncio
nest_asyncio.apply()
for _ in range(3):
    asyncio.run(client.arerank("apple inject-none", docs))
print("open", open_sockets_to(port))
"""


@pytest.mark.loopback
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("case", ["llama_index", "nest_asyncio"])
def test_a_dead_loops_client_is_closed_without_a_word(shared: FaultServer, case: str) -> None:
    body = LLAMA_INDEX_CASE if case == "llama_index" else NEST_ASYNCIO_CASE
    script = SCRIPT_PRELUDE + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-c", script, shared.base_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    if case == "llama_index":  # the worker thread's loops are closed: so are their sockets
        assert proc.stdout.split() == ["open", "0"], proc.stdout
