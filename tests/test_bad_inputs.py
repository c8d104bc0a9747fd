"""Bad and odd inputs: one test per row of docs/bad-inputs.md.

Each row gets the right output or a typed error that names the fix, through the core and the
adapters it concerns; never a raw ``KeyError``/``TypeError``/``IndexError``/``AttributeError``
from inside the package (``pytest.raises`` with the typed error lets any other exception fail
the row). In-process transports only: no socket is opened.

A row whose behaviour is not built yet can be marked ``pending=...`` (a strict xfail); the doc
then marks it with †. None is pending now.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import together_rerank_plugins as trp
from together_rerank_plugins import RerankClient
from together_rerank_plugins.testing import LexicalRerankEndpoint, lexical_scores

from .conftest import TEST_KEY

DOC = Path(__file__).resolve().parent.parent / "docs" / "bad-inputs.md"
DOCS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "The Loire flows through France.",
    "Madrid is in Spain.",
]


# -- plumbing -----------------------------------------------------------------------------
Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that remembers each request body."""

    def __init__(self, reply: Handler) -> None:
        self.reply = reply
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.read()))
        return self.reply(request)

    @property
    def sent(self) -> list[Any]:
        """Every document sent, over all requests."""
        return [d for body in self.bodies for d in body["documents"]]


def lexical(max_documents: int | None = None) -> Recorder:
    """The embedded endpoint; with ``max_documents``, a 400 above that many (like Llama-Rank's
    1,024-document cap)."""
    endpoint = LexicalRerankEndpoint()

    def reply(request: httpx.Request) -> httpx.Response:
        docs = json.loads(request.content).get("documents", [])
        if max_documents is not None and len(docs) > max_documents:
            return httpx.Response(
                400, json={"error": {"message": f"at most {max_documents} documents"}}
            )
        return endpoint.handle(request)

    return Recorder(reply)


def raw_reply(content: bytes, status: int = 200) -> Recorder:
    return Recorder(lambda request: httpx.Response(status, content=content))


def scores_reply(*pairs: tuple[int, float]) -> Recorder:
    results = [{"index": i, "relevance_score": s} for i, s in pairs]
    return Recorder(lambda request: httpx.Response(200, json={"results": results}))


def _settings(rec: Handler | None, kw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"api_key": TEST_KEY, "max_retries": 0}
    if rec is not None:
        out["transport"] = httpx.MockTransport(rec)
    return out | kw


def core(rec: Handler | None = None, **kw: Any) -> RerankClient:
    return RerankClient(**_settings(rec, kw))


def li(rec: Handler | None = None, **kw: Any) -> Any:
    from together_rerank_plugins.llama_index import TogetherRerank

    return TogetherRerank(**_settings(rec, {"top_n": None} | kw))


def lc(rec: Handler | None = None, **kw: Any) -> Any:
    from together_rerank_plugins.langchain import TogetherRerank

    return TogetherRerank(**_settings(rec, {"top_n": None} | kw))


def nodes(texts: list[str]) -> list[Any]:
    from llama_index.core.schema import NodeWithScore, TextNode

    return [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=0.5) for i, t in enumerate(texts)
    ]


def documents(texts: list[str]) -> list[Any]:
    from langchain_core.documents import Document

    return [Document(t, id=f"d{i}") for i, t in enumerate(texts)]


def node_ids(out: list[Any]) -> list[str]:
    return [n.node.node_id for n in out]


def doc_ids(out: list[Any]) -> list[str]:
    return [d.id for d in out]


def ranked(results: list[Any]) -> list[tuple[int, float]]:
    return [(r.index, r.relevance_score) for r in results]


def expected(query: str, docs: list[str], top_n: int | None = None) -> list[tuple[int, float]]:
    scores = lexical_scores(query, docs)
    order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))[:top_n]
    return [(i, scores[i]) for i in order]


def refuses(call: Callable[[], Any], match: str, cls: type[trp.RerankError]) -> None:
    """``call`` raises ``cls`` (a ValueError for config/input errors) matching ``match``."""
    with pytest.raises(cls, match=match) as info:
        call()
    if cls in (trp.RerankInputError, trp.RerankConfigError):
        assert isinstance(info.value, ValueError)


