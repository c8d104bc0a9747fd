"""64 concurrent async reranks of 20 documents, 200 ms server latency, one event loop.

Variants (all against the same server, interleaved round by round):

- ``sdk``: ``together.AsyncTogether(...).rerank.create(...)`` straight: the limit;
- ``llama_index``: our ``TogetherRerank.apostprocess_nodes`` (native async);
- ``langchain``: our ``TogetherRerank.acompress_documents`` (native async);
- ``core``: ``RerankClient.arerank`` (information);
- ``llama_index (thread)``: our LlamaIndex postprocessor with LlamaIndex's default
  ``_apostprocess_nodes`` (``asyncio.to_thread`` of the sync method), the design of the
  peers' rerankers: shows what a thread pool costs under concurrency.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _harness import API_KEY, MODEL, BenchServer, Corpus, Row, fmt_s, median, rotations, spread

CONCURRENCY = 64
DOCS = 20
TOP_N = 5
LATENCY = 0.2
PROFILE = "async"


def profiles() -> dict[str, tuple[float, int]]:
    return {PROFILE: (LATENCY, 1024)}


def run(server: BenchServer, rounds: int) -> list[Row]:
    import together
    from langchain_core.documents import Document
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from together_rerank_plugins import RerankClient
    from together_rerank_plugins.langchain import TogetherRerank as LCRerank
    from together_rerank_plugins.llama_index import TogetherRerank as LIRerank

    class ThreadPathRerank(LIRerank):
        """Ours, but with LlamaIndex's default async path: the sync call in a worker thread."""

        async def _apostprocess_nodes(
            self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
        ) -> list[NodeWithScore]:
            return await BaseNodePostprocessor._apostprocess_nodes(self, nodes, query_bundle)

    base_url = server.url(PROFILE)
    corpus = Corpus(seed=64)
    queries = [corpus.query() for _ in range(CONCURRENCY)]
    texts = [corpus.passages(DOCS) for _ in range(CONCURRENCY)]
    nodes = [[NodeWithScore(node=TextNode(text=t), score=0.5) for t in ts] for ts in texts]
    lc_docs = [[Document(page_content=t) for t in ts] for ts in texts]

    common: dict[str, Any] = {"api_key": API_KEY, "base_url": base_url, "top_n": TOP_N}
    li = LIRerank(**common)
    lc = LCRerank(**common)
    li_thread = ThreadPathRerank(**common)
    core = RerankClient(api_key=API_KEY, base_url=base_url)
    sdk_holder: dict[str, Any] = {}

    def sdk_call(i: int) -> Awaitable[Any]:
        return sdk_holder["client"].rerank.create(
            model=MODEL, query=queries[i], documents=texts[i], top_n=TOP_N
        )

    variants: dict[str, Callable[[int], Awaitable[Any]]] = {
        "sdk": sdk_call,
        "llama_index": lambda i: li.apostprocess_nodes(nodes[i], query_str=queries[i]),
        "langchain": lambda i: lc.acompress_documents(lc_docs[i], queries[i]),
        "core": lambda i: core.arerank(queries[i], texts[i], top_n=TOP_N),
        "llama_index (thread)": lambda i: li_thread.apostprocess_nodes(
            nodes[i], query_str=queries[i]
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    peaks: dict[str, int] = {}

    async def one_round(name: str) -> float:
        call = variants[name]
        start = time.perf_counter()
        out = await asyncio.gather(*(call(i) for i in range(CONCURRENCY)))
        elapsed = time.perf_counter() - start
        assert len(out) == CONCURRENCY
        assert all(len(x) == TOP_N for x in _results(out))
        return elapsed

    async def main() -> None:
        # the SDK's async client belongs to this loop, as ours do (built lazily per loop)
        sdk_holder["client"] = together.AsyncTogether(api_key=API_KEY, base_url=base_url)
        for name in variants:  # warm-up: imports, clients, connection pools
            await one_round(name)
        for order in rotations(list(variants), rounds):
            for name in order:
                server.reset(PROFILE)
                times[name].append(await one_round(name))
                peaks[name] = max(peaks.get(name, 0), server.stats(PROFILE)["peak_in_flight"])
        await sdk_holder["client"].close()
        await core.aclose()

    asyncio.run(main())

    limit = median(times["sdk"])
    rows = [
        Row(
            f"async x{CONCURRENCY}: AsyncTogether direct (the limit)",
            spread(times["sdk"]),
            f"{CONCURRENCY} x {DOCS} docs, {fmt_s(LATENCY)} latency",
            "1.00",
            "-",
            None,
            [
                f"peak requests in flight at the server: {peaks['sdk']}; the limit is "
                f"{limit / LATENCY:.1f} round trips: the rest is the SDK's own CPU time for "
                f"{CONCURRENCY} requests on this machine"
            ],
        )
    ]
    for name, label, target in [
        ("llama_index", "async x64: LlamaIndex apostprocess_nodes", 1.2),
        ("langchain", "async x64: LangChain acompress_documents", 1.2),
        ("core", "async x64: core RerankClient.arerank", None),
        ("llama_index (thread)", "async x64: LlamaIndex default thread path (peers)", None),
    ]:
        ratio = median(times[name]) / limit
        rows.append(
            Row(
                label,
                spread(times[name]),
                f"limit {fmt_s(limit)}",
                f"{ratio:.2f}x",
                f"<= {target:.1f}x"
                if target
                else "(the peers' design)"
                if "thread" in name
                else "-",
                None if target is None else ratio <= target,
                [f"peak requests in flight at the server: {peaks[name]}" + _thread_note(name)],
            )
        )
    return rows


def _thread_note(name: str) -> str:
    if "thread" not in name:
        return ""
    workers = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor
    trips = -(-CONCURRENCY // workers)
    return (
        f"; {workers} worker threads, so ceil({CONCURRENCY}/{workers}) = {trips} round trips "
        f"= {fmt_s(trips * LATENCY)} at best, whatever the machine: its ratio to the limit is "
        "largest when the limit is near one round trip (an idle machine)"
    )


def _results(out: list[Any]) -> list[Any]:
    """Each call's list of results (the SDK returns a response object)."""
    return [getattr(x, "results", x) for x in out]
