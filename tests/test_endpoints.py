"""Reaching a dedicated model both ways: ``model_family``, the 404 hints that
point at the other Together host, and ``extra_body`` / ``default_headers`` for compatible
servers. In-process transports, except the tests marked ``loopback``.

Nothing here was tried against Together: the hosts and limits are taken from its
documentation (docs/endpoints.md), the servers are our test doubles.
"""

from __future__ import annotations

import importlib
import json
import logging
import pickle
from typing import Any

import httpx
import pytest

import together_rerank_plugins as trp
from together_rerank_plugins import RerankClient, _config
from together_rerank_plugins.testing import (
    LexicalRerankEndpoint,
    pointwise_lexical_scores,
    serve_loopback,
)

from .conftest import TEST_KEY

DOCS = ["Paris is the capital of France.", "Berlin is in Germany."]
MXBAI_BUDGET = 32768
LLAMA_BUDGET = 8192
HEADER_SECRET = "gw-token-9c1e5b2d4a6f8e0c-SECRET"


def client(transport: Any = None, **kw: Any) -> RerankClient:
    return RerankClient(**({"api_key": TEST_KEY, "max_retries": 0, "transport": transport} | kw))


# -- model_family ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "family", "budget"),
    [
        ("Salesforce/Llama-Rank-V1", "llama-rank", LLAMA_BUDGET),
        ("mixedbread-ai/Mxbai-Rerank-Large-V2", "mxbai", MXBAI_BUDGET),
        ("acme/rerank-prod", None, LLAMA_BUDGET),  # an endpoint string says nothing
        ("my-org/llama-rank-endpoint", "llama-rank", LLAMA_BUDGET),
        # a smaller self-hosted Mxbai has a far smaller budget than the Large's 32,768
        ("mixedbread-ai/mxbai-rerank-base-v1", None, LLAMA_BUDGET),
    ],
)
def test_family_is_inferred_from_the_name_as_before(model: str, family: Any, budget: int) -> None:
    c = client(model=model)
    assert (c.model_family, c.max_tokens_per_doc, c.max_batch_size) == (family, budget, 1024)


def test_a_name_saying_mxbai_never_gets_rank_fields_as_before(
    endpoint: LexicalRerankEndpoint,
) -> None:
    c = client(endpoint, model="my-org/mxbai-rerank-base-v1")
    with pytest.raises(trp.RerankInputError, match="Llama-Rank"):
        c.rerank("q", [{"title": "t"}], rank_fields=["title"])
    assert endpoint.requests == []


def test_an_mxbai_endpoint_string_gets_mxbai_limits_with_model_family(
    endpoint: LexicalRerankEndpoint,
) -> None:
    """Before: `acme/rerank-prod` serving Mxbai got Llama-Rank's 8,192-token budget, so a
    20,000-token document was cut into windows although the model takes it whole."""
    long_doc = "Paris " + "filler words about nothing in particular " * 1500  # ~23k tokens
    c = client(endpoint, model="acme/rerank-prod", model_family="mxbai")
    assert c.max_tokens_per_doc == MXBAI_BUDGET
    results = c.rerank("Paris", [long_doc, "Berlin"])
    assert results.documents_sent == 2  # sent whole, not in windows
    assert endpoint.requests[0]["documents"][0] == long_doc
    unknown = client(LexicalRerankEndpoint(), model="acme/rerank-prod")
    assert unknown.rerank("Paris", [long_doc, "Berlin"]).documents_sent > 2  # chunked


def test_mxbai_family_refuses_rank_fields_before_sending(endpoint: LexicalRerankEndpoint) -> None:
    c = client(endpoint, model="acme/rerank-prod", model_family="mxbai")
    docs = [{"title": "Paris", "text": "capital of France"}]
    with pytest.raises(trp.RerankInputError, match="strings") as info:
        c.rerank("capital", docs, rank_fields=["title", "text"])
    assert "model_family" in str(info.value)
    assert endpoint.requests == []