def input_error(call: Callable[[], Any], match: str) -> None:
    refuses(call, match, trp.RerankInputError)


def config_error(call: Callable[[], Any], match: str) -> None:
    refuses(call, match, trp.RerankConfigError)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- the rows -----------------------------------------------------------------------------
ROWS: list[Any] = []
Check = Callable[[pytest.MonkeyPatch], None]


def row(row_id: str, *, pending: str | None = None) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        marks = [pytest.mark.xfail(strict=True, reason=f"pending: {pending}")] if pending else []
        ROWS.append(pytest.param(check, id=row_id, marks=marks))
        return check

    return register


@row("empty-query")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    input_error(lambda: core(rec).rerank("", DOCS), "empty")
    input_error(lambda: run(core(rec).arerank("", DOCS)), "empty")
    input_error(lambda: li(rec).postprocess_nodes(nodes(DOCS), query_str=""), "empty")
    input_error(lambda: lc(rec).compress_documents(documents(DOCS), ""), "empty")
    assert rec.bodies == []


@row("whitespace-query")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    input_error(lambda: core(rec).rerank(" \n\t ", DOCS), "whitespace")
    input_error(lambda: li(rec).postprocess_nodes(nodes(DOCS), query_str="  "), "whitespace")
    input_error(lambda: run(lc(rec).acompress_documents(documents(DOCS), "\n")), "whitespace")
    assert rec.bodies == []


@row("none-query")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    input_error(lambda: core(rec).rerank(None, DOCS), "query")  # type: ignore[arg-type]
    input_error(lambda: li(rec).postprocess_nodes(nodes(DOCS)), "query_str")
    input_error(lambda: run(li(rec).apostprocess_nodes(nodes(DOCS))), "query_str")
    input_error(lambda: lc(rec).compress_documents(documents(DOCS), None), "query")
    assert rec.bodies == []


@row("non-string-query")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    input_error(lambda: core(rec).rerank(42, DOCS), "string")  # type: ignore[arg-type]
    input_error(lambda: core(rec).rerank(b"capital", DOCS), "string")  # type: ignore[arg-type]
    input_error(lambda: lc(rec).compress_documents(documents(DOCS), ["q"]), "string")
    assert rec.bodies == []


@row("no-candidates")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    assert core(rec).rerank("capital", []) == []
    assert run(core(rec).arerank("capital", [])) == []
    assert li(rec).postprocess_nodes([], query_str="capital") == []
    assert run(li(rec).apostprocess_nodes([], query_str="capital")) == []
    assert lc(rec).compress_documents([], "capital") == []
    assert run(lc(rec).acompress_documents([], "capital")) == []
    assert rec.bodies == []


@row("one-candidate")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    query, docs = "capital of France", DOCS[:1]
    assert ranked(core(rec).rerank(query, docs)) == expected(query, docs)
    [node] = li(rec, top_n=5).postprocess_nodes(nodes(docs), query_str=query)
    assert (node.node.node_id, node.score) == ("n0", expected(query, docs)[0][1])
    [doc] = lc(rec, top_n=5).compress_documents(documents(docs), query)
    assert (doc.id, doc.metadata["relevance_score"]) == ("d0", expected(query, docs)[0][1])
    assert len(rec.bodies) == 3  # a lone candidate is still scored (score_threshold needs it)


@row("empty-text-candidates")
def _(mp: pytest.MonkeyPatch) -> None:
    query = "capital of France"
    texts = [DOCS[0], "", DOCS[1], "  \n\t "]
    rec = lexical()
    results = core(rec).rerank(query, texts)
    assert rec.sent == [DOCS[0], DOCS[1]]  # nothing to score: not sent
    assert [r.index for r in results] == [0, 2, 1, 3]  # after every scored one, input order
    assert [r.relevance_score for r in results[2:]] == [0.0, 0.0]
    assert [r.index for r in core(rec).rerank(query, texts, top_n=2)] == [0, 2]
    assert node_ids(li(rec).postprocess_nodes(nodes(texts), query_str=query)) == [
        "n0",
        "n2",
        "n1",
        "n3",
    ]
    assert doc_ids(lc(rec).compress_documents(documents(texts), query)) == ["d0", "d2", "d1", "d3"]
    only_empty = lexical()
    assert ranked(core(only_empty).rerank(query, ["", " "])) == [(0, 0.0), (1, 0.0)]
    assert only_empty.bodies == []  # no request at all


