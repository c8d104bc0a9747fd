"""``together-rerank eval DATASET``: does reranking help this search, how much, and how deep
should it retrieve?

The command only parses arguments and prints: the evaluation is the library's
(:mod:`together_rerank_plugins.evaluation`: data loading, the one scoring pass, metrics,
intervals, the recommendation and the plot). The first stage is BM25 over the dataset's
corpus (``bm25s``), a TREC run file (``--run``), or your own retriever (``--retriever
module:attribute``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from .._console import json_line
from ..evaluation import EvalDataset, EvaluationError, RerankEvaluation, load_dataset
from ..evaluation._data import SAMPLE, bm25_rankings, run_file_rankings
from ..evaluation._metrics import require_metrics
from ..evaluation._plot import FORMATS_TEXT, check_plot_path
from ..evaluation._run import (
    DEFAULT_CANDIDATES,
    DEFAULT_CONCURRENCY,
    evaluate_first_stage,
    with_relevant,
)
from ..evaluation._sources import FirstStage, adapt_retriever, ranked_first_stage
from ._common import (
    CliError,
    UsageError,
    add_config_flags,
    add_output_flags,
    check_output_file,
    check_output_folder,
    finite_float,
    make_client,
    missing_extra,
    non_negative_int,
    positive_int,
)
from ._progress import add_progress_flag

__all__ = ["add_parser", "run"]

DEFAULT_CUTOFF = 10
#: optional packages the evaluation imports: a missing one is the `[cli]` extra's
EXTRA_MODULES = ("bm25s", "pytrec_eval", "matplotlib", "scipy", "numpy")

DESCRIPTION = f"""\
Measure what reranking buys on your data, and which depth to retrieve: nDCG@10, MRR@10 and
Recall@10 for the first stage alone and reranked over its top 5, 10, ..., 50 candidates,
with 95% bootstrap intervals of the gain, tokens, latency and cost per depth, and a
recommendation with settings to paste for LlamaIndex and LangChain; as a table (or --json)
and a plot (--plot sweep.png, .jpg, .pdf, .svg).

DATASET: a BEIR-format folder, a .jsonl of judged queries ({{"query", "relevant"}} per line),
LlamaIndex's question-generator .json, or the word `{SAMPLE}` (a small synthetic dataset in
the package). The first stage is BM25 (bm25s) over the corpus, your retriever's TREC run
file (--run), or your retriever itself (--retriever module:attribute). One pass: each query
is retrieved and scored once at the deepest depth; smaller depths reuse those scores.
Metrics by pytrec_eval (trec_eval's C code); a progress bar on a terminal."""


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


def _fraction(value: str) -> float:
    number = finite_float(value)
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], such as 0.95; got {value}")
    return number


def _price(value: str) -> float:
    number = finite_float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {value}")
    return number