def test_llama_rank_family_sends_rank_fields(endpoint: LexicalRerankEndpoint) -> None:
    c = client(endpoint, model="acme/rerank-prod", model_family="llama-rank")
    docs = [{"title": "Berlin", "text": "Germany"}, {"title": "Paris", "text": "France"}]
    assert c.rerank("Paris", docs, rank_fields=["title"])[0].index == 1
    assert endpoint.requests[0]["rank_fields"] == ["title"]


def test_family_from_the_environment_and_the_argument_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOGETHER_RERANK_MODEL_FAMILY", "MXBAI")
    assert client(model="acme/rerank-prod").max_tokens_per_doc == MXBAI_BUDGET
    assert client(model="acme/rerank-prod", model_family="llama-rank").model_family == (
        "llama-rank"
    )
    # it also overrides what the name suggests: the user knows their endpoint
    assert client(model="acme/mxbai-on-llama-rank").model_family == "mxbai"


def test_explicit_limits_still_win() -> None:
    c = client(
        model="acme/rerank-prod", model_family="mxbai", max_batch_size=7, max_tokens_per_doc=900
    )
    assert (c.max_batch_size, c.max_tokens_per_doc) == (7, 900)


@pytest.mark.parametrize("bad", ["llama", "cohere", "", 3])
def test_bad_family_is_refused_naming_the_choices(bad: Any) -> None:
    with pytest.raises(trp.RerankConfigError, match="'llama-rank', 'mxbai'"):
        client(model_family=bad)


def test_bad_family_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOGETHER_RERANK_MODEL_FAMILY", "cohere")
    with pytest.raises(trp.RerankConfigError, match="TOGETHER_RERANK_MODEL_FAMILY"):
        client()


def test_unknown_family_says_once_at_info_what_it_assumed(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_config, "_assumed", set())  # a fresh process, as far as it knows
    caplog.set_level(logging.INFO, logger="together_rerank_plugins")
    client(model="acme/said-once")
    client(model="acme/said-once")
    client(model="acme/said-once", model_family="llama-rank")  # known: nothing to say
    client(model="acme/fully-set", max_batch_size=10, max_tokens_per_doc=500)  # nothing assumed
    client(model="acme/said-twice")
    notes = [r for r in caplog.records if "does not name its family" in r.getMessage()]
    assert [r.levelno for r in notes] == [logging.INFO, logging.INFO]
    first = notes[0].getMessage()
    assert "'acme/said-once'" in first
    assert "'acme/said-twice'" in notes[1].getMessage()
    for words in ("1024 documents", "8192 tokens", "model_family", "TOGETHER_RERANK_MODEL_FAMILY"):
        assert words in first


def test_unknown_family_sends_rank_fields_and_a_400_names_the_fix() -> None:
    def no_objects(request: httpx.Request) -> httpx.Response:
        if any(isinstance(d, dict) for d in json.loads(request.content)["documents"]):
            return httpx.Response(400, json={"error": {"message": "documents must be strings"}})
        return httpx.Response(200, json={"results": []})

    c = client(httpx.MockTransport(no_objects), model="acme/rerank-prod")
    with pytest.raises(trp.BadRequestError, match="model_family='mxbai'"):
        c.rerank("q", [{"text": "a"}], rank_fields=["text"])


