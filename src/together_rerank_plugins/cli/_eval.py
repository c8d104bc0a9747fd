"""``together-rerank eval DATASET``: does reranking help this search, and how much?

A first stage (BM25 from ``bm25s``, or any TREC run file) retrieves candidates for every
judged query of a BEIR-format dataset (``_eval_data``); the reranker reorders the top ``c``
of them for each candidate count ``c`` of the sweep. nDCG@k, RR@k (MRR@k as a mean) and
Recall@k are computed by pytrec_eval (trec_eval's C code; ``_eval_metrics``), never by
formulas of ours, for the first stage alone and for each reranked run, with the tokens the
reranker reported; ``_eval_plot`` draws them.

Every run is evaluated exactly in the order we produced: documents get rank-derived scores
(``depth - rank``), so the metric library's own tie-breaking never reorders them, and below
the ``c`` reranked candidates the rest of the first stage's list follows in its order (so a
sweep value below the cutoff is compared fairly). ``--save-runs DIR`` writes those runs as
TREC run files, to check the numbers with any tool.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import RerankClient
from .._console import json_line
from ._common import (
    Mode,
    UsageError,
    add_config_flags,
    add_output_flags,
    check_output_folder,
    make_client,
    missing_extra,
    positive_int,
    usage_tokens,
)
from ._eval_data import Dataset, bm25_first_stage, load_beir, run_file_first_stage
from ._eval_metrics import means, measure_names, require_metrics, write_trec_run
from ._eval_plot import check_plot_path, plot
from ._progress import add_progress_flag, progress_bar

__all__ = [
    "Dataset",
    "EvalReport",
    "add_parser",
    "bm25_first_stage",
    "evaluate",
    "load_beir",
    "run",
]

DEFAULT_CANDIDATES = (10, 20, 50, 100)
DEFAULT_CUTOFF = 10
DEFAULT_CONCURRENCY = 8

DESCRIPTION = """\
Measure what reranking buys on a BEIR-format dataset (DATASET/corpus.jsonl,
DATASET/queries.jsonl, DATASET/qrels/<split>.tsv): nDCG@10, MRR@10 (RR@10) and Recall@10
for the first stage alone and with the reranker over its top 10, 20, 50, 100 candidates,
with the tokens spent; as a table (or --json) and a plot (--plot sweep.png, .jpg, .pdf, .svg).

