"""The shared core: configuration, requests, response validation, errors, SDK clients.

Every test injects an ``httpx.MockTransport``: no socket is opened.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import together

import together_rerank_plugins as trp
from together_rerank_plugins import RerankClient, RerankResult
from together_rerank_plugins.testing import LexicalRerankEndpoint, lexical_scores

from .conftest import TEST_KEY

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that answers with ``reply`` and remembers each request."""

    def __init__(self, reply: Handler) -> None:
        self.reply = reply
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.reply(request)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def results_reply(results: list[dict[str, Any]] | Any, status: int = 200) -> Handler:
    return lambda request: httpx.Response(status, json={"object": "rerank", "results": results})


def make(handler: Handler, **kwargs: Any) -> tuple[RerankClient, Recorder]:
    rec = handler if isinstance(handler, Recorder) else Recorder(handler)
    kwargs.setdefault("api_key", TEST_KEY)
    kwargs.setdefault("max_retries", 0)
    return RerankClient(transport=httpx.MockTransport(rec), **kwargs), rec


DOCS = ["the cat sat", "dogs bark loudly", "a cat and a dog", "stock prices fell"]


# -- configuration ------------------------------------------------------------------------
def test_defaults_and_env_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", TEST_KEY)
    client = RerankClient()
    assert client.model == "Salesforce/Llama-Rank-V1"
    assert client.base_url == "https://api.together.ai"
    assert (client.timeout, client.max_retries) == (60.0, 2)

    monkeypatch.setenv("TOGETHER_RERANK_MODEL", "my-org/my-endpoint")
    monkeypatch.setenv("TOGETHER_BASE_URL", "http://env.example:9000/v1/")
    client = RerankClient()
    assert client.model == "my-org/my-endpoint"
    assert client.base_url == "http://env.example:9000"

    client = RerankClient(model="arg-model", base_url="http://arg.example", api_key="arg-key-123")
    assert (client.model, client.base_url) == ("arg-model", "http://arg.example")


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("http://h:1", "http://h:1/v1/rerank"),
        ("http://h:1/", "http://h:1/v1/rerank"),
        ("http://h:1/v1", "http://h:1/v1/rerank"),
        ("http://h:1/v1/", "http://h:1/v1/rerank"),
        ("https://proxy.example/together/v1", "https://proxy.example/together/v1/rerank"),
    ],
)
def test_base_url_with_or_without_v1_reaches_rerank(base_url: str, expected: str) -> None:
    client, rec = make(results_reply([{"index": 0, "relevance_score": 0.5}]), base_url=base_url)
    client.rerank("q", ["d"])
    assert str(rec.requests[0].url) == expected


def test_arg_key_beats_env_key_and_is_sent_as_bearer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", "env-key-should-lose")
    client, rec = make(results_reply([{"index": 0, "relevance_score": 0.5}]))
    client.rerank("q", ["d"])
    assert rec.requests[0].headers["authorization"] == f"Bearer {TEST_KEY}"


def test_missing_key_names_the_env_var() -> None:
    with pytest.raises(trp.RerankConfigError, match="TOGETHER_API_KEY") as info:
        RerankClient()
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("key", ["", "   "])
def test_empty_key_is_a_clear_error(key: str) -> None:
    with pytest.raises(trp.RerankConfigError, match="empty"):
        RerankClient(api_key=key)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_url": "api.together.ai"}, "base_url"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"model": ""}, "model"),
    ],
)
def test_bad_configuration_is_rejected_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(trp.RerankConfigError, match=match):
        RerankClient(api_key=TEST_KEY, **kwargs)


def test_repr_and_pickle_never_expose_the_key() -> None:
    client = RerankClient(api_key=TEST_KEY)
    assert TEST_KEY not in repr(client)
    assert TEST_KEY not in str(client)
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(client)


def test_secretstr_key_is_accepted() -> None:
    from pydantic import SecretStr

    client, rec = make(
        results_reply([{"index": 0, "relevance_score": 0.1}]), api_key=SecretStr(TEST_KEY)
    )
    client.rerank("q", ["d"])
    assert rec.requests[0].headers["authorization"] == f"Bearer {TEST_KEY}"