@pytest.mark.parametrize("module", ["llama_index", "langchain"])
def test_adapters_take_model_family(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = importlib.import_module(f"together_rerank_plugins.{module}")
    rerank = adapter.TogetherRerank(
        model="acme/rerank-prod", model_family="mxbai", api_key=TEST_KEY, rank_fields=["title"]
    )
    assert rerank.client.max_tokens_per_doc == MXBAI_BUDGET
    assert rerank.model_dump()["model_family"] == "mxbai"
    with pytest.raises(trp.RerankInputError, match="Llama-Rank"):
        rerank.client.rerank("q", [{"title": "t"}], rank_fields=["title"])
    monkeypatch.setenv("TOGETHER_RERANK_MODEL_FAMILY", "llama-rank")
    from_env = adapter.TogetherRerank(model="acme/rerank-prod", api_key=TEST_KEY)
    assert from_env.model_dump()["model_family"] == "llama-rank"  # what was used
    monkeypatch.delenv("TOGETHER_RERANK_MODEL_FAMILY")
    # an inferred family is not pinned: changing the model re-infers it
    inferred = adapter.TogetherRerank(api_key=TEST_KEY)
    assert inferred.model_family is None
    mxbai = inferred.with_options(model="mixedbread-ai/Mxbai-Rerank-Large-V2")
    assert mxbai.client.model_family == "mxbai"


# -- 404: the other way to reach a dedicated model ------------------------------------------
def not_found(**kw: Any) -> trp.EndpointNotFoundError:
    c = client(LexicalRerankEndpoint(models=[]), **kw)
    with pytest.raises(trp.EndpointNotFoundError) as info:
        c.rerank("q", DOCS)
    return info.value


@pytest.mark.parametrize("host", ["https://api.together.ai", "https://api.together.xyz/v1"])
def test_404_for_an_endpoint_string_on_the_api_host_suggests_dmi(host: str) -> None:
    message = str(not_found(model="acme/rerank-prod", base_url=host))
    assert "https://api-inference.together.ai/v1" in message
    assert "dedicated endpoints" in message
    assert "TOGETHER_BASE_URL" in message


def test_404_on_the_dmi_host_suggests_the_api_host() -> None:
    message = str(
        not_found(model="acme-rerank-endpoint", base_url="https://api-inference.together.ai/v1")
    )
    assert "https://api.together.ai" in message
    assert "<project_slug>/<endpoint_name>" in message


@pytest.mark.parametrize(
    ("model", "base_url"),
    [
        ("Salesforce/Llama-Rank-V1", "https://api.together.ai"),  # a catalog name
        ("acme/team/rerank", "https://api.together.ai"),  # not <slug>/<name>
        ("acme/rerank-prod", "http://localhost:8000/v1"),  # not Together
    ],
)
def test_no_host_hint_where_it_does_not_fit(model: str, base_url: str) -> None:
    message = str(not_found(model=model, base_url=base_url))
    assert "api-inference" not in message
    assert "dedicated endpoints" in message


# -- extra_body -----------------------------------------------------------------------------
def needs_instruction(inner: LexicalRerankEndpoint) -> Any:
    """A server like vLLM serving an instruction-following reranker: 400 without it."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        if not isinstance(body.get("instruction"), str):
            return httpx.Response(400, json={"error": {"message": "'instruction' is required"}})
        return inner.handle(request)

    return handle


@pytest.mark.loopback
def test_extra_body_reaches_a_server_that_needs_it() -> None:
    inner = LexicalRerankEndpoint()
    with serve_loopback(needs_instruction(inner)) as url:
        plain = client(base_url=url, model="Qwen/Qwen3-Reranker-0.6B")
        with pytest.raises(trp.BadRequestError, match="instruction"):
            plain.rerank("capital of France", DOCS)
        extra = {"instruction": "Rank by whether the passage answers the question."}
        c = client(base_url=url, model="Qwen/Qwen3-Reranker-0.6B", extra_body=extra)
        assert c.rerank("capital of France", DOCS, top_n=1)[0].index == 0
        assert inner.requests == [
            {
                "model": "Qwen/Qwen3-Reranker-0.6B",
                "query": "capital of France",
                "documents": DOCS,
                "top_n": 1,
                "instruction": extra["instruction"],
            }
        ]


async def test_extra_body_in_every_request_sync_async_and_batches(
    endpoint: LexicalRerankEndpoint,
) -> None:
    c = client(endpoint, extra_body={"priority": 2, "options": {"a": [1, None]}}, max_batch_size=1)
    c.rerank("Paris", DOCS)
    await c.arerank("Paris", DOCS)
    assert len(endpoint.requests) == 4
    for body in endpoint.requests:
        assert body["priority"] == 2
        assert body["options"] == {"a": [1, None]}


@pytest.mark.parametrize(
    "key", ["model", "query", "documents", "top_n", "return_documents", "rank_fields"]
)
def test_extra_body_may_not_set_what_the_client_sets(key: str) -> None:
    with pytest.raises(trp.RerankConfigError, match=f"'{key}'"):
        client(extra_body={key: 1})


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (["instruction"], "mapping"),
        ({"x": float("nan")}, "JSON"),
        ({"x": object()}, "JSON"),
        ({1: "x"}, "strings"),
    ],
)
def test_bad_extra_body_is_refused(bad: Any, words: str) -> None:
    with pytest.raises(trp.RerankConfigError, match=words):
        client(extra_body=bad)


def test_extra_body_is_copied_at_construction(endpoint: LexicalRerankEndpoint) -> None:
    extra = {"instruction": "first"}
    c = client(endpoint, extra_body=extra)
    extra["instruction"] = "changed later"
    extra["model"] = "sneaked in"
    c.rerank("Paris", DOCS)
    assert endpoint.requests[0]["instruction"] == "first"
    assert endpoint.requests[0]["model"] == trp.DEFAULT_MODEL


def test_extra_body_is_part_of_the_score_cache_key() -> None:
    """An instruction can change scores: a score cached under one must not answer another."""
    endpoint = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    store = trp.InMemoryScoreStore()
    a = client(endpoint, cache=store, extra_body={"instruction": "a"})
    b = client(endpoint, cache=store, extra_body={"instruction": "b"})
    a.rerank("Paris", DOCS)
    assert b.rerank("Paris", DOCS).cache_hits == 0
    assert [r["instruction"] for r in endpoint.requests] == ["a", "b"]
    assert a.rerank("Paris", DOCS).cache_hits == 2  # same extra body: served from the cache
    plain = client(endpoint, cache=store)
    assert plain.rerank("Paris", DOCS).cache_hits == 0


@pytest.mark.parametrize("module", ["llama_index", "langchain"])
def test_adapters_take_extra_body(module: str, endpoint: LexicalRerankEndpoint) -> None:
    adapter = importlib.import_module(f"together_rerank_plugins.{module}")
    rerank = adapter.TogetherRerank(
        api_key=TEST_KEY, transport=endpoint, extra_body={"instruction": "x"}
    )
    assert rerank.model_dump()["extra_body"] == {"instruction": "x"}
    rerank.client.rerank("Paris", DOCS)
    assert endpoint.requests[0]["instruction"] == "x"
    with pytest.raises(trp.RerankConfigError, match="'top_n'"):
        adapter.TogetherRerank(api_key=TEST_KEY, extra_body={"top_n": 3})


# -- default_headers ------------------------------------------------------------------------
class HeaderSpy(LexicalRerankEndpoint):
    def __init__(self) -> None:
        super().__init__()
        self.headers: list[httpx.Headers] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        return super().handle(request)


async def test_default_headers_go_with_every_request() -> None:
    spy = HeaderSpy()
    c = client(spy, default_headers={"X-Route": "eu-1", "X-Gateway-Token": HEADER_SECRET})
    c.rerank("Paris", DOCS)
    await c.arerank("Paris", DOCS)
    assert [h["x-route"] for h in spy.headers] == ["eu-1", "eu-1"]
    assert [h["x-gateway-token"] for h in spy.headers] == [HEADER_SECRET] * 2
    assert all(h["authorization"] == f"Bearer {TEST_KEY}" for h in spy.headers)


@pytest.mark.loopback
def test_default_headers_reach_a_gateway_that_needs_them_and_never_show(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Over a real socket, with every logger at DEBUG (httpcore's included)."""
    inner = LexicalRerankEndpoint()

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.headers.get("x-gateway-token") != HEADER_SECRET:
            return httpx.Response(403, json={"error": {"message": "gateway: token required"}})
        return inner.handle(request)

    caplog.set_level(logging.DEBUG)
    with serve_loopback(gateway) as url:
        with pytest.raises(trp.AuthenticationError):
            client(base_url=url).rerank("Paris", DOCS)
        headers = {"X-Gateway-Token": HEADER_SECRET}
        assert client(base_url=url, default_headers=headers).rerank("Paris", DOCS)[0].index == 0
    assert len(inner.requests) == 1
    assert caplog.records  # the loggers did log the requests
    assert HEADER_SECRET not in caplog.text


@pytest.mark.parametrize("name", ["Authorization", "content-type", "Host"])
def test_default_headers_may_not_replace_the_clients_own(name: str) -> None:
    with pytest.raises(trp.RerankConfigError, match=name):
        client(default_headers={name: HEADER_SECRET})


@pytest.mark.parametrize(
    "bad", [{"X-A": 1}, {"X-A": "two\r\nlines " + HEADER_SECRET}, {"bad name": "v"}, ["X-A"]]
)
def test_bad_default_headers_are_refused_without_quoting_values(bad: Any) -> None:
    with pytest.raises(trp.RerankConfigError) as info:
        client(default_headers=bad)
    assert HEADER_SECRET not in str(info.value)


def test_default_headers_never_show(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"X-Gateway-Token": HEADER_SECRET}
    c = client(LexicalRerankEndpoint(models=[]), default_headers=headers)
    assert HEADER_SECRET not in repr(c) + str(c) + repr(c._sdk.settings)
    with pytest.raises(trp.EndpointNotFoundError) as info:
        c.rerank("q", DOCS)
    assert HEADER_SECRET not in str(info.value)
    assert "/v1/rerank" in caplog.text  # the request was logged (httpx, DEBUG)...
    assert HEADER_SECRET not in caplog.text  # ...without the header's value


@pytest.mark.parametrize("module", ["llama_index", "langchain"])
def test_adapters_keep_default_headers_secret(module: str) -> None:
    adapter = importlib.import_module(f"together_rerank_plugins.{module}")
    spy = HeaderSpy()
    headers = {"X-Gateway-Token": HEADER_SECRET}
    rerank = adapter.TogetherRerank(api_key=TEST_KEY, transport=spy, default_headers=headers)
    shown = [repr(rerank), str(rerank), rerank.model_dump_json(), repr(rerank.model_dump())]
    if module == "llama_index":
        shown.append(rerank.to_json())
    else:
        from langchain_core.load import dumps

        shown.append(dumps(rerank))
    for text in shown:
        assert HEADER_SECRET not in text
    assert HEADER_SECRET.encode() not in pickle.dumps(rerank)
    # copies that change options keep the header
    for copy in (rerank.with_options(top_n=1), rerank.with_options(timeout=5)):
        copy.client.rerank("Paris", DOCS)
    assert [h["x-gateway-token"] for h in spy.headers] == [HEADER_SECRET] * 2


# -- offline runs ignore a stray TOGETHER_RERANK_MODEL_FAMILY -------------------------------
def test_offline_demo_and_cli_ignore_the_family_variable(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Offline settings are explicit: a family meant for a real endpoint (or a typo) must
    change nothing about a run against the embedded endpoint."""
    from together_rerank_plugins import cli, demo

    monkeypatch.setenv("TOGETHER_RERANK_MODEL_FAMILY", "not-a-family")
    docs = tmp_path / "docs.txt"
    docs.write_text("Berlin is in Germany.\nParis is the capital of France.\n")
    assert cli.main(["rerank", "--offline", "capital of France", str(docs)]) == 0
    assert demo.main(["--offline", "--questions", "1", "--top-n", "3"]) == 0
    capsys.readouterr()


def test_a_header_echoed_in_an_error_never_shows() -> None:
    """A gateway that quotes the token it refused: scrubbed like an echoed key."""
    import traceback

    def echo(request: httpx.Request) -> httpx.Response:
        token = request.headers.get("x-gateway-token")
        return httpx.Response(403, json={"error": {"message": f"token {token} is revoked"}})

    c = client(httpx.MockTransport(echo), default_headers={"X-Gateway-Token": HEADER_SECRET})
    with pytest.raises(trp.AuthenticationError) as info:
        c.rerank("q", DOCS)
    assert "is revoked" in str(info.value)
    shown = "".join(traceback.format_exception(info.value)) + repr(info.value.__cause__.body)
    assert HEADER_SECRET not in shown
