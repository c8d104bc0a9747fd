"""The evaluation's one scoring pass against per-depth calls: documents sent and wall time
of an 8-depth sweep (5, 10, 15, 20, 25, 30, 40, 50), same data, same server, same run.

- **one pass** (``evaluate_reranking``, the library): each query's 50 candidates scored in
  one call; every smaller depth reuses those scores. Metrics, bootstrap intervals and the
  recommendation are included in its time; its latency sample is off
  (``latency_sample=0``) so both sides send only what scoring needs.
- **per depth** (what ``together-rerank eval`` did before): one call per query and depth
  over that depth's top c, then the same pytrec_eval metrics per depth (no intervals).

Both use one ``RerankClient`` against the benchmark server (a separate process on
127.0.0.1, pointwise word-overlap scores, a fixed round trip of ``LATENCY`` seconds per
request whatever its size, so wall time here follows the number of requests; a real
endpoint's latency also grows with the documents), 8 requests in flight, interleaved
rounds, medians compared. The server counts the documents it receives.

Run alone: ``python benchmarks/bench_eval.py [--quick]`` (prints a table).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from typing import Any

from _harness import API_KEY, BenchServer, Corpus, Row, median, rotations, spread

PROFILE = "eval"
LATENCY = 0.05
DEPTHS = (5, 10, 15, 20, 25, 30, 40, 50)
CONCURRENCY = 8


def profiles() -> dict[str, tuple[float, int]]:
    return {PROFILE: (LATENCY, 1024)}


def workload(n_queries: int, seed: int = 17) -> tuple[Any, dict[str, list[str]]]:
    """Judged queries over a synthetic corpus, and a first stage: 50 candidates per query,
    its 3 relevant passages (which share the query's words) at random places among them."""
    from together_rerank_plugins.evaluation import EvalDataset

    corpus_gen = Corpus(seed=seed)
    rng = random.Random(seed)
    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    rankings: dict[str, list[str]] = {}
    for q in range(n_queries):
        qid = f"q{q}"
        query = corpus_gen.query()
        queries[qid] = query
        ids = []
        for j in range(max(DEPTHS)):
            did = f"{qid}-d{j}"
            text = corpus_gen.passage()
            if j < 3:  # relevant: the query's words in it
                text = f"{query.rstrip('?')} {text}"
            corpus[did] = text
            ids.append(did)
        qrels[qid] = {ids[0]: 2, ids[1]: 1, ids[2]: 1}
        rng.shuffle(ids)
        rankings[qid] = ids
    return EvalDataset(queries, qrels, corpus, "synthetic benchmark"), rankings


def one_pass(client: Any, data: Any, rankings: dict[str, list[str]]) -> Any:
    from together_rerank_plugins.evaluation import evaluate_reranking

    by_text = {text: rankings[qid] for qid, text in data.queries.items()}
    return evaluate_reranking(
        by_text.__getitem__,
        client,
        data,
        candidates=DEPTHS,
        latency_sample=0,
        concurrency=CONCURRENCY,
        progress=False,
    )


def per_depth(client: Any, data: Any, rankings: dict[str, list[str]]) -> dict[int, float]:
    """The previous algorithm: a call per query and depth, then metrics per depth."""
    from together_rerank_plugins.evaluation._metrics import mean, per_query

    async def sweep() -> dict[int, dict[str, list[str]]]:
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def one(c: int, qid: str) -> tuple[int, str, list[str]]:
            pool = rankings[qid][:c]
            async with semaphore:
                results = await client.arerank(data.queries[qid], [data.corpus[d] for d in pool])
            return c, qid, [pool[r.index] for r in results]

        done = await asyncio.gather(*(one(c, q) for c in DEPTHS for q in data.queries))
        out: dict[int, dict[str, list[str]]] = {c: {} for c in DEPTHS}
        for c, qid, order in done:
            out[c][qid] = order + rankings[qid][c:]
        return out

    orders = asyncio.run(sweep())
    return {c: mean(per_query(data.qrels, orders[c], 10)["ndcg"]) for c in DEPTHS}


def run(server: BenchServer, quick: bool = False) -> list[Row]:
    from together_rerank_plugins import RerankClient

    n_queries = 20 if quick else 100
    rounds = 1 if quick else 3
    data, rankings = workload(n_queries)
    client = RerankClient(api_key=API_KEY, base_url=server.url(PROFILE), max_retries=0)
    client.warm_up()
    # warm-up, not timed: imports (scipy, pytrec_eval) and connections are paid once per
    # process, not per sweep
    small, small_rankings = workload(2, seed=3)
    one_pass(client, small, small_rankings)
    per_depth(client, small, small_rankings)
    times: dict[str, list[float]] = {"one pass": [], "per depth": []}
    docs: dict[str, int] = {}
    results: dict[str, Any] = {}
    for order in rotations(list(times), rounds):
        for name in order:
            server.reset(PROFILE)
            start = time.perf_counter()
            results[name] = (one_pass if name == "one pass" else per_depth)(client, data, rankings)
            times[name].append(time.perf_counter() - start)
            docs[name] = server.stats(PROFILE)["documents"]
    # same rankings, same numbers: the one pass is not a different evaluation
    report = results["one pass"]
    for d in report.depths:
        assert abs(d.ndcg - results["per depth"][d.candidates]) < 1e-9, d
    t_one, t_per = median(times["one pass"]), median(times["per depth"])
    expected_one = n_queries * max(DEPTHS)
    expected_per = n_queries * sum(DEPTHS)
    label = f"eval sweep {len(DEPTHS)} depths x {n_queries} queries"
    return [
        Row(
            f"{label}: documents sent",
            f"{docs['one pass']:,} docs",
            f"per depth {docs['per depth']:,} docs",
            f"{docs['one pass'] / docs['per depth']:.2f}",
            f"{expected_one / expected_per:.2f} (= {max(DEPTHS)} / {sum(DEPTHS)})",
            docs["one pass"] == expected_one and docs["per depth"] == expected_per,
            [
                "one pass: each query's deepest list (50) once; per depth: 5+10+...+50 = "
                f"{sum(DEPTHS)} per query; counted by the server"
            ],
        ),
        Row(
            f"{label}: wall time",
            f"{t_one * 1000:,.0f} ms ({spread(times['one pass'])})",
            f"per depth {t_per * 1000:,.0f} ms ({spread(times['per depth'])})",
            f"{t_one / t_per:.2f}",
            "< 1 (information)",
            None,
            [
                f"server round trip {LATENCY * 1000:.0f} ms per request whatever its size, "
                f"{CONCURRENCY} in flight; one pass includes metrics, bootstrap intervals and "
                "the recommendation; medians of interleaved rounds after a warm-up (imports "
                "and connections are paid once per process)"
            ],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 queries, one round")
    args = parser.parse_args(argv)
    with BenchServer(profiles()) as server:
        rows = run(server, args.quick)
    for row in rows:
        print(
            f"{row.benchmark}\n  {row.measured}  vs  {row.reference}  ratio {row.ratio}  "
            f"(target {row.target}): {row.verdict}"
        )
        for note in row.notes:
            print(f"  {note}")
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
