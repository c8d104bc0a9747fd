"""Client overhead: one sync rerank of 100 documents against a zero-latency server.

Everything the client does is on the clock (building the request, the socket round trip,
the server's own work, parsing and, for the adapters, converting framework objects both
ways), so the ratio to the bare SDK call is what a user pays for the adapter. Variants are
interleaved call by call so they share the machine's noise; medians are compared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from _harness import API_KEY, MODEL, BenchServer, Corpus, Row, fmt_s, median, rotations, spread

DOCS = 100
TOP_N = 5
PROFILE = "zero"


def profiles() -> dict[str, tuple[float, int]]:
    return {PROFILE: (0.0, 1024)}


def run(server: BenchServer, repetitions: int) -> list[Row]:
    import together
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from together_rerank_plugins import RerankClient
    from together_rerank_plugins.langchain import TogetherRerank as LCRerank
    from together_rerank_plugins.llama_index import TogetherRerank as LIRerank

    base_url = server.url(PROFILE)
    corpus = Corpus(seed=100)
    texts = corpus.passages(DOCS)
    query = corpus.query()
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in texts]
    lc_docs = [Document(page_content=t) for t in texts]

    sdk = together.Together(api_key=API_KEY, base_url=base_url)
    core = RerankClient(api_key=API_KEY, base_url=base_url)
    li = LIRerank(api_key=API_KEY, base_url=base_url, top_n=TOP_N)
    lc = LCRerank(api_key=API_KEY, base_url=base_url, top_n=TOP_N)

    variants: dict[str, Callable[[], Any]] = {
        "sdk": lambda: (
            sdk.rerank.create(model=MODEL, query=query, documents=texts, top_n=TOP_N).results
        ),
        "core": lambda: core.rerank(query, texts, top_n=TOP_N),
        "llama_index": lambda: li.postprocess_nodes(nodes, query_str=query),
        "langchain": lambda: lc.compress_documents(lc_docs, query),
    }
    for fn in variants.values():  # warm-up: imports, connection, caches
        for _ in range(5):
            assert len(fn()) == TOP_N
    times: dict[str, list[float]] = {name: [] for name in variants}
    clock = time.perf_counter
    for order in rotations(list(variants), repetitions):
        for name in order:
            fn = variants[name]
            start = clock()
            fn()
            times[name].append(clock() - start)
    for closable in (sdk, core):
        closable.close()

    base = median(times["sdk"])
    rows = [
        Row(
            "overhead 100 docs sync: bare SDK Together.rerank.create",
            spread(times["sdk"]),
            "zero-latency server",
            "1.00",
            "-",
            None,
        )
    ]
    rounds = len(times["sdk"])
    for name, label, target in [
        ("llama_index", "overhead 100 docs sync: LlamaIndex postprocess_nodes", 1.10),
        ("langchain", "overhead 100 docs sync: LangChain compress_documents", 1.10),
        ("core", "overhead 100 docs sync: core RerankClient.rerank", None),
    ]:
        ratio = median(times[name]) / base
        paired = median([times[name][i] / times["sdk"][i] for i in range(rounds)])
        floor = min(times[name]) / min(times["sdk"])
        rows.append(
            Row(
                label,
                spread(times[name]),
                f"SDK {fmt_s(base)}",
                f"{ratio:.2f}x",
                f"<= {target:.2f}x" if target else "-",
                None if target is None else ratio <= target,
                [
                    f"same data, other estimators: median of per-round ratios {paired:.2f}x, "
                    f"ratio of minimums {floor:.2f}x"
                ],
            )
        )
    return rows