@row("image-node-without-text")
def _(mp: pytest.MonkeyPatch) -> None:
    from llama_index.core.schema import ImageNode, NodeWithScore, TextNode

    rec = lexical()
    image = ImageNode(image="aGVsbG8=", id_="img")  # base64 image, no text, no metadata
    given = [
        NodeWithScore(node=TextNode(text=DOCS[0], id_="n0"), score=0.9),
        NodeWithScore(node=image, score=0.8),
        NodeWithScore(node=TextNode(text=DOCS[1], id_="n1"), score=0.7),
    ]
    out = li(rec).postprocess_nodes(given, query_str="capital of France")
    assert rec.sent == [DOCS[0], DOCS[1]]
    assert node_ids(out) == ["n0", "n1", "img"]
    assert isinstance(out[2].node, ImageNode)
    assert out[2].node.image == "aGVsbG8="
    assert out[2].score == 0.0


@row("non-string-page-content")
def _(mp: pytest.MonkeyPatch) -> None:
    from langchain_core.documents import Document

    rec = lexical()
    for content in (None, b"bytes", 42):
        docs = [Document(DOCS[0]), Document.model_construct(page_content=content, metadata={})]
        input_error(lambda d=docs: lc(rec).compress_documents(d, "capital"), r"documents\[1\]")
        input_error(
            lambda d=docs: run(lc(rec).acompress_documents(d, "capital")), r"documents\[1\]"
        )
    assert rec.bodies == []


@row("non-string-candidate")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    for bad in (3, None, b"bytes", ["a", "list"]):
        input_error(lambda b=bad: core(rec).rerank("q", ["text", b]), r"documents\[1\]")
    assert rec.bodies == []


@row("mixed-strings-and-mappings")
def _(mp: pytest.MonkeyPatch) -> None:
    from langchain_core.documents import Document

    rec = lexical()
    input_error(lambda: core(rec).rerank("q", ["text", {"text": "b"}]), "mixes")
    input_error(lambda: lc(rec).rerank([Document("a"), {"text": "b"}], "q"), "mixes")
    assert rec.bodies == []


@row("mapping-without-rank-fields")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    docs = [{"title": "Hg", "text": "liquid metal"}, {"text": "no title here"}]
    input_error(
        lambda: core(rec).rerank("metal", docs, rank_fields=["title", "text"]),
        r"documents\[1\].*title",
    )
    input_error(
        lambda: lc(rec).rerank(docs, "metal", rank_fields=["title", "text"]),
        r"documents\[1\].*title",
    )
    assert rec.bodies == []


@row("duplicated-candidates")
def _(mp: pytest.MonkeyPatch) -> None:
    query = "capital of France"
    texts = [DOCS[0], DOCS[1], DOCS[0], DOCS[1], DOCS[0]]
    rec = lexical()
    assert [r.index for r in core(rec).rerank(query, texts)] == [0, 1]
    assert node_ids(li(rec).postprocess_nodes(nodes(texts), query_str=query)) == ["n0", "n1"]
    assert doc_ids(lc(rec).compress_documents(documents(texts), query)) == ["d0", "d1"]
    assert rec.sent == [DOCS[0], DOCS[1]] * 3  # three calls, each text once per call


@row("10000-candidates")
def _(mp: pytest.MonkeyPatch) -> None:
    needles = (17, 4242, 9999)
    texts = [f"filler passage number {i} about nothing" for i in range(10_000)]
    for i in needles:
        texts[i] = f"the needle is in passage {i}"
    rec = lexical(max_documents=1024)
    results = core(rec).rerank("needle", texts, top_n=3)
    assert ranked(results) == [(i, 1.0) for i in needles]
    assert max(len(body["documents"]) for body in rec.bodies) <= 1024
    assert sorted(rec.sent) == sorted(texts)  # each candidate sent exactly once


