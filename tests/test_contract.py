"""A contract test of the wire: every request body the client can produce, every
documented answer and every cassette, checked with ``jsonschema`` against the schemas in
``tests/contract/``.

The schemas are **ours**, written from Together's published description of
``POST /v1/rerank`` (see each file's ``$comment``); nothing here was checked against the
live service. The request schema has ``additionalProperties: false``, as Together's does,
so a field the user did not ask for fails the test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

import together_rerank_plugins as trp
from together_rerank_plugins import RerankClient
from together_rerank_plugins.testing import LexicalRerankEndpoint, pointwise_lexical_scores

from .conftest import TEST_KEY

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = Path(__file__).resolve().parent / "contract"
DOCUMENTED_REQUEST_FIELDS = {
    "model",
    "query",
    "documents",
    "top_n",
    "return_documents",
    "rank_fields",
}


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((CONTRACT / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


REQUEST = validator("rerank_request")
RESPONSE = validator("rerank_response")
ERROR = validator("error_response")


def problems(v: jsonschema.protocols.Validator, body: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in v.iter_errors(body)]


class Wire(LexicalRerankEndpoint):
    """The lexical endpoint, recording every body it receives (even ones it rejects)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(scorer=pointwise_lexical_scores, **kw)
        self.bodies: list[Any] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.read()))
        return super().handle(request)


def core(wire: Wire, **kw: Any) -> RerankClient:
    return RerankClient(**({"api_key": TEST_KEY, "max_retries": 0, "transport": wire} | kw))


LONG = "Paris is the capital of France. " + "Unrelated filler sentence here. " * 120
DOCS = ["Berlin is in Germany.", "Paris is the capital of France.", "Rome is in Italy."]
OBJECTS = [{"title": "Germany", "text": DOCS[0]}, {"title": "France", "text": DOCS[1]}]


# -- every way the client builds a request ---------------------------------------------------
def strings(w: Wire) -> None:
    core(w).rerank("capital of France", DOCS)
    core(w).rerank("capital of France", DOCS, top_n=1)


async def strings_async(w: Wire) -> None:
    c = core(w)
    await c.arerank("capital of France", DOCS, top_n=2)
    await c.aclose()


def objects_with_rank_fields(w: Wire) -> None:
    core(w).rerank("France", OBJECTS, rank_fields=["title", "text"], top_n=1)
    core(w, model="acme/rerank-prod", model_family="llama-rank").rerank(
        "France", OBJECTS, rank_fields=["title"]
    )


def objects_without_rank_fields(w: Wire) -> None:
    core(w).rerank("France", [{"text": d, "n": i, "tags": ["a"]} for i, d in enumerate(DOCS)])


def batches(w: Wire) -> None:
    core(w, max_batch_size=2).rerank("capital", DOCS * 3 + ["Madrid."], top_n=1)


async def batches_async(w: Wire) -> None:
    await core(w, max_batch_size=1, max_concurrency=3).arerank("capital", DOCS)


def chunked_long_documents(w: Wire) -> None:
    core(w, max_tokens_per_doc=120).rerank("capital of France", [LONG, DOCS[0]], top_n=1)
    docs = [{"title": "France", "text": LONG}, {"title": "Germany", "text": DOCS[0]}]
    core(w, max_tokens_per_doc=150).rerank("France", docs, rank_fields=["title", "text"])


def truncated_long_documents(w: Wire) -> None:
    core(w, max_tokens_per_doc=120, long_documents="truncate").rerank("capital", [LONG, "x"])


def cache_dedupe_and_blanks(w: Wire) -> None:
    c = core(w, cache=True)
    c.rerank("capital", DOCS[:2], top_n=1)
    c.rerank("capital", [*DOCS, DOCS[0], "  ", ""], top_n=2)  # hits, a duplicate, blanks
    core(w, dedupe=False).rerank("capital", [DOCS[0], DOCS[0], ""])


def odd_text(w: Wire) -> None:
    core(w).rerank("café ☕ \udcff", ["naïve café", "\udcff bytes", "日本語のテキスト"])


def score_method(w: Wire) -> None:
    core(w).score("capital", DOCS)


def families(w: Wire) -> None:
    core(w, model="mixedbread-ai/Mxbai-Rerank-Large-V2").rerank("capital", DOCS, top_n=2)
    core(w, model="acme/rerank-prod", model_family="mxbai").rerank("capital", [LONG])
    core(w, model="acme/rerank-prod").rerank("capital", [LONG])  # unknown: conservative


