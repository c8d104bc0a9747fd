"""``together-rerank eval DATASET``: does reranking help this search, and how much?

A first stage (BM25 from ``bm25s``, or any TREC run file) retrieves candidates for every
judged query of a BEIR-format dataset; the reranker reorders the top ``c`` of them for each
candidate count ``c`` of the sweep. nDCG@k, RR@k (MRR@k as a mean) and Recall@k are
computed by ``ir-measures`` (pytrec_eval underneath), never by formulas of ours, for the
first stage alone and for each reranked run, with the tokens the reranker reported.

Every run is evaluated exactly in the order we produced: documents get rank-derived scores
(``depth - rank``), so the metric library's own tie-breaking never reorders them, and below
the ``c`` reranked candidates the rest of the first stage's list follows in its order (so a
sweep value below the cutoff is compared fairly). ``--save-runs DIR`` writes those runs as
TREC run files, to check the numbers with any tool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import RerankClient
from ._common import (
    Mode,
    UsageError,
    add_config_flags,
    add_output_flags,
    make_client,
    missing_extra,
    positive_int,
    usage_tokens,
)

__all__ = ["Dataset", "EvalReport", "add_parser", "load_beir", "run"]

DEFAULT_CANDIDATES = (10, 20, 50, 100)
DEFAULT_CUTOFF = 10
DEFAULT_CONCURRENCY = 8

DESCRIPTION = """\
Measure what reranking buys on a BEIR-format dataset (DATASET/corpus.jsonl,
DATASET/queries.jsonl, DATASET/qrels/<split>.tsv): nDCG@10, MRR@10 (RR@10) and Recall@10
for the first stage alone and with the reranker over its top 10, 20, 50, 100 candidates,
with the tokens spent; as a table (or --json) and a PNG plot (--plot).

