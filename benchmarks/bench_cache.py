"""Cache and dedupe: what is not sent. Counted, not timed.

The server counts the documents it receives and the tokens it bills (``usage``); the
client's :class:`RerankResults` counts ``documents_sent``, ``cache_hits`` and
``duplicates``. Both must agree.

- A repeated query with ``cache=True`` sends 0 documents (core sync, LlamaIndex async,
  LangChain sync and async).
- A candidate list of 100 where 30 repeat earlier ones (a hybrid retriever returning the same
  passage twice) sends 70 documents, against 100 for the bare SDK.
- An overlapping list (the next page of a conversation: 15 of 20 candidates seen before)
  sends only the 5 new ones (information).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from _harness import API_KEY, MODEL, BenchServer, Corpus, Row

PROFILE = "count"
DOCS = 20
DUP_TOTAL, DUP_REPEATS = 100, 30


def profiles() -> dict[str, tuple[float, int]]:
    return {PROFILE: (0.0, 1024)}


def run(server: BenchServer) -> list[Row]:
    import together
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from together_rerank_plugins import RerankClient
    from together_rerank_plugins.langchain import TogetherRerank as LCRerank
    from together_rerank_plugins.llama_index import TogetherRerank as LIRerank

    base_url = server.url(PROFILE)
    corpus = Corpus(seed=30)
    common: dict[str, Any] = {"api_key": API_KEY, "base_url": base_url}

    def served(fn: Any) -> tuple[Any, dict[str, int]]:
        server.reset(PROFILE)
        out = fn()
        return out, server.stats(PROFILE)

    rows: list[Row] = []

    # -- a repeated query, cache=True ------------------------------------------------------
    texts = corpus.passages(DOCS)
    query = corpus.query()
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in texts]
    docs = [Document(page_content=t) for t in texts]
    core = RerankClient(cache=True, **common)
    li = LIRerank(cache=True, top_n=5, **common)
    lc = LCRerank(cache=True, top_n=5, **common)
    lc_async = LCRerank(cache=True, top_n=5, **common)
    cases = {
        "core RerankClient.rerank": lambda: core.rerank(query, texts, top_n=5),
        "LlamaIndex apostprocess_nodes": lambda: asyncio.run(
            li.apostprocess_nodes(nodes, query_str=query)
        ),
        "LangChain compress_documents": lambda: lc.compress_documents(docs, query),
        "LangChain acompress_documents": lambda: asyncio.run(
            lc_async.acompress_documents(docs, query)
        ),
    }
    for label, call in cases.items():
        first, s1 = served(call)
        second, s2 = served(call)
        same = [_key(x) for x in first] == [_key(x) for x in second]
        client_note = ""
        if hasattr(second, "documents_sent"):
            client_note = (
                f"; RerankResults: documents_sent={second.documents_sent}, "
                f"requests={second.requests}, cache_hits={second.cache_hits}"
            )
        rows.append(
            Row(
                f"cache: repeated query, {label}",
                f"{s2['documents']} docs sent ({s2['requests']} requests)",
                f"first call {s1['documents']} docs, {s1['tokens']} tokens",
                f"{s2['documents'] / s1['documents']:.2f}",
                "0 documents",
                s2["documents"] == 0 and same and s1["documents"] == DOCS,
                [
                    f"saved {s1['documents']} documents and {s1['tokens'] - s2['tokens']} tokens "
                    f"on the repeat; same ranking: {same}{client_note}"
                ],
            )
        )
    core.close()

    # -- 30% duplicates --------------------------------------------------------------------
    unique = corpus.passages(DUP_TOTAL - DUP_REPEATS)
    rng = random.Random(3)
    candidates = unique + [rng.choice(unique) for _ in range(DUP_REPEATS)]
    rng.shuffle(candidates)
    dq = corpus.query()
    sdk = together.Together(api_key=API_KEY, base_url=base_url)
    _, bare = served(lambda: sdk.rerank.create(model=MODEL, query=dq, documents=candidates))
    plain = RerankClient(**common)
    dedupe_cases = {
        "core RerankClient.rerank": lambda: plain.rerank(dq, candidates, top_n=10),
        "LlamaIndex postprocess_nodes": lambda: LIRerank(top_n=10, **common).postprocess_nodes(
            [NodeWithScore(node=TextNode(text=t)) for t in candidates], query_str=dq
        ),
        "LangChain compress_documents": lambda: LCRerank(top_n=10, **common).compress_documents(
            [Document(page_content=t) for t in candidates], dq
        ),
    }
    for label, call in dedupe_cases.items():
        out, s = served(call)
        share = s["documents"] / bare["documents"]
        client_note = ""
        if hasattr(out, "documents_sent"):
            client_note = (
                f"; RerankResults: documents_sent={out.documents_sent}, duplicates={out.duplicates}"
            )
        rows.append(
            Row(
                f"dedupe: {DUP_REPEATS}% duplicates, {label}",
                f"{s['documents']} docs, {s['tokens']} tokens",
                f"bare SDK {bare['documents']} docs, {bare['tokens']} tokens",
                f"{share:.2f}",
                "0.70 of documents",
                s["documents"] == DUP_TOTAL - DUP_REPEATS,
                [
                    f"saved {bare['documents'] - s['documents']} documents and "
                    f"{bare['tokens'] - s['tokens']} tokens "
                    f"({1 - s['tokens'] / bare['tokens']:.0%}){client_note}"
                ],
            )
        )

    # -- an overlapping candidate list (information) ---------------------------------------
    cached = RerankClient(cache=True, **common)
    page1 = corpus.passages(DOCS)
    page2 = page1[5:] + corpus.passages(5)
    q2 = corpus.query()
    _, s1 = served(lambda: cached.rerank(q2, page1))
    out, s2 = served(lambda: cached.rerank(q2, page2))
    rows.append(
        Row(
            "cache: overlapping list (15 of 20 seen), core",
            f"{s2['documents']} docs, {s2['tokens']} tokens",
            f"first list {s1['documents']} docs, {s1['tokens']} tokens",
            f"{s2['documents'] / DOCS:.2f}",
            "-",
            None,
            [f"RerankResults: documents_sent={out.documents_sent}, cache_hits={out.cache_hits}"],
        )
    )
    for closable in (sdk, plain, cached):
        closable.close()
    return rows


def _key(item: Any) -> Any:
    """A comparable identity of one ranked item, whatever the framework."""
    if hasattr(item, "index"):
        return (item.index, item.relevance_score)
    if hasattr(item, "node"):
        return (item.node.get_content(), item.score)
    return (item.page_content, item.metadata.get("relevance_score"))