def llama_index_adapter(w: Wire) -> None:
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from together_rerank_plugins.llama_index import TogetherRerank

    nodes = [
        NodeWithScore(node=TextNode(text=t, metadata={"country": c}), score=0.5)
        for t, c in zip(DOCS, ["DE", "FR", "IT"], strict=True)
    ]
    TogetherRerank(api_key=TEST_KEY, transport=w).postprocess_nodes(nodes, query_str="France")
    TogetherRerank(
        api_key=TEST_KEY, transport=w, top_n=None, metadata_mode=MetadataMode.NONE
    ).postprocess_nodes(nodes, query_str="France")
    with_fields = TogetherRerank(api_key=TEST_KEY, transport=w, rank_fields=["country", "text"])
    with_fields.postprocess_nodes(nodes, query_str="France")
    with_fields.with_options(top_n=1, rank_fields=["text"]).postprocess_nodes(
        nodes, query_str="France"
    )


async def llama_index_async(w: Wire) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode

    from together_rerank_plugins.llama_index import TogetherRerank

    nodes = [NodeWithScore(node=TextNode(text=t)) for t in DOCS]
    await TogetherRerank(api_key=TEST_KEY, transport=w, top_n=1).apostprocess_nodes(
        nodes, query_str="France"
    )


def langchain_adapter(w: Wire) -> None:
    from langchain_core.documents import Document

    from together_rerank_plugins.langchain import TogetherCrossEncoder, TogetherRerank

    docs = [Document(t, metadata={"country": c}) for t, c in zip(DOCS, "DFI", strict=True)]
    rerank = TogetherRerank(api_key=TEST_KEY, transport=w, top_n=2)
    rerank.compress_documents(docs, "France")
    rerank.rerank(docs, "France", top_n=1, rank_fields=["country", "text"])  # per-call override
    rerank.rerank(["a string", "another"], "France", top_n=None)
    rerank.rerank([{"text": "a mapping"}], "France")
    rerank.with_options(score_threshold=0.1, top_n=1).compress_documents(docs, "France")
    TogetherCrossEncoder(api_key=TEST_KEY, transport=w).score([("France", d) for d in DOCS])


async def langchain_async(w: Wire) -> None:
    from langchain_core.documents import Document

    from together_rerank_plugins.langchain import TogetherRerank

    rerank = TogetherRerank(api_key=TEST_KEY, transport=w, top_n=1, rank_fields=["text"])
    await rerank.acompress_documents([Document(t) for t in DOCS], "France")
    await rerank.arerank([Document(t) for t in DOCS], "France", top_n=2, rank_fields=None)


SCENARIOS: list[Callable[[Wire], Any]] = [
    strings,
    strings_async,
    objects_with_rank_fields,
    objects_without_rank_fields,
    batches,
    batches_async,
    chunked_long_documents,
    truncated_long_documents,
    cache_dedupe_and_blanks,
    odd_text,
    score_method,
    families,
    llama_index_adapter,
    llama_index_async,
    langchain_adapter,
    langchain_async,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
async def test_every_request_the_client_sends_is_documented(
    scenario: Callable[[Wire], Any],
) -> None:
    wire = Wire()
    outcome = scenario(wire)
    if outcome is not None:
        await outcome
    assert wire.bodies, "the scenario sent nothing: it checks nothing"
    for i, body in enumerate(wire.bodies):
        assert problems(REQUEST, body) == [], f"request {i} breaks the contract: {body}"
    assert len(wire.requests) == len(wire.bodies)  # and the double accepted each one


def test_the_scenarios_cover_each_kind_of_request() -> None:
    """What the parametrized test above saw, together: it would be vacuous otherwise."""
    wire = Wire()
    for scenario in SCENARIOS:
        if scenario.__name__.endswith("_async"):
            continue
        scenario(wire)
    bodies = wire.bodies
    assert any(isinstance(b["documents"][0], dict) and "rank_fields" in b for b in bodies)
    assert any(isinstance(b["documents"][0], dict) and "rank_fields" not in b for b in bodies)
    assert any("top_n" in b for b in bodies)
    assert any(
        LONG not in b["documents"] and any(d in LONG for d in b["documents"]) for b in bodies
    )
    assert {b["model"] for b in bodies} >= {
        trp.DEFAULT_MODEL,
        "acme/rerank-prod",
        "mixedbread-ai/Mxbai-Rerank-Large-V2",
    }


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "query": "q", "documents": ["d"], "instruction": "x"},  # undocumented
        {"model": "m", "query": "q", "documents": ["d", {"text": "d"}]},  # mixed
        {"model": "m", "documents": ["d"]},  # no query
        {"model": "m", "query": "q", "documents": ["d"], "top_n": "3"},
        {"model": "m", "query": "q", "documents": [{"t": 1}], "rank_fields": "t"},
    ],
)
def test_the_request_schema_rejects_what_together_does_not_document(body: Any) -> None:
    assert problems(REQUEST, body)