The first stage is BM25 (bm25s) over the corpus, or your own retriever's TREC run file
(--run). Metrics are computed by ir-measures (pytrec_eval). Each candidate count is a real
rerank call per query: the cost of the sweep is the sum of the counts per query."""


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
    parser.add_argument("--plot", metavar="PATH", help="write a PNG plot of the sweep here")
    parser.add_argument(
        "--save-runs",
        metavar="DIR",
        help="write the evaluated runs as TREC run files into DIR",
    )
    add_config_flags(parser, ranking=False)
    add_output_flags(parser)
    parser.set_defaults(handler=run)


# -- dataset ---------------------------------------------------------------------------------
@dataclass
class Dataset:
    path: Path
    qrels_file: Path
    corpus: dict[str, str]  # doc id -> text sent to the reranker (title, then text)
    queries: dict[str, str]  # judged query ids, in queries.jsonl order -> text
    qrels: dict[str, dict[str, int]]


def _jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise UsageError(f"{path} not found: DATASET must be a BEIR-format folder")
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise UsageError(f"{path} line {number}: not valid JSON ({exc})") from None
                if not isinstance(obj, dict) or "_id" not in obj:
                    raise UsageError(f'{path} line {number}: expected an object with "_id"')
                yield number, obj
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason})") from None


def _qrels_file(folder: Path, split: str | None) -> Path:
    qdir = folder / "qrels"
    if split is not None:
        path = qdir / f"{split}.tsv"
        if not path.is_file():
            raise UsageError(f"{path} not found")
        return path
    if (qdir / "test.tsv").is_file():
        return qdir / "test.tsv"
    found = sorted(qdir.glob("*.tsv"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError(f"no qrels/*.tsv in {folder}: DATASET must be a BEIR-format folder")
    names = ", ".join(p.stem for p in found)
    raise UsageError(f"{folder}/qrels has several splits ({names}) and no test.tsv: pick --split")


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR TSV (query-id, corpus-id, score; a header line) or TREC qrels (qid 0 docid rel)."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            parts = line.split("\t") if "\t" in line else line.split()
            parts = [p.strip() for p in parts]
            if not any(parts):
                continue
            if len(parts) == 4:
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise UsageError(f"{path} line {number}: expected query-id, corpus-id, score")
            try:
                rel = int(parts[2])
            except ValueError:
                if number == 1:  # the header
                    continue
                raise UsageError(
                    f"{path} line {number}: score {parts[2]!r} is not an integer"
                ) from None
            qrels.setdefault(parts[0], {})[parts[1]] = rel
    return qrels


def load_beir(folder: Path, split: str | None = None, max_queries: int | None = None) -> Dataset:
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder: DATASET must be a BEIR-format folder")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / name).is_file():
            raise UsageError(f"{folder / name} not found: DATASET must be a BEIR-format folder")
    qrels_file = _qrels_file(folder, split)
    qrels_all = _read_qrels(qrels_file)
    corpus: dict[str, str] = {}
    for _, obj in _jsonl(folder / "corpus.jsonl"):
        title = str(obj.get("title") or "").strip()
        text = str(obj.get("text") or "").strip()
        corpus[str(obj["_id"])] = f"{title} {text}".strip() if title else text
    queries: dict[str, str] = {}
    for _, obj in _jsonl(folder / "queries.jsonl"):
        qid = str(obj["_id"])
        if qid in qrels_all:
            queries[qid] = str(obj.get("text") or "")
    if not corpus:
        raise UsageError(f"{folder}/corpus.jsonl has no documents")
    if not queries:
        raise UsageError(f"no query of {folder}/queries.jsonl is judged in {qrels_file}")
    if max_queries is not None:
        queries = dict(list(queries.items())[:max_queries])
    qrels = {q: qrels_all[q] for q in queries}
    return Dataset(folder, qrels_file, corpus, queries, qrels)


# -- first stage -----------------------------------------------------------------------------
def bm25_first_stage(data: Dataset, depth: int) -> dict[str, list[str]]:
    """BM25 (bm25s, English stopwords, no stemming) top ``depth`` doc ids per query."""
    try:
        import bm25s  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise missing_extra("bm25s") from None
    ids = list(data.corpus)
    retriever = bm25s.BM25()
    corpus_tokens = bm25s.tokenize(
        [data.corpus[i] for i in ids], stopwords="en", show_progress=False, return_ids=False
    )
    retriever.index(corpus_tokens, show_progress=False)
    qids = list(data.queries)
    q_tokens = bm25s.tokenize(
        [data.queries[q] for q in qids], stopwords="en", show_progress=False, return_ids=False
    )
    found, _scores = retriever.retrieve(
        q_tokens, k=min(depth, len(ids)), show_progress=False, n_threads=1
    )
    return {q: [ids[int(i)] for i in row] for q, row in zip(qids, found, strict=True)}


def run_file_first_stage(
    path: Path, data: Dataset, depth: int
) -> tuple[dict[str, list[str]], list[str]]:
    """Top ``depth`` doc ids per judged query from a TREC run file; and warnings."""
    import ir_measures  # type: ignore[import-untyped, unused-ignore]

    if not path.is_file():
        raise UsageError(f"cannot read {path}: no such file")
    scored: dict[str, list[tuple[float, str]]] = {}
    unknown = 0
    try:
        read_trec_run: Any = ir_measures.read_trec_run  # untyped
        for doc in read_trec_run(str(path)):
            qid, did = str(doc.query_id), str(doc.doc_id)
            if qid not in data.queries:
                continue
            if did not in data.corpus:
                unknown += 1
                continue
            scored.setdefault(qid, []).append((float(doc.score), did))
    except (ValueError, IndexError) as exc:
        raise UsageError(f"{path} is not a TREC run file ({exc})") from None
    warnings = []
    if unknown:
        warnings.append(f"{unknown} document(s) of {path} are not in the corpus; skipped them")
    missing = [q for q in data.queries if q not in scored]
    if missing:
        warnings.append(
            f"{len(missing)} judged query(ies) have no result in {path}; they count as 0 in every "
            "mean"
        )
    # best score first; ties keep the file's order
    out = {
        q: [d for _, d in sorted(pairs, key=lambda p: -p[0])][:depth] for q, pairs in scored.items()
    }
    return {q: out[q] for q in data.queries if q in out}, warnings


# -- evaluation ------------------------------------------------------------------------------
def as_run(order: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Rank-derived scores, so the metric library evaluates exactly this order."""
    return {q: {d: float(len(ds) - i) for i, d in enumerate(ds)} for q, ds in order.items()}


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
            "metric_library": "ir-measures",
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


def _measures(cutoff: int) -> tuple[list[Any], list[str]]:
    try:
        import ir_measures
    except ImportError:
        raise missing_extra("ir-measures") from None
    names = [f"nDCG@{cutoff}", f"RR@{cutoff}", f"R@{cutoff}"]
    return [ir_measures.parse_measure(n) for n in names], names


def _aggregate(measures: list[Any], qrels: Any, run: Any) -> dict[str, float]:
    import ir_measures

    values = ir_measures.calc_aggregate(measures, qrels, run)
    return {str(m): float(values.get(m, 0.0)) for m in measures}