# -- requests -----------------------------------------------------------------------------
def test_only_set_fields_are_sent_and_json_is_deterministic() -> None:
    endpoint = LexicalRerankEndpoint()
    rec = Recorder(endpoint.handle)
    client, _ = make(rec)
    client.rerank("cat", DOCS)
    client.rerank("cat", DOCS)
    client.rerank("cat", DOCS, top_n=2)
    client.rerank("cat", DOCS, top_n=10)  # more than the candidates: not sent
    first, second, with_top, with_big = (r.content for r in rec.requests)
    assert first == second
    assert json.loads(first) == {
        "model": "Salesforce/Llama-Rank-V1",
        "query": "cat",
        "documents": DOCS,
    }
    assert json.loads(with_top)["top_n"] == 2
    assert "top_n" not in json.loads(with_big)
    other, rec2 = make(Recorder(endpoint.handle))  # a second client sends the same bytes
    other.rerank("cat", DOCS, top_n=2)
    assert rec2.requests[0].content == with_top


def test_rank_fields_and_mapping_documents_are_sent() -> None:
    client, rec = make(LexicalRerankEndpoint().handle)
    docs = [{"title": "Cats", "text": "the cat sat"}, {"title": "Dogs", "text": "dogs bark"}]
    results = client.rerank("cats", docs, rank_fields=["title", "text"])
    assert rec.bodies[0]["rank_fields"] == ["title", "text"]
    assert rec.bodies[0]["documents"] == docs
    assert results[0].index == 0


def test_empty_candidates_send_nothing() -> None:
    client, rec = make(results_reply([]))
    assert client.rerank("q", []) == []
    assert asyncio.run(client.arerank("q", [])) == []
    assert rec.requests == []


@pytest.mark.parametrize(
    ("query", "docs", "kwargs", "match"),
    [
        ("", DOCS, {}, "empty"),
        ("   \n", DOCS, {}, "empty"),
        (None, DOCS, {}, "missing"),
        (42, DOCS, {}, "string"),
        ("q", "not a list", {}, "list"),
        ("q", ["a", {"text": "b"}], {}, "mixes"),
        ("q", ["a", 3], {}, r"documents\[1\]"),
        ("q", ["a"], {"rank_fields": ["title"]}, "mapping"),
        ("q", [{"text": "a"}], {"rank_fields": ["title"]}, "title"),
        ("q", [{"text": "a"}], {"rank_fields": "text"}, "list of field names"),
        ("q", DOCS, {"top_n": 0}, "top_n"),
        ("q", DOCS, {"top_n": -3}, "top_n"),
        ("q", DOCS, {"score_threshold": float("nan")}, "score_threshold"),
    ],
)
def test_bad_call_arguments_raise_before_any_request(
    query: Any, docs: Any, kwargs: dict[str, Any], match: str
) -> None:
    client, rec = make(results_reply([]))
    with pytest.raises(trp.RerankInputError, match=match) as info:
        client.rerank(query, docs, **kwargs)
    assert isinstance(info.value, ValueError)
    assert rec.requests == []


# -- results ------------------------------------------------------------------------------
def test_scrambled_server_order_is_sorted_by_score_and_mapped_by_index() -> None:
    scrambled = [
        {"index": 2, "relevance_score": 0.2},
        {"index": 0, "relevance_score": 0.9},
        {"index": 3, "relevance_score": 0.05},
        {"index": 1, "relevance_score": 0.5},
    ]
    client, _ = make(results_reply(scrambled))
    assert client.rerank("q", DOCS) == [
        RerankResult(0, 0.9),
        RerankResult(1, 0.5),
        RerankResult(2, 0.2),
        RerankResult(3, 0.05),
    ]


def test_top_n_then_threshold() -> None:
    reply = results_reply(
        [{"index": i, "relevance_score": s} for i, s in enumerate([0.9, 0.2, 0.6, 0.4])]
    )
    client, _ = make(reply)
    assert [r.index for r in client.rerank("q", DOCS, top_n=3)] == [0, 2, 3]
    assert [r.index for r in client.rerank("q", DOCS, top_n=3, score_threshold=0.5)] == [0, 2]
    assert client.rerank("q", DOCS, score_threshold=0.95) == []
    assert len(client.rerank("q", DOCS, top_n=None)) == 4


def test_results_match_the_endpoint_scores() -> None:
    client, _ = make(LexicalRerankEndpoint().handle)
    results = client.rerank("cat dog", DOCS)
    expected = lexical_scores("cat dog", DOCS)
    assert sorted(r.index for r in results) == [0, 1, 2, 3]
    for r in results:
        assert r.relevance_score == expected[r.index]
    assert [r.relevance_score for r in results] == sorted(expected, reverse=True)