@row("1mb-document")
def _(mp: pytest.MonkeyPatch) -> None:
    half = "the cat sat on the mat and the dog ran to the park " * 10_000  # ~0.5 MB
    big = f"{half}zanzibarite {half}"
    assert len(big) > 1_000_000
    rec = lexical()
    results = core(rec).rerank("zanzibarite", ["a short note about dogs", big])
    assert ranked(results) == [(1, 1.0), (0, 0.0)]  # one result per document
    # never sent whole: every piece fits Llama-Rank's 8,192 tokens (~3.7 chars per token here)
    assert max(len(d) for d in rec.sent) <= 40_000


@row("control-chars-and-emoji")
def _(mp: pytest.MonkeyPatch) -> None:
    texts = [
        "Café ☕ au lait 🚀👍🏽 near Tōkyō",
        "NUL\x00 bell\x07 escape\x1b[31m red\x1b[0m form\x0cfeed",
        "עברית \u202ereversed\u202c and zero\u200bwidth",
        "東京は日本の首都です 東京",
        "plain ascii",
    ]
    query = "café 🚀 東京"
    rec = lexical()
    assert ranked(core(rec).rerank(query, texts)) == expected(query, texts)
    assert rec.bodies[0]["documents"] == texts
    assert rec.bodies[0]["query"] == query
    out = lc(rec).compress_documents(documents(texts), query)
    assert [d.page_content for d in out] == [texts[i] for i, _ in expected(query, texts)]


@row("lone-surrogate")
def _(mp: pytest.MonkeyPatch) -> None:
    bad = b"caf\xe9 in Paris".decode("utf-8", "surrogateescape")  # Latin-1 read as UTF-8
    texts = [bad, DOCS[1]]
    rec = lexical()
    assert [r.index for r in core(rec).rerank("Paris", texts)] == [0, 1]
    assert rec.sent[0] == "caf\ufffd in Paris"
    [best, _] = lc(rec).compress_documents(documents(texts), "Paris")
    assert best.page_content == bad  # the caller's text comes back as it was


@row("top-n-zero")
def _(mp: pytest.MonkeyPatch) -> None:
    config_error(lambda: li(top_n=0), "top_n")
    config_error(lambda: lc(top_n=0), "top_n")
    input_error(lambda: core(lexical()).rerank("q", DOCS, top_n=0), "top_n")


@row("top-n-negative")
def _(mp: pytest.MonkeyPatch) -> None:
    config_error(lambda: li(top_n=-2), "top_n")
    config_error(lambda: lc(top_n=-2), "top_n")
    input_error(lambda: core(lexical()).rerank("q", DOCS, top_n=-2), "top_n")
    input_error(lambda: lc(lexical()).rerank(DOCS, "q", top_n=-2), "top_n")


@row("top-n-not-an-int")
def _(mp: pytest.MonkeyPatch) -> None:
    config_error(lambda: li(top_n=2.5), "top_n")
    config_error(lambda: lc(top_n="three"), "top_n")
    for bad in (2.5, "3", True):
        input_error(lambda b=bad: core(lexical()).rerank("q", DOCS, top_n=b), "top_n")


@row("top-n-larger-than-candidates")
def _(mp: pytest.MonkeyPatch) -> None:
    query = "capital of France"
    rec = lexical()
    assert ranked(core(rec).rerank(query, DOCS, top_n=50)) == expected(query, DOCS)
    assert len(li(rec, top_n=50).postprocess_nodes(nodes(DOCS), query_str=query)) == 4
    assert len(lc(rec, top_n=50).compress_documents(documents(DOCS), query)) == 4
    assert all("top_n" not in body for body in rec.bodies)  # every candidate asked for anyway


@row("score-threshold-above-every-score")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    assert core(rec).rerank("capital", DOCS, score_threshold=1.5) == []
    assert li(rec, score_threshold=1.5).postprocess_nodes(nodes(DOCS), query_str="capital") == []
    assert lc(rec, score_threshold=1.5).compress_documents(documents(DOCS), "capital") == []
    assert len(rec.bodies) == 3  # scored, then nothing passed the threshold


