"""Wire-format tests: the real SDK, HTTP bodies and responses replayed from cassettes.

Two targets (see cassettes/README.md for where the recordings come from):

- ``loopback``: cassettes in ``cassettes/loopback/``, recorded with
  ``pytest tests/test_cassettes.py --record-mode=rewrite -m "not live"`` against the embedded
  lexical endpoint served on 127.0.0.1:8765. Replayed with ``--block-network`` on every run.
  **These are not Together's answers**: the scores are the test double's word overlap.
- ``live`` (marker ``live``): the same checks against a real endpoint. Skipped unless
  TOGETHER_API_KEY is set; record with
  ``TOGETHER_API_KEY=... TOGETHER_RERANK_MODEL=<endpoint model> pytest -m live
  tests/test_cassettes.py --record-mode=rewrite`` (cassettes go to ``cassettes/live/``).
  For a Dedicated Model Inference endpoint also set
  ``TOGETHER_BASE_URL=https://api-inference.together.ai/v1`` and
  ``TOGETHER_RERANK_MODEL_FAMILY`` (see cassettes/README.md for the one command).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import together_rerank_plugins as trp
from together_rerank_plugins import DEFAULT_MODEL, RerankClient
from together_rerank_plugins.testing import LexicalRerankEndpoint, lexical_scores, serve_loopback

from .conftest import LIVE_ENV

CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"
LOOPBACK_PORT = 8765
LOOPBACK_URL = f"http://127.0.0.1:{LOOPBACK_PORT}"
RECORDING_KEY = "recorded-with-a-placeholder-key"  # the loopback server accepts any key

QUERY = "Which city is the capital of France?"
DOCS = [
    "Berlin is the capital and largest city of Germany.",
    "Paris is the capital and most populous city of France.",
    "Lyon is a major city in France, known for its cuisine.",
    "The Eiffel Tower was completed in 1889.",
    "Madrid is the capital of Spain.",
]
RELEVANT = 1  # the document any reranker must put first


@pytest.fixture(params=["loopback", pytest.param("live", marks=pytest.mark.live)])
def target(request: pytest.FixtureRequest, record_mode: str) -> Iterator[dict[str, Any]]:
    if request.param == "live":
        if not LIVE_ENV.get("TOGETHER_API_KEY"):
            pytest.skip("live: set TOGETHER_API_KEY (and TOGETHER_RERANK_MODEL) to run")
        yield {
            "name": "live",
            "api_key": LIVE_ENV["TOGETHER_API_KEY"],
            "model": LIVE_ENV.get("TOGETHER_RERANK_MODEL"),
            "base_url": LIVE_ENV.get("TOGETHER_BASE_URL"),
            "model_family": LIVE_ENV.get("TOGETHER_RERANK_MODEL_FAMILY"),
        }
        return
    # Recording needs the loopback server; replay (record mode "none") must not.
    server = (
        serve_loopback(LexicalRerankEndpoint(models=[DEFAULT_MODEL]), port=LOOPBACK_PORT)
        if record_mode != "none"
        else contextlib.nullcontext(LOOPBACK_URL)
    )
    with server:
        yield {
            "name": "loopback",
            "api_key": RECORDING_KEY,
            "model": None,
            "base_url": LOOPBACK_URL,
            "model_family": None,
        }


@pytest.fixture
def vcr_cassette_dir(target: dict[str, Any]) -> str:
    return str(CASSETTES / target["name"])


# Bearer values seen by the recorder: a server may echo the key in an error body, so every
# key sent is also scrubbed from the recorded responses.
_SEEN_KEYS: set[str] = set()


def scrub_recorded_request(request: Any) -> Any:
    """Replace the Authorization header by DUMMY, remembering the key to scrub answers."""
    for name in list(request.headers):
        if name.lower() == "authorization":
            key = str(request.headers[name]).split(" ", 1)[-1]
            if len(key) >= 6 and key != "DUMMY":
                _SEEN_KEYS.add(key)
            request.headers[name] = "DUMMY"
    return request


def scrub_recorded_response(response: dict[str, Any]) -> dict[str, Any]:
    """Never write a key to a cassette, even one the server echoed in its body."""
    keys = {k for k in (LIVE_ENV.get("TOGETHER_API_KEY"), RECORDING_KEY) if k} | _SEEN_KEYS
    body = response.get("body", {}).get("string")
    for key in keys:
        if isinstance(body, bytes):
            body = body.replace(key.encode(), b"REDACTED")
        elif isinstance(body, str):
            body = body.replace(key, "REDACTED")
    if body is not None:
        response["body"]["string"] = body
    return response


@pytest.fixture
def vcr_config() -> dict[str, Any]:
    return {
        "before_record_request": scrub_recorded_request,
        "before_record_response": scrub_recorded_response,
        "match_on": ["method", "uri", "body"],
        "decode_compressed_response": True,
    }


def settings(target: dict[str, Any]) -> dict[str, Any]:
    keys = ("api_key", "model", "base_url", "model_family")
    return {k: target[k] for k in keys} | {"max_retries": 0}


def check_ranking(target: dict[str, Any], indices: list[int], scores: list[float]) -> None:
    assert indices[0] == RELEVANT
    assert scores == sorted(scores, reverse=True)
    if target["name"] == "loopback":  # the recorded double's scores are reproducible
        expected = lexical_scores(QUERY, DOCS)
        assert scores == [expected[i] for i in indices]


@pytest.mark.vcr
def test_core_sync(target: dict[str, Any]) -> None:
    results = RerankClient(**settings(target)).rerank(QUERY, DOCS, top_n=3)
    assert len(results) == 3
    check_ranking(target, [r.index for r in results], [r.relevance_score for r in results])


@pytest.mark.vcr
async def test_core_async(target: dict[str, Any]) -> None:
    client = RerankClient(**settings(target))
    results = await client.arerank(QUERY, DOCS)
    assert sorted(r.index for r in results) == list(range(len(DOCS)))
    check_ranking(target, [r.index for r in results], [r.relevance_score for r in results])
    await client.aclose()


@pytest.mark.vcr
def test_core_mapping_documents_with_rank_fields(target: dict[str, Any]) -> None:
    docs = [{"title": f"Doc {i}", "text": t} for i, t in enumerate(DOCS)]
    client = RerankClient(**settings(target))
    if client.model_family == "mxbai":
        pytest.skip("object documents with rank_fields are documented for Llama-Rank only")
    results = client.rerank(QUERY, docs, top_n=2, rank_fields=["title", "text"])
    assert results[0].index == RELEVANT
    assert len(results) == 2


@pytest.mark.vcr
def test_unknown_model_is_endpoint_not_found(target: dict[str, Any]) -> None:
    client = RerankClient(**(settings(target) | {"model": "no-such/rerank-endpoint"}))
    with pytest.raises(trp.EndpointNotFoundError, match="dedicated endpoints"):
        client.rerank(QUERY, DOCS)


@pytest.mark.vcr
async def test_llama_index_adapter(target: dict[str, Any]) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode

    from together_rerank_plugins.llama_index import TogetherRerank

    nodes = [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=1.0 - i / 10)
        for i, t in enumerate(DOCS)
    ]
    rerank = TogetherRerank(top_n=2, **settings(target))
    sync = rerank.postprocess_nodes(nodes, query_str=QUERY)
    async_ = await rerank.apostprocess_nodes(nodes, query_str=QUERY)
    for out in (sync, async_):
        assert out[0].node.node_id == f"n{RELEVANT}"
        check_ranking(target, [int(n.node.node_id[1:]) for n in out], [n.score or 0 for n in out])


@pytest.mark.vcr
async def test_langchain_adapter(target: dict[str, Any]) -> None:
    from langchain_core.documents import Document

    from together_rerank_plugins.langchain import TogetherRerank

    docs = [Document(t, id=f"d{i}", metadata={"n": i}) for i, t in enumerate(DOCS)]
    rerank = TogetherRerank(top_n=2, **settings(target))
    sync = rerank.compress_documents(docs, QUERY)
    async_ = await rerank.acompress_documents(docs, QUERY)
    for out in (sync, async_):
        assert out[0].id == f"d{RELEVANT}"
        check_ranking(
            target, [d.metadata["n"] for d in out], [d.metadata["relevance_score"] for d in out]
        )