def test_extra_body_adds_exactly_the_users_keys() -> None:
    """Outside Together's schema by definition: the documented body plus the user's keys."""
    extra = {"instruction": "Prefer official sources.", "truncate_prompt_tokens": 512}
    plain, with_extra = Wire(), Wire()
    for wire, kw in ((plain, {}), (with_extra, {"extra_body": extra})):
        core(wire, max_batch_size=2, **kw).rerank("capital", DOCS, top_n=1)
    assert len(plain.bodies) == len(with_extra.bodies) == 2

    def by_documents(bodies: list[Any]) -> list[Any]:  # batches are sent concurrently
        return sorted(bodies, key=lambda b: json.dumps(b["documents"]))

    pairs = zip(by_documents(plain.bodies), by_documents(with_extra.bodies), strict=True)
    for base, body in pairs:
        assert problems(REQUEST, base) == []
        assert set(body) - DOCUMENTED_REQUEST_FIELDS == set(extra)
        assert body == base | extra
        assert problems(REQUEST, {k: v for k, v in body.items() if k not in extra}) == []


# -- every documented answer -----------------------------------------------------------------
FULL = {
    "object": "rerank",
    "id": "rr-1",
    "model": "internal-model-name",
    "results": [
        {"index": 2, "relevance_score": 0.25, "document": {"text": DOCS[2]}},
        {"index": 1, "relevance_score": 0.9, "document": {"text": DOCS[1]}},
        {"index": 0, "relevance_score": -0.5, "document": {"text": DOCS[0]}},
    ],
    "usage": {"prompt_tokens": 30, "completion_tokens": 0, "total_tokens": 30},
}


def without(*keys: str) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in FULL.items() if k not in keys}
    if "document" in keys:
        out["results"] = [{k: v for k, v in r.items() if k != "document"} for r in FULL["results"]]
    return out


ANSWERS = {
    "full": FULL,
    "no document": without("document"),
    "no usage": without("usage"),
    "no id": without("id"),
    "no object": without("object"),
    "no model": without("model"),
    "results only": without("object", "id", "model", "usage", "document"),
    "null document text": FULL
    | {"results": [r | {"document": {"text": None}} for r in FULL["results"]]},
}


def answering(payload: Any, status: int = 200) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, json=payload))


@pytest.mark.parametrize("name", list(ANSWERS))
def test_every_documented_answer_is_accepted(name: str) -> None:
    answer = ANSWERS[name]
    assert problems(RESPONSE, answer) == []
    results = RerankClient(api_key=TEST_KEY, transport=answering(answer)).rerank("q", DOCS)
    assert [(r.index, r.relevance_score) for r in results] == [(1, 0.9), (2, 0.25), (0, -0.5)]
    expected_usage = answer.get("usage", {}).get("total_tokens")
    assert results.usage.total_tokens == expected_usage


@pytest.mark.parametrize(
    "answer",
    [
        {"object": "rerank"},
        {"results": [{"index": "1", "relevance_score": 0.5}]},
        {"results": [{"index": 1, "relevance_score": "high"}]},
        {"results": [{"index": -1, "relevance_score": 0.5}]},
        {"results": [{"relevance_score": 0.5}]},
        [{"index": 0, "relevance_score": 0.5}],
    ],
)
def test_answers_outside_the_schema_are_refused_by_the_client_too(answer: Any) -> None:
    assert problems(RESPONSE, answer)
    client = RerankClient(api_key=TEST_KEY, transport=answering(answer))
    with pytest.raises(trp.MalformedResponseError):
        client.rerank("q", DOCS)


def test_the_test_doubles_answers_and_errors_follow_the_schemas() -> None:
    wire = Wire(models=[trp.DEFAULT_MODEL])
    request = {"model": trp.DEFAULT_MODEL, "query": "q", "documents": DOCS}

    def post(body: Any, key: str = TEST_KEY) -> httpx.Response:
        auth = {"Authorization": f"Bearer {key}"}
        return wire.handle(httpx.Request("POST", "http://x/v1/rerank", json=body, headers=auth))

    objects = request | {"documents": OBJECTS, "rank_fields": ["title"]}
    for body in (request, request | {"return_documents": True, "top_n": 1}, objects):
        response = post(body)
        assert response.status_code == 200
        assert problems(RESPONSE, response.json()) == []
    for response, status in (
        (post(request | {"model": "nope/nope"}), 404),
        (post(request, key=""), 401),
        (post(request | {"documents": []}), 400),
    ):
        assert response.status_code == status
        assert problems(ERROR, response.json()) == []


# -- every cassette --------------------------------------------------------------------------
CASSETTES = sorted((ROOT / "cassettes").rglob("*.yaml"))


def test_there_are_cassettes_to_check() -> None:
    assert len(CASSETTES) >= 6


@pytest.mark.parametrize("path", CASSETTES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_cassettes_follow_the_contract(path: Path) -> None:
    interactions = yaml.safe_load(path.read_text())["interactions"]
    assert interactions
    for i, item in enumerate(interactions):
        request = json.loads(item["request"]["body"])
        assert problems(REQUEST, request) == [], f"{path.name} request {i}"
        status = item["response"]["status"]["code"]
        answer = json.loads(item["response"]["body"]["string"])
        schema = RESPONSE if status == 200 else ERROR
        assert problems(schema, answer) == [], f"{path.name} response {i} ({status})"