@row("nan-score-from-server")
def _(mp: pytest.MonkeyPatch) -> None:
    body = (
        b'{"results": [{"index": 0, "relevance_score": NaN}, {"index": 1, "relevance_score": 0.5}]}'
    )
    refuses(
        lambda: core(raw_reply(body)).rerank("q", DOCS[:2]), "finite", trp.MalformedResponseError
    )
    refuses(
        lambda: lc(raw_reply(body)).compress_documents(documents(DOCS[:2]), "q"),
        "finite",
        trp.MalformedResponseError,
    )


@row("oversized-number-from-server")
def _(mp: pytest.MonkeyPatch) -> None:
    for field in ("relevance_score", "index"):
        other = "index" if field == "relevance_score" else "relevance_score"
        body = b'{"results": [{"%s": %s, "%s": 0}]}' % (
            field.encode(),
            b"9" * 400,
            other.encode(),
        )
        refuses(
            lambda b=body: core(raw_reply(b)).rerank("q", DOCS[:1]),
            "digits",
            trp.MalformedResponseError,
        )
    huge = raw_reply(b'{"results": [{"index": 0, "relevance_score": 1%s}]}' % (b"0" * 400))
    assert run(core(huge, on_error="fallback").arerank("q", DOCS[:1])).fallback


@row("deeply-nested-answer")
def _(mp: pytest.MonkeyPatch) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    refuses(
        lambda: core(raw_reply(body)).rerank("q", DOCS[:1]), "nested", trp.MalformedResponseError
    )
    refuses(
        lambda: lc(raw_reply(body)).compress_documents(documents(DOCS[:1]), "q"),
        "nested",
        trp.MalformedResponseError,
    )


@row("key-echoed-in-answer")
def _(mp: pytest.MonkeyPatch) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        score = json.dumps(request.headers["authorization"])
        return httpx.Response(
            200, content=b'{"results": [{"index": 0, "relevance_score": %s}]}' % score.encode()
        )

    with pytest.raises(trp.MalformedResponseError) as info:
        core(echo).rerank("q", DOCS[:1])
    assert TEST_KEY not in str(info.value)
    assert "a string of" in str(info.value)


@row("infinite-score-from-server")
def _(mp: pytest.MonkeyPatch) -> None:
    for token in (b"Infinity", b"-Infinity", b"1e999"):
        body = b'{"results": [{"index": 0, "relevance_score": ' + token + b"}]}"
        refuses(
            lambda b=body: core(raw_reply(b)).rerank("q", DOCS[:1]),
            "finite",
            trp.MalformedResponseError,
        )
        refuses(
            lambda b=body: li(raw_reply(b)).postprocess_nodes(nodes(DOCS[:1]), query_str="q"),
            "finite",
            trp.MalformedResponseError,
        )


@row("fewer-results-than-asked")
def _(mp: pytest.MonkeyPatch) -> None:
    two = scores_reply((0, 0.9), (2, 0.1))
    refuses(lambda: core(two).rerank("q", DOCS), "results", trp.MalformedResponseError)
    refuses(lambda: core(two).rerank("q", DOCS, top_n=3), "results", trp.MalformedResponseError)
    refuses(
        lambda: lc(two).compress_documents(documents(DOCS), "q"),
        "results",
        trp.MalformedResponseError,
    )
    refuses(lambda: core(scores_reply()).rerank("q", DOCS), "results", trp.MalformedResponseError)


@row("more-results-than-asked")
def _(mp: pytest.MonkeyPatch) -> None:
    everything = scores_reply((0, 0.2), (1, 0.9), (2, 0.5), (3, 0.1))  # top_n ignored
    assert ranked(core(everything).rerank("q", DOCS, top_n=2)) == [(1, 0.9), (2, 0.5)]
    assert doc_ids(lc(everything, top_n=1).compress_documents(documents(DOCS), "q")) == ["d1"]


