"""1,000 documents against a server that takes at most 100 per request (200 ms latency).

The core client with ``max_batch_size=100`` splits the call into 10 requests and sends them
``max_concurrency`` at a time (default 8: threads on the sync path, tasks on the async
path); ``max_concurrency=1`` is sequential batching, what the peers that batch at all do.
The ideal for concurrent batching is ``ceil(10 / 8) = 2`` round trips, 400 ms.
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _harness import API_KEY, MODEL, BenchServer, Corpus, Row, fmt_s, median, rotations, spread

DOCS = 1000
CAP = 100
LATENCY = 0.2
CONCURRENCY = 8  # the default max_concurrency
TOP_N = 10
PROFILE = "capped"


def profiles() -> dict[str, tuple[float, int]]:
    return {PROFILE: (LATENCY, CAP)}


def run(server: BenchServer, rounds: int) -> list[Row]:
    import together

    from together_rerank_plugins import RerankClient
    from together_rerank_plugins._config import DEFAULT_MAX_CONCURRENCY

    assert DEFAULT_MAX_CONCURRENCY == CONCURRENCY, "the default max_concurrency changed"
    base_url = server.url(PROFILE)
    corpus = Corpus(seed=1000)
    docs = corpus.passages(DOCS)
    query = corpus.query()
    batches = math.ceil(DOCS / CAP)
    ideal = math.ceil(batches / CONCURRENCY) * LATENCY

    concurrent = RerankClient(api_key=API_KEY, base_url=base_url, max_batch_size=CAP)
    sequential = RerankClient(
        api_key=API_KEY, base_url=base_url, max_batch_size=CAP, max_concurrency=1
    )
    loop = asyncio.new_event_loop()  # one loop for every async call: pools stay warm
    sdk = together.Together(api_key=API_KEY, base_url=base_url)
    asdk: dict[str, Any] = {}
    pool = ThreadPoolExecutor(CONCURRENCY)
    slices = [docs[i : i + CAP] for i in range(0, DOCS, CAP)]

    def sdk_sync() -> float:
        """The floor: the same 10 requests straight through the SDK, 8 threads at a time."""
        start = time.perf_counter()

        def one(batch: list[str]) -> Any:
            return sdk.rerank.create(model=MODEL, query=query, documents=batch, top_n=TOP_N)

        assert len(list(pool.map(one, slices))) == batches
        return time.perf_counter() - start

    def sdk_async() -> float:
        async def call() -> float:
            client = asdk.setdefault(
                "client", together.AsyncTogether(api_key=API_KEY, base_url=base_url)
            )
            gate = asyncio.Semaphore(CONCURRENCY)

            async def one(batch: list[str]) -> Any:
                async with gate:
                    return await client.rerank.create(
                        model=MODEL, query=query, documents=batch, top_n=TOP_N
                    )

            start = time.perf_counter()
            assert len(await asyncio.gather(*(one(b) for b in slices))) == batches
            return time.perf_counter() - start

        return loop.run_until_complete(call())

    def check(results: Any) -> None:
        assert len(results) == TOP_N
        assert results.requests == batches, results.requests
        assert results.documents_sent == DOCS

    def sync(client: RerankClient) -> float:
        start = time.perf_counter()
        check(client.rerank(query, docs, top_n=TOP_N))
        return time.perf_counter() - start

    def asyn(client: RerankClient) -> float:
        async def call() -> float:
            start = time.perf_counter()
            check(await client.arerank(query, docs, top_n=TOP_N))
            return time.perf_counter() - start

        return loop.run_until_complete(call())

    variants = {
        "sync concurrent": lambda: sync(concurrent),
        "sync sequential": lambda: sync(sequential),
        "async concurrent": lambda: asyn(concurrent),
        "async sequential": lambda: asyn(sequential),
        "sync sdk": sdk_sync,
        "async sdk": sdk_async,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    served: dict[str, dict[str, int]] = {}
    try:
        for fn in variants.values():  # warm-up
            fn()
        for order in rotations(list(variants), rounds):
            for name in order:
                server.reset(PROFILE)
                times[name].append(variants[name]())
                served[name] = server.stats(PROFILE)
    finally:
        loop.run_until_complete(concurrent.aclose())
        loop.run_until_complete(sequential.aclose())
        if "client" in asdk:
            loop.run_until_complete(asdk["client"].close())
        loop.close()
        pool.shutdown()
        sdk.close()

    rows = []
    for path in ("sync", "async"):
        conc, seq = median(times[f"{path} concurrent"]), median(times[f"{path} sequential"])
        s = served[f"{path} concurrent"]
        note = (
            f"server saw {s['requests']} requests, {s['documents']} documents, "
            f"peak {s['peak_in_flight']} in flight, {s['rejected']} rejected over the cap"
        )
        rows.append(
            Row(
                f"batching {DOCS}/{CAP} {path}: concurrent vs sequential",
                spread(times[f"{path} concurrent"]),
                f"sequential {spread(times[f'{path} sequential'])}",
                f"{seq / conc:.2f}x faster",
                ">= 4x faster",
                seq / conc >= 4,
                [note],
            )
        )
        rows.append(
            Row(
                f"batching {DOCS}/{CAP} {path}: concurrent vs ideal",
                fmt_s(conc),
                f"ceil({batches}/{CONCURRENCY}) x {fmt_s(LATENCY)} = {fmt_s(ideal)}",
                f"{conc / ideal:.2f}x",
                "<= 1.3x",
                conc / ideal <= 1.3,
            )
        )
        floor = median(times[f"{path} sdk"])
        rows.append(
            Row(
                f"batching {DOCS}/{CAP} {path}: bare SDK, same 10 requests, 8 at a time",
                spread(times[f"{path} sdk"]),
                f"ideal {fmt_s(ideal)}",
                f"{floor / ideal:.2f}x",
                "(floor: SDK cost)",
                None,
                [f"ours / this floor: {conc / floor:.2f}x"],
            )
        )
    return rows