def add_parser(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "eval",
        help="is reranking worth it on my data, and how deep should I retrieve?",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dataset",
        metavar="DATASET",
        help=f"a BEIR folder, a .jsonl of judged queries, LlamaIndex's .json, or `{SAMPLE}`",
    )
    parser.add_argument(
        "--split",
        help="which qrels/<split>.tsv to evaluate (default: test, or the only one there is)",
    )
    first = parser.add_mutually_exclusive_group()
    first.add_argument(
        "--run",
        metavar="FILE",
        help="first stage from this TREC run file (qid Q0 docid rank score tag) instead of BM25",
    )
    first.add_argument(
        "--retriever",
        metavar="MODULE:ATTRIBUTE",
        help="first stage: your LlamaIndex or LangChain retriever, or a function query -> "
        "list, or a function returning one (imported from MODULE, the current folder first); "
        "deepened on a copy",
    )
    parser.add_argument(
        "--id-key",
        metavar="NAME",
        help="with --retriever: the metadata key or attribute holding the dataset's document "
        "ids (default: LlamaIndex ref_doc_id/node_id, LangChain Document.id/metadata['id'])",
    )
    parser.add_argument(
        "--candidates",
        type=_candidates,
        default=list(DEFAULT_CANDIDATES),
        metavar="C1,C2,...",
        help="depths to evaluate (default " + ",".join(map(str, DEFAULT_CANDIDATES)) + ")",
    )
    parser.add_argument(
        "--cutoff",
        type=positive_int,
        default=DEFAULT_CUTOFF,
        metavar="K",
        help=f"cutoff of nDCG@K, RR@K and R@K; the recommended top_n (default {DEFAULT_CUTOFF})",
    )
    parser.add_argument(
        "--keep",
        type=_fraction,
        default=0.95,
        metavar="F",
        help="recommend the smallest depth whose gain is at least F of the best (default 0.95)",
    )
    parser.add_argument(
        "--latency-sample",
        type=non_negative_int,
        default=20,
        metavar="N",
        help="time N real uncached calls per depth (default 20; 0: no latency)",
    )
    parser.add_argument(
        "--price-per-million-tokens",
        type=_price,
        metavar="USD",
        help="the model's price, to report the cost per 1,000 queries",
    )
    parser.add_argument(
        "--cache",
        metavar="DIR",
        help="keep scores in DIR (LangChain's LocalFileStore): an interrupted or repeated "
        "evaluation re-sends nothing already scored",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the bootstrap and latency sample (0)",
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
        help=f"write the plot here, in the format its extension names ({FORMATS_TEXT})",
    )
    parser.add_argument(
        "--save-runs",
        metavar="DIR",
        help="write the evaluated rankings as TREC run files into DIR",
    )
    add_progress_flag(parser)
    add_config_flags(parser, ranking=False)
    add_output_flags(parser)
    parser.set_defaults(handler=run)