@row("html-instead-of-json")
def _(mp: pytest.MonkeyPatch) -> None:
    page = raw_reply(b"<html><body>Welcome to nginx!</body></html>")
    refuses(lambda: core(page).rerank("q", DOCS), "JSON", trp.MalformedResponseError)
    refuses(
        lambda: li(page).postprocess_nodes(nodes(DOCS), query_str="q"),
        "JSON",
        trp.MalformedResponseError,
    )


@row("bad-base-url")
def _(mp: pytest.MonkeyPatch) -> None:
    for url in ("api.together.ai", "ftp://api.together.ai", "http://", "https://x.ai/v1?key=1"):
        config_error(lambda u=url: core(base_url=u), "base_url")
        config_error(lambda u=url: li(base_url=u), "base_url")
        config_error(lambda u=url: lc(base_url=u), "base_url")


@row("bad-base-url-from-env")
def _(mp: pytest.MonkeyPatch) -> None:
    mp.setenv("TOGETHER_BASE_URL", "localhost:8000")
    config_error(lambda: core(), "TOGETHER_BASE_URL")
    config_error(lambda: li(), "TOGETHER_BASE_URL")
    config_error(lambda: lc(), "TOGETHER_BASE_URL")


@row("malformed-base-url")
def _(mp: pytest.MonkeyPatch) -> None:
    for url, problem in (
        ("http://h.example:99999", "port"),
        ("http://[::1:8000", r"\["),
        ("http://user:pa/ss-1234@h.example", "percent-encode"),
    ):
        for make in (core, li, lc):
            with pytest.raises(trp.RerankConfigError, match=problem) as info:
                make(base_url=url)
            assert "pa/ss" not in str(info.value)
            assert "ss-1234" not in str(info.value)


@row("unreachable-base-url")
def _(mp: pytest.MonkeyPatch) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    url = "http://10.255.255.1:9"
    refuses(
        lambda: core(refused, base_url=url).rerank("q", DOCS), "base_url", trp.RerankConnectionError
    )
    refuses(
        lambda: run(lc(refused, base_url=url).acompress_documents(documents(DOCS), "q")),
        "base_url",
        trp.RerankConnectionError,
    )


@row("empty-api-key")
def _(mp: pytest.MonkeyPatch) -> None:
    for key in ("", "   "):
        for make in (core, li, lc):
            config_error(lambda m=make, k=key: m(api_key=k), "empty.*TOGETHER_API_KEY")


@row("empty-api-key-from-env")
def _(mp: pytest.MonkeyPatch) -> None:
    mp.setenv("TOGETHER_API_KEY", "")
    config_error(lambda: RerankClient(), "TOGETHER_API_KEY.*empty|empty.*TOGETHER_API_KEY")
    from together_rerank_plugins.langchain import TogetherRerank

    config_error(lambda: TogetherRerank(), "TOGETHER_API_KEY.*empty|empty.*TOGETHER_API_KEY")


@row("api-key-from-a-file")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    padded = core(rec, api_key=f" {TEST_KEY}\n")
    assert padded._sdk.settings.api_key == TEST_KEY
    assert padded.rerank("q", DOCS)
    for bad in ("\ufeff" + TEST_KEY, TEST_KEY + "\u00e9", TEST_KEY + "\u200b"):
        for make in (core, li, lc):
            config_error(lambda m=make, k=bad: m(api_key=k), "api_key.*position")
        mp.setenv("TOGETHER_API_KEY", bad)
        config_error(lambda: RerankClient(), "TOGETHER_API_KEY.*position")


@row("header-value-not-ascii")
def _(mp: pytest.MonkeyPatch) -> None:
    for make in (core, li, lc):
        config_error(lambda m=make: m(default_headers={"X-Token": "t\u00f6ken"}), "X-Token")
    rec = lexical()
    core(rec, default_headers={"X-Token": "token\n"}).rerank("q", DOCS)


@row("none-instead-of-candidates")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    input_error(lambda: core(rec).rerank("q", None), "list")  # type: ignore[arg-type]
    input_error(lambda: li(rec).postprocess_nodes(None, query_str="q"), "list")
    input_error(lambda: run(li(rec).apostprocess_nodes(None, query_str="q")), "list")
    input_error(lambda: lc(rec).compress_documents(None, "q"), "list")
    input_error(lambda: run(lc(rec).acompress_documents(None, "q")), "list")
    assert rec.bodies == []