The first stage is BM25 (bm25s) over the corpus, or your own retriever's TREC run file
(--run). Metrics are computed by pytrec_eval (trec_eval's C code). Each candidate count is a
real rerank call per query: the cost of the sweep is the sum of the counts per query; a
progress bar counts the calls (on a terminal)."""


def _candidates(value: str) -> list[int]:
    try:
        counts = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers such as 10,20,50,100, got {value!r}"
        ) from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"candidate counts must be >= 1, got {value!r}")
    return counts


def add_parser(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "eval",
        help="measure nDCG/MRR/Recall with and without reranking on a BEIR-format dataset",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", metavar="DATASET", help="a BEIR-format folder")
    parser.add_argument(
        "--split",
        help="which qrels/<split>.tsv to evaluate (default: test, or the only one there is)",
    )
    parser.add_argument(
        "--run",
        metavar="FILE",
        help="first stage from this TREC run file (qid Q0 docid rank score tag) instead of BM25",
    )
    parser.add_argument(
        "--candidates",
        type=_candidates,
        default=list(DEFAULT_CANDIDATES),
        metavar="C1,C2,...",
        help="candidate counts to rerank (default 10,20,50,100)",
    )
    parser.add_argument(
        "--cutoff",
        type=positive_int,
        default=DEFAULT_CUTOFF,
        metavar="K",
        help=f"cutoff of nDCG@K, RR@K and R@K (default {DEFAULT_CUTOFF})",
    )
    parser.add_argument(
        "--max-queries",
        type=positive_int,
        metavar="N",
        help="evaluate only the first N judged queries (to bound cost on a live endpoint)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"rerank requests in flight at once (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--plot",
        metavar="PATH",
        help="write a plot of the sweep here, in the format its extension names "
        "(.png, .jpg, .pdf or .svg)",
    )
    parser.add_argument(
        "--save-runs",
        metavar="DIR",
        help="write the evaluated runs as TREC run files into DIR",
    )
    add_progress_flag(parser)
    add_config_flags(parser, ranking=False)
    add_output_flags(parser)
    parser.set_defaults(handler=run)


# -- evaluation ------------------------------------------------------------------------------
@dataclass
class SweepPoint:
    candidates: int
    metrics: dict[str, float]
    pool_recall: float
    requests: int = 0
    documents: int = 0
    tokens: int | None = None
    order: dict[str, list[str]] = field(default_factory=dict, repr=False)


@dataclass
class EvalReport:
    mode: Mode
    dataset: Dataset
    first_stage_name: str
    depth: int
    cutoff: int
    measures: list[str]
    first_stage: dict[str, float]
    sweep: list[SweepPoint]
    first_order: dict[str, list[str]]
    warnings: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            **self.mode.as_json(),
            "dataset": str(self.dataset.path),
            "qrels": str(self.dataset.qrels_file),
            "documents": len(self.dataset.corpus),
            "queries": len(self.dataset.queries),
            "queries_with_candidates": len(self.first_order),
            "first_stage": {"name": self.first_stage_name, "depth": self.depth},
            "metric_library": "pytrec_eval",
            "measures": self.measures,
            "first_stage_metrics": self.first_stage,
            "rerank": [
                {
                    "candidates": p.candidates,
                    "metrics": p.metrics,
                    "pool_recall": p.pool_recall,
                    "requests": p.requests,
                    "documents": p.documents,
                    "tokens": p.tokens,
                }
                for p in self.sweep
            ],
            "warnings": self.warnings,
        }


async def _rerank_sweep(
    client: RerankClient,
    data: Dataset,
    first: dict[str, list[str]],
    counts: list[int],
    concurrency: int,
    bar: Any = None,
) -> dict[int, tuple[dict[str, list[str]], int | None, int, int]]:
    """For each count: reranked top-c per query, tokens (None if unreported), requests, docs.
    ``bar.update(1)`` after each query's call, if a bar is given."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(c: int, qid: str) -> tuple[int, str, list[str], int | None, int, int]:
        pool = first[qid][:c]
        if not pool:
            return c, qid, [], 0, 0, 0
        async with semaphore:
            results = await client.arerank(data.queries[qid], [data.corpus[d] for d in pool])
        if bar is not None:
            bar.update(1)
        order = [pool[r.index] for r in results]
        return c, qid, order, usage_tokens(results), results.requests, results.documents_sent

    tasks = [asyncio.ensure_future(one(c, q)) for c in counts for q in first]
    try:
        done = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
    out: dict[int, tuple[dict[str, list[str]], int | None, int, int]] = {}
    for c in counts:
        rows = [row for row in done if row[0] == c]
        reported = [row[3] for row in rows if row[3] is not None]
        total = sum(reported) if reported else None
        order = {row[1]: row[2] for row in rows}
        requests = sum(row[4] for row in rows)  # what was really sent
        documents = sum(row[5] for row in rows)
        out[c] = (order, total, requests, documents)
    return out


def evaluate(
    client: RerankClient,
    mode: Mode,
    data: Dataset,
    *,
    run_file: Path | None,
    counts: list[int],
    cutoff: int,
    concurrency: int,
    progress: bool = False,
) -> EvalReport:
    names = measure_names(cutoff)
    depth = max(max(counts), cutoff)
    warnings: list[str] = []
    if run_file is None:
        first = bm25_first_stage(data, depth)
        name = "BM25"
    else:
        first, warnings = run_file_first_stage(run_file, data, depth)
        name = f"run {run_file.name}"
        if not first:
            raise UsageError(f"{run_file} has no result for any judged query of {data.path}")
    longest = max(len(v) for v in first.values())
    if longest < max(counts):
        warnings.append(
            f"the first stage returns at most {longest} documents per query; larger candidate "
            "counts rerank all of them"
        )
    qrels = data.qrels  # a judged query without candidates counts as 0, as in trec_eval -c
    first_metrics = means(qrels, first, cutoff, recall_at=counts)
    calls = sum(1 for docs in first.values() if docs) * len(counts)
    bar = progress_bar(progress, calls, unit="call")
    try:
        reranked = asyncio.run(_rerank_sweep(client, data, first, counts, concurrency, bar))
    finally:
        bar.close()
    sweep = []
    for c in counts:
        top, tokens, requests, documents = reranked[c]
        order = {q: top[q] + first[q][c:] for q in first}
        sweep.append(
            SweepPoint(
                candidates=c,
                metrics=means(qrels, order, cutoff),
                pool_recall=first_metrics[f"R@{c}"],
                requests=requests,
                documents=documents,
                tokens=tokens,
                order=order,
            )
        )
    return EvalReport(
        mode=mode,
        dataset=data,
        first_stage_name=name,
        depth=depth,
        cutoff=cutoff,
        measures=names,
        first_stage={n: first_metrics[n] for n in names},
        sweep=sweep,
        first_order=first,
        warnings=warnings,
    )


# -- output ----------------------------------------------------------------------------------
def save_runs(report: EvalReport, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "first_stage.trec"]
    write_trec_run(paths[0], report.first_order, "first_stage")
    for p in report.sweep:
        path = folder / f"rerank_{p.candidates}.trec"
        write_trec_run(path, p.order, f"rerank_{p.candidates}")
        paths.append(path)
    return paths


def _fmt_tokens(tokens: int | None) -> str:
    return "n/a" if tokens is None else f"{tokens:,}"


def print_table(report: EvalReport) -> None:
    n_queries = len(report.dataset.queries)
    names = report.measures
    head = f"{'system':<24}{'cands':>6}" + "".join(f"{n:>9}" for n in names)
    head += f"{'pool R@c':>10}{'tokens':>12}{'tokens/q':>10}"
    print(head)
    row = f"{report.first_stage_name:<24}{'-':>6}"
    row += "".join(f"{report.first_stage[n]:>9.4f}" for n in names)
    print(row + f"{'-':>10}{'-':>12}{'-':>10}")
    for p in report.sweep:
        row = f"{report.first_stage_name + ' + rerank':<24}{p.candidates:>6}"
        row += "".join(f"{p.metrics[n]:>9.4f}" for n in names)
        per_q = "n/a" if p.tokens is None else f"{p.tokens / max(p.requests, 1):,.0f}"
        print(row + f"{p.pool_recall:>10.4f}{_fmt_tokens(p.tokens):>12}{per_q:>10}")
    k = report.cutoff
    print(
        f"means over {n_queries} queries, computed by pytrec_eval (trec_eval): nDCG@{k}, "
        f"RR@{k} (= MRR@{k}), R@{k} (recall); pool R@c = the first stage's Recall@c, the most "
        "any reranking of those c candidates can find."
    )
    if all(p.tokens is None for p in report.sweep):
        print("tokens: n/a (not reported by this client version)")


def run(args: argparse.Namespace) -> int:
    data = load_beir(Path(args.dataset), args.split, args.max_queries)
    require_metrics()  # fail early if pytrec_eval is missing
    if args.run is None:
        try:
            import bm25s  # type: ignore[import-untyped, unused-ignore]  # noqa: F401
        except ImportError:
            raise missing_extra("bm25s") from None
    # every output is checked before anything is sent (a sweep can take minutes)
    if args.plot is not None:
        check_plot_path(Path(args.plot))
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise missing_extra("matplotlib") from None
    if args.save_runs is not None:
        check_output_folder(Path(args.save_runs), "--save-runs runs")
    # every candidate keeps its place: a metric must see two judged copies of a passage
    client, mode = make_client(args, dedupe=False)
    out = sys.stderr if args.json else sys.stdout
    print(mode.header, file=out, flush=True)
    n_q = len(data.queries)
    print(
        f"dataset: {data.path} (BEIR; {data.qrels_file.name}): {len(data.corpus)} documents, "
        f"{n_q} judged queries",
        file=out,
    )
    depth = max(max(args.candidates), args.cutoff)
    first_name = "BM25 (bm25s, English stopwords)" if args.run is None else f"run file {args.run}"
    counts = ", ".join(map(str, args.candidates))
    print(
        f"first stage: {first_name}, top {depth} per query; rerank: model {mode.model}, "
        f"candidates {counts}: up to {n_q * len(args.candidates)} requests, "
        f"{n_q * sum(args.candidates):,} documents; concurrency {args.concurrency}",
        file=out,
        flush=True,
    )
    with client:
        report = evaluate(
            client,
            mode,
            data,
            run_file=Path(args.run) if args.run is not None else None,
            counts=args.candidates,
            cutoff=args.cutoff,
            concurrency=args.concurrency,
            progress=not args.no_progress,
        )
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.save_runs is not None:
        saved = save_runs(report, Path(args.save_runs))
        print(f"runs: {len(saved)} TREC run files in {args.save_runs}", file=out)
    if args.plot is not None:
        plot(report, Path(args.plot))
        print(f"plot: {args.plot}", file=out)
    if args.json:
        result = report.as_json()
        result["plot"] = args.plot
        print(json_line(result))
    else:
        print()
        print_table(report)
    return 0