def test_result_is_frozen() -> None:
    r = RerankResult(1, 0.5)
    with pytest.raises(AttributeError):
        r.index = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("results", "match"),
    [
        ([{"index": 4, "relevance_score": 0.1}], "out of range"),
        ([{"index": -1, "relevance_score": 0.1}], "out of range"),
        (
            [{"index": 0, "relevance_score": 0.1}, {"index": 0, "relevance_score": 0.2}],
            "more than once",
        ),
        ([{"index": 0}], "not a number"),
        ([{"index": 0, "relevance_score": None}], "not a number"),
        ([{"index": 0, "relevance_score": "0.5"}], "not a number"),
        ([{"index": "0", "relevance_score": 0.5}], "not an integer"),
        ([{"relevance_score": 0.5}], "not an integer"),
        ("nope", "results"),
        (None, "results"),
    ],
)
def test_malformed_results_raise_never_rank(results: Any, match: str) -> None:
    client, _ = make(results_reply(results))
    with pytest.raises(trp.MalformedResponseError, match=match):
        client.rerank("q", DOCS, top_n=1)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_scores_raise(token: str) -> None:
    body = '{"results": [{"index": 0, "relevance_score": ' + token + "}]}"
    client, _ = make(lambda r: httpx.Response(200, content=body.encode()))
    with pytest.raises(trp.MalformedResponseError, match="finite"):
        client.rerank("q", ["d"])


def test_fewer_results_than_asked_raise() -> None:
    client, _ = make(results_reply([{"index": 0, "relevance_score": 0.5}]))
    with pytest.raises(trp.MalformedResponseError, match="expected 3"):
        client.rerank("q", DOCS, top_n=3)


def test_invalid_json_raises_malformed() -> None:
    client, _ = make(lambda r: httpx.Response(200, content=b'{"results": [{"index": 0,'))
    with pytest.raises(trp.MalformedResponseError, match="not valid JSON"):
        client.rerank("q", ["d"])


# -- errors -------------------------------------------------------------------------------
def error_reply(status: int, message: str) -> Handler:
    return lambda r: httpx.Response(
        status, json={"error": {"message": message, "type": "x", "param": None, "code": None}}
    )


@pytest.mark.parametrize(
    ("status", "cls", "words"),
    [
        (400, trp.BadRequestError, "rejected"),
        (401, trp.AuthenticationError, "TOGETHER_API_KEY"),
        (402, trp.APIStatusError, "credit"),
        (403, trp.AuthenticationError, "access"),
        (404, trp.EndpointNotFoundError, "dedicated endpoints"),
        (422, trp.BadRequestError, "rejected"),
        (429, trp.RateLimitError, "Rate limited"),
        (500, trp.ServerError, "500"),
        (503, trp.ServerError, "503"),
    ],
)
def test_status_errors_are_typed_with_advice(status: int, cls: type, words: str) -> None:
    client, _ = make(error_reply(status, "the server's own words"))
    with pytest.raises(cls) as info:
        client.rerank("q", DOCS)
    err = info.value
    assert isinstance(err, trp.RerankError)
    assert err.status_code == status
    assert words in str(err)
    assert "the server's own words" in str(err)
    assert isinstance(err.__cause__, together.APIStatusError)


def test_key_echoed_by_server_is_scrubbed_from_messages() -> None:
    client, _ = make(error_reply(401, f"bad key {TEST_KEY}"))
    with pytest.raises(trp.AuthenticationError) as info:
        client.rerank("q", DOCS)
    assert TEST_KEY not in str(info.value)
    assert TEST_KEY not in repr(info.value)


def test_timeout_and_connection_errors_are_typed() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, _ = make(hang)
    with pytest.raises(trp.RerankTimeoutError, match="timeout") as info:
        client.rerank("q", DOCS)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value.__cause__, together.APITimeoutError)
    client, _ = make(refuse)
    with pytest.raises(trp.RerankConnectionError, match="base_url"):
        client.rerank("q", DOCS)