@row("bare-node-instead-of-node-with-score")
def _(mp: pytest.MonkeyPatch) -> None:
    from llama_index.core.schema import TextNode

    rec = lexical()
    given = [TextNode(text=DOCS[0])]
    input_error(lambda: li(rec).postprocess_nodes(given, query_str="q"), "NodeWithScore")
    input_error(lambda: run(li(rec).apostprocess_nodes(given, query_str="q")), "NodeWithScore")
    assert rec.bodies == []


@row("string-instead-of-document")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    input_error(lambda: lc(rec).compress_documents(["plain string"], "q"), "Document")
    input_error(lambda: run(lc(rec).acompress_documents([{"text": "a"}], "q")), "Document")
    assert rec.bodies == []


@row("generator-of-candidates")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    input_error(lambda: core(rec).rerank("q", (t for t in DOCS)), "list")  # type: ignore[arg-type]
    input_error(lambda: lc(rec).compress_documents((d for d in documents(DOCS)), "q"), "list")
    input_error(lambda: lc(rec).rerank((t for t in DOCS), "q"), "list")
    assert rec.bodies == []


@row("non-string-mapping-key")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    for doc in ({1: "a", "b": "c"}, {1: "a"}, {"text": {2: "x", "y": "z"}}):
        input_error(lambda d=doc: core(rec).rerank("q", [d]), "not a string")
        input_error(lambda d=doc: run(core(rec).arerank("q", [d])), "not a string")
        input_error(lambda d=doc: lc(rec).rerank([d], "q"), "not a string")
    assert rec.bodies == []


@row("lone-surrogate-in-mapping")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    key_doc = {"te\ud800xt": "Paris"}
    tuple_doc = {"text": ("Paris\ud800",)}
    assert ranked(core(rec).rerank("Paris", [key_doc])) == [(0, 1.0)]
    assert rec.sent[-1] == {"te\ufffdxt": "Paris"}
    assert [r.index for r in run(core(rec).arerank("Paris", [tuple_doc]))] == [0]
    assert rec.sent[-1] == {"text": ["Paris\ufffd"]}
    assert key_doc == {"te\ud800xt": "Paris"}  # the caller's document is unchanged
    # two keys that become one once cleaned: refused, never merged
    twins = dict([("a\ud800", 1), ("a\udc00", 2)])
    input_error(lambda: core(rec).rerank("q", [twins]), "rename one")


@row("lone-surrogate-in-rank-fields")
def _(mp: pytest.MonkeyPatch) -> None:
    rec = lexical()
    # cleaned as the keys are, so they still name the same field
    docs = [{"t\ud800": "Paris", "text": "x"}, {"t\ud800": "Rome", "text": "y"}]
    for results in (
        core(rec).rerank("Paris", docs, rank_fields=["t\ud800"]),
        run(core(rec).arerank("Paris", docs, rank_fields=["t\ud800"])),
    ):
        assert [r.index for r in results] == [0, 1]
        assert rec.bodies[-1]["rank_fields"] == ["t\ufffd"]
    sent = len(rec.bodies)
    input_error(
        lambda: core(rec).rerank("q", [{"text": "a"}], rank_fields=["t\ud800"]), "rank_fields"
    )
    assert len(rec.bodies) == sent


# -- the tests ----------------------------------------------------------------------------
@pytest.mark.parametrize("check", ROWS)
def test_bad_input(check: Check, monkeypatch: pytest.MonkeyPatch) -> None:
    check(monkeypatch)


def test_the_doc_table_lists_every_row_and_marks_the_pending_ones() -> None:
    table = re.findall(r"^\| `([a-z0-9-]+)`( †)? \|", DOC.read_text(encoding="utf-8"), re.M)
    in_doc = {row_id: bool(dagger) for row_id, dagger in table}
    in_tests = {p.id: bool(p.marks) for p in ROWS}
    assert len(table) == len(in_doc), "a row id appears twice in the doc"
    assert in_doc == in_tests
    assert len(in_tests) >= 20