# -- inputs ----------------------------------------------------------------------------------
def load_retriever(spec: str) -> Any:
    """``module:attribute``: the object, or what a function without arguments returns."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--retriever {spec}: expected MODULE:ATTRIBUTE, such as app:retriever")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--retriever {spec}: cannot import {module_name} ({exc})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"--retriever {spec}: {module_name} has no {attr}")
        obj = getattr(obj, part)
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        params = [
            p
            for p in inspect.signature(obj).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not params:  # a factory: the retriever is what it returns
            obj = obj()
    return obj


def _first_stage(args: argparse.Namespace, data: EvalDataset) -> tuple[FirstStage, list[str]]:
    if args.retriever is not None:  # deepened as the library does: to the deepest depth
        return adapt_retriever(load_retriever(args.retriever), max(args.candidates)), []
    depth = max(max(args.candidates), args.cutoff)
    if data.corpus is None:
        raise UsageError(
            f"{args.dataset} has no corpus: pass --retriever MODULE:ATTRIBUTE (your retriever "
            "holds the documents), or use a BEIR folder"
        )
    if args.run is not None:
        rankings, warnings = run_file_rankings(Path(args.run), data, depth)
        return ranked_first_stage(f"run {Path(args.run).name}", rankings), warnings
    return ranked_first_stage("BM25", bm25_rankings(data, depth)), []


def _cache(folder: str) -> Any:
    path = Path(folder)
    check_output_folder(path, "--cache scores")
    try:
        from langchain_classic.storage import LocalFileStore
    except ImportError:
        from .._install import install_hint

        raise CliError(
            f"--cache uses LangChain's LocalFileStore: run {install_hint('langchain')}"
        ) from None
    path.mkdir(parents=True, exist_ok=True)
    return LocalFileStore(path)


def _describe(data: EvalDataset, given: str) -> str:
    if data.path is None:
        return f"dataset: {data.name}"
    shown = given if given == SAMPLE else str(data.path)  # not where the package lives
    kind = "BEIR" if data.path.is_dir() else data.path.suffix.lstrip(".")
    split = f"; {data.qrels_file.name}" if data.qrels_file and data.path.is_dir() else ""
    size = "" if data.corpus is None else f"{len(data.corpus)} documents, "
    return f"dataset: {shown} ({kind}{split}): {size}{len(data.queries)} judged queries"


def _prepare(args: argparse.Namespace) -> tuple[EvalDataset, FirstStage, list[str]]:
    data = load_dataset(args.dataset, split=args.split, max_queries=args.max_queries)
    require_metrics()  # fail early if pytrec_eval is missing
    for module in ("scipy", *(["matplotlib"] if args.plot is not None else [])):
        importlib.import_module(module)
    if args.run is None and args.retriever is None:
        importlib.import_module("bm25s")
    # every output is checked before anything is sent (a sweep can take minutes)
    if args.plot is not None:
        try:
            check_plot_path(Path(args.plot))
        except EvaluationError as exc:
            raise UsageError(f"--{exc}") from None
        check_output_folder(Path(args.plot).parent, "the plot")
        if Path(args.plot).exists():
            check_output_file(Path(args.plot), "the plot")
    if args.save_runs is not None:
        check_output_folder(Path(args.save_runs), "--save-runs runs")
    first, warnings = _first_stage(args, data)
    return data, first, warnings


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except EvaluationError as exc:
        raise UsageError(str(exc)) from None
    except ImportError as exc:
        if exc.name in EXTRA_MODULES:
            raise missing_extra(exc.name) from None
        raise


def _run(args: argparse.Namespace) -> int:
    data, first, input_warnings = _prepare(args)
    options: dict[str, Any] = {}
    if args.cache is not None:
        options["cache"] = _cache(args.cache)
    from ..testing import pointwise_lexical_scores

    # offline, the test endpoint's pointwise scorer: the one pass reuses a deep call's scores
    # for every smaller depth, which is sound only for a scorer that scores each document on
    # its own (as LlamaRank does)
    client, mode = make_client(args, offline_scorer=pointwise_lexical_scores, **options)
    out = sys.stderr if args.json else sys.stdout
    print(mode.header, file=out, flush=True)
    print(_describe(data, args.dataset), file=out)
    deepest = max(args.candidates)
    scored = len(with_relevant(data)[0].queries)  # queries without a relevant document: none
    timed = min(args.latency_sample, scored)  # a sample of the scored queries, at most all
    print(
        f"first stage: {first.name}, top {deepest} per query; rerank: model {mode.model}, "
        f"depths {','.join(map(str, args.candidates))} in one pass: {scored} "
        f"calls (at most {scored * deepest:,} documents), plus "
        f"{timed} timed calls per depth; concurrency {args.concurrency}",
        file=out,
        flush=True,
    )
    with client:
        report = asyncio.run(
            evaluate_first_stage(
                first,
                client,
                data,
                candidates=args.candidates,
                cutoff=args.cutoff,
                keep=args.keep,
                id_key=args.id_key,
                latency_sample=args.latency_sample,
                price_per_million_tokens=args.price_per_million_tokens,
                seed=args.seed,
                progress=not args.no_progress,
                concurrency=args.concurrency,
                warnings=input_warnings,
            )
        )
    if mode.test_endpoint:  # served on loopback: the library sees a URL, the CLI asked it
        report.scorer = (
            f"the embedded test endpoint at {client.base_url} (word overlap, not LlamaRank)"
        )
    if args.json:  # in the table otherwise
        for warning in report.recommendation.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    if args.save_runs is not None:
        saved = report.save_runs(args.save_runs)
        print(f"runs: {len(saved)} TREC run files in {args.save_runs}", file=out)
    if args.plot is not None:
        report.plot(args.plot)
        print(f"plot: {args.plot}", file=out)
    if args.json:
        print(json_line(_json(report, args, data, mode.as_json())))
    else:
        print()
        print(report.table())
    return 0


def _json(
    report: RerankEvaluation, args: argparse.Namespace, data: EvalDataset, mode: dict[str, Any]
) -> dict[str, Any]:
    """The library's ``as_dict()``, with what the command line adds (mode, paths)."""
    out = report.as_dict()
    out.update(mode)
    out["dataset"] = args.dataset
    out["qrels"] = str(data.qrels_file) if data.qrels_file is not None else None
    out["documents"] = None if data.corpus is None else len(data.corpus)
    out["plot"] = args.plot
    return out