def test_sdk_retries_transient_errors_honouring_retry_after() -> None:
    answers = iter(
        [
            httpx.Response(
                503, headers={"retry-after-ms": "1"}, json={"error": {"message": "busy"}}
            ),
            httpx.Response(
                429, headers={"retry-after-ms": "1"}, json={"error": {"message": "slow"}}
            ),
            httpx.Response(200, json={"results": [{"index": 0, "relevance_score": 0.7}]}),
        ]
    )
    client, rec = make(lambda r: next(answers), max_retries=2)
    assert client.rerank("q", ["d"]) == [RerankResult(0, 0.7)]
    assert len(rec.requests) == 3


def test_retries_are_bounded_by_max_retries() -> None:
    client, rec = make(
        lambda r: httpx.Response(500, headers={"retry-after-ms": "1"}, json={}), max_retries=1
    )
    with pytest.raises(trp.ServerError):
        client.rerank("q", ["d"])
    assert len(rec.requests) == 2


# -- SDK clients and async ----------------------------------------------------------------
def test_sync_client_is_built_once_and_reused() -> None:
    client, rec = make(LexicalRerankEndpoint().handle)
    client.rerank("cat", DOCS)
    first = client._sdk._sync
    client.rerank("dog", DOCS)
    assert client._sdk._sync is first is not None
    assert len(rec.requests) == 2


async def test_async_path_matches_sync_and_reuses_its_client() -> None:
    client, _ = make(LexicalRerankEndpoint().handle)
    sync = client.rerank("cat dog", DOCS, top_n=2)
    first = await client.arerank("cat dog", DOCS, top_n=2)
    sdk = client._sdk._async[asyncio.get_running_loop()]
    second = await client.arerank("cat dog", DOCS, top_n=2)
    assert sync == first == second
    assert client._sdk._async[asyncio.get_running_loop()] is sdk
    assert len(client._sdk._async) == 1
    await client.aclose()


def test_each_event_loop_gets_its_own_async_client_closed_at_shutdown() -> None:
    client, _ = make(LexicalRerankEndpoint().handle)
    seen = []

    async def one() -> None:
        await client.arerank("cat", DOCS)
        seen.append(client._sdk._async[asyncio.get_running_loop()][0])

    asyncio.run(one())
    asyncio.run(one())
    assert seen[0] is not seen[1]  # a closed loop's client is never reused
    assert all(sdk.is_closed() for sdk in seen)  # closed by asyncio.run's shutdown
    assert len(client._sdk._async) == 0  # and forgotten


async def test_async_errors_are_typed_too() -> None:
    client, _ = make(error_reply(404, "no such model"))
    with pytest.raises(trp.EndpointNotFoundError, match="dedicated endpoints"):
        await client.arerank("q", DOCS)


def test_importing_the_package_does_not_import_the_sdk_or_frameworks() -> None:
    code = (
        "import sys, together_rerank_plugins as t\n"
        "c = t.RerankClient(api_key='x-offline-key')\n"
        "mods = ('together', 'llama_index', 'langchain_core')\n"
        "print(sorted(m for m in mods if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.loopback
def test_dropping_a_client_closes_its_pooled_connections(loopback_url: str) -> None:
    import gc

    client = RerankClient(api_key=TEST_KEY, base_url=loopback_url)
    client.rerank("cat", DOCS)
    sdk = client._sdk._sync
    assert sdk is not None
    assert not sdk.is_closed()
    del client
    gc.collect()
    assert sdk.is_closed()


# -- what a reader sees: misplaced names ----------------------------------------------------
def test_an_unknown_client_argument_names_the_closest_known_one() -> None:
    with pytest.raises(TypeError, match="did you mean 'timeout'"):
        RerankClient(api_key=TEST_KEY, timout=3)
    # top_n is not the client's: it is given per call
    with pytest.raises(TypeError, match=r"rerank\(query, documents, top_n=\.\.\.\)"):
        RerankClient(api_key=TEST_KEY, top_k=3)


@pytest.mark.parametrize(
    ("name", "modules"),
    [("TogetherRerank", ["llama_index", "langchain"]), ("TogetherCrossEncoder", ["langchain"])],
)
def test_importing_an_adapter_class_from_the_package_says_where_it_lives(
    name: str, modules: list[str]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", f"from together_rerank_plugins import {name}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ")
    for module in modules:
        assert f"from together_rerank_plugins.{module} import {name}" in last
    # and nothing else changed: other missing names are plain, frameworks are not imported
    import together_rerank_plugins as trp

    assert not hasattr(trp, "NoSuchName")