async def _rerank_sweep(
    client: RerankClient,
    data: Dataset,
    first: dict[str, list[str]],
    counts: list[int],
    concurrency: int,
) -> dict[int, tuple[dict[str, list[str]], int | None, int, int]]:
    """For each count: reranked top-c per query, tokens (None if unreported), requests, docs."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(c: int, qid: str) -> tuple[int, str, list[str], int | None, int, int]:
        pool = first[qid][:c]
        if not pool:
            return c, qid, [], 0, 0, 0
        async with semaphore:
            results = await client.arerank(data.queries[qid], [data.corpus[d] for d in pool])
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
) -> EvalReport:
    measures, names = _measures(cutoff)
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
    import ir_measures

    pool_measures = [ir_measures.parse_measure(f"R@{c}") for c in counts]
    first_metrics = _aggregate(measures + pool_measures, qrels, as_run(first))
    reranked = asyncio.run(_rerank_sweep(client, data, first, counts, concurrency))
    sweep = []
    for c in counts:
        top, tokens, requests, documents = reranked[c]
        order = {q: top[q] + first[q][c:] for q in first}
        sweep.append(
            SweepPoint(
                candidates=c,
                metrics=_aggregate(measures, qrels, as_run(order)),
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
def write_trec_run(path: Path, order: Mapping[str, Sequence[str]], tag: str) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for qid, run in as_run(order).items():
            for rank, (did, score) in enumerate(run.items(), start=1):
                f.write(f"{qid} Q0 {did} {rank} {score:g} {tag}\n")


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
        f"means over {n_queries} queries, computed by ir-measures (pytrec_eval): nDCG@{k}, "
        f"RR@{k} (= MRR@{k}), R@{k} (recall); pool R@c = the first stage's Recall@c, the most "
        "any reranking of those c candidates can find."
    )
    if all(p.tokens is None for p in report.sweep):
        print("tokens: n/a (not reported by this client version)")


def plot(report: EvalReport, path: Path) -> None:
    """Quality and cost against the candidate count, as a PNG (matplotlib, Agg, no pyplot)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise missing_extra("matplotlib") from None
    counts = [p.candidates for p in report.sweep]
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax, cost = fig.subplots(1, 2, width_ratios=[3, 2])
    colors = ["tab:blue", "tab:orange", "tab:green"]
    for name, color in zip(report.measures, colors, strict=True):
        ax.plot(
            counts,
            [p.metrics[name] for p in report.sweep],
            marker="o",
            color=color,
            label=f"{name} reranked",
        )
        ax.axhline(
            report.first_stage[name],
            color=color,
            linestyle="--",
            linewidth=1,
            label=f"{name} {report.first_stage_name} alone",
        )
    ax.plot(
        counts,
        [p.pool_recall for p in report.sweep],
        marker="s",
        color="gray",
        linestyle=":",
        label="pool R@c (first stage)",
    )
    ax.set_xscale("log")
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.minorticks_off()
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("candidates reranked per query (c)")
    ax.set_ylabel("mean over queries")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.set_title("quality (ir-measures)")
    positions = list(range(len(counts)))
    if all(p.tokens is not None for p in report.sweep):
        values = [(p.tokens or 0) / max(p.requests, 1) for p in report.sweep]
        cost.set_ylabel("tokens per query")
        cost.set_title("cost: tokens reported by the endpoint")
    else:
        values = [p.documents / max(p.requests, 1) for p in report.sweep]
        cost.set_ylabel("documents reranked per query")
        cost.set_title("cost (tokens not reported)")
    cost.bar(positions, values, color="tab:purple")
    cost.set_xticks(positions, [str(c) for c in counts])
    cost.set_xlabel("candidates reranked per query (c)")
    cost.grid(alpha=0.3, axis="y")
    where = (
        "OFFLINE: embedded lexical test endpoint, not LlamaRank"
        if report.mode.offline
        else f"model {report.mode.model}"
    )
    fig.suptitle(
        f"{report.first_stage_name} + rerank on {report.dataset.path.name} "
        f"({len(report.dataset.queries)} queries) — {where}",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)


def run(args: argparse.Namespace) -> int:
    data = load_beir(Path(args.dataset), args.split, args.max_queries)
    _measures(args.cutoff)  # fail early if ir-measures is missing
    if args.run is None:
        try:
            import bm25s  # noqa: F401
        except ImportError:
            raise missing_extra("bm25s") from None
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise missing_extra("matplotlib") from None
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
        print(json.dumps(result, ensure_ascii=False))
    else:
        print()
        print_table(report)
    return 0
