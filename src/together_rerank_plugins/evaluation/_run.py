"""The evaluation itself: one retrieval and one scoring call per query at the deepest depth;
every smaller depth is that list's top-k prefix ordered by the same scores.

That is sound because LlamaRank (and Mxbai) score each document against the query on its
own: a document's score does not depend on the others sent with it, so the ranking of a
prefix is the prefix's documents in the order of the deep call's scores. A sweep therefore
sends, per query, its deepest list once (after the client's dedupe and cache), not once
per depth.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .._client import RerankClient
from .._progress import progress_bar
from .._results import RerankResults
from ._data import EvalDataset
from ._errors import EvaluationError, missing
from ._metrics import (
    bootstrap_ci,
    mean,
    per_query,
    require_metrics,
    set_recall,
    sign_flip_pvalues,
    unique,
)
from ._report import DepthResult, RerankEvaluation, recommend
from ._sources import FirstStage, IdKey, Items, Scorer, adapt_retriever, scorer

__all__ = [
    "DEFAULT_CANDIDATES",
    "aevaluate_reranking",
    "evaluate_reranking",
    "evaluate_first_stage",
]

DEFAULT_CANDIDATES = (5, 10, 15, 20, 25, 30, 40, 50)
DEFAULT_CONCURRENCY = 8


@dataclass
class _Query:
    qid: str
    text: str
    ids: list[str]  # of each retrieved item, in retrieval order
    payloads: list[Any]
    scores: list[float]


def _candidates(candidates: Sequence[int] | int) -> list[int]:
    values = [candidates] if isinstance(candidates, int) else list(candidates)
    if not values or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in values):
        raise EvaluationError(
            f"candidates must be whole numbers >= 1, such as (5, 10, 20, 50); got {candidates!r}"
        )
    return sorted(set(values))


def _check(cutoff: int, keep: float, latency_sample: int, price: float | None, seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise EvaluationError(f"seed must be a whole number >= 0; got {seed!r}")
    if isinstance(cutoff, bool) or not isinstance(cutoff, int) or cutoff < 1:
        raise EvaluationError(f"cutoff must be a whole number >= 1; got {cutoff!r}")
    if not (isinstance(keep, (int, float)) and 0 < keep <= 1):
        raise EvaluationError(f"keep must be in (0, 1], such as 0.95; got {keep!r}")
    if (
        isinstance(latency_sample, bool)
        or not isinstance(latency_sample, int)
        or latency_sample < 0
    ):
        raise EvaluationError(f"latency_sample must be a whole number >= 0; got {latency_sample!r}")
    if price is not None and not (isinstance(price, (int, float)) and math.isfinite(price)):
        raise EvaluationError(f"price_per_million_tokens must be a number; got {price!r}")
    if price is not None and price < 0:
        raise EvaluationError(f"price_per_million_tokens must be >= 0; got {price!r}")


def _reported_tokens(results: RerankResults) -> int | None:
    usage = results.usage
    return usage.total_tokens if usage.total_tokens is not None else usage.prompt_tokens


def _uncached(client: RerankClient) -> RerankClient:
    """The same client without its score cache: a latency call must really be sent."""
    if client.cache is None:
        return client
    clone = client.with_deadline(client.deadline)  # shares the connections, not closed by us
    clone.__dict__.update(cache=None, _store=None)  # settings are read-only once built
    return clone


def _test_endpoint(client: RerankClient) -> Any:
    """The embedded test endpoint this client calls, if it calls one."""
    from ..testing import LexicalRerankEndpoint

    transport = getattr(client._sdk, "_transport", None)
    return transport if isinstance(transport, LexicalRerankEndpoint) else None


async def aevaluate_reranking(
    retriever: Any,
    reranker: Any,
    dataset: EvalDataset,
    *,
    candidates: Sequence[int] | int = DEFAULT_CANDIDATES,
    cutoff: int = 10,
    keep: float = 0.95,
    id_key: IdKey = None,
    latency_sample: int = 20,
    price_per_million_tokens: float | None = None,
    seed: int = 0,
    progress: bool | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> RerankEvaluation:
    """Async :func:`evaluate_reranking` (the retriever's and reranker's async paths)."""
    depths = _candidates(candidates)
    if not isinstance(dataset, EvalDataset):
        raise EvaluationError(
            "dataset must be an EvalDataset: load_dataset(path) or EvalDataset(queries=..., "
            f"qrels=...); got {type(dataset).__name__}"
        )
    first = adapt_retriever(retriever, max(depths))
    return await evaluate_first_stage(
        first,
        reranker,
        dataset,
        candidates=depths,
        cutoff=cutoff,
        keep=keep,
        id_key=id_key,
        latency_sample=latency_sample,
        price_per_million_tokens=price_per_million_tokens,
        seed=seed,
        progress=progress,
        concurrency=concurrency,
    )


async def evaluate_first_stage(
    first: FirstStage,
    reranker: Any,
    dataset: EvalDataset,
    *,
    candidates: Sequence[int] | int = DEFAULT_CANDIDATES,
    cutoff: int = 10,
    keep: float = 0.95,
    id_key: IdKey = None,
    latency_sample: int = 20,
    price_per_million_tokens: float | None = None,
    seed: int = 0,
    progress: bool | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    warnings: Sequence[str] = (),
) -> RerankEvaluation:
    """The evaluation over a :class:`FirstStage` (the library's retrievers, the command
    line's BM25 and run files)."""
    depths = _candidates(candidates)
    _check(cutoff, keep, latency_sample, price_per_million_tokens, seed)
    require_metrics()  # before anything is sent
    try:
        import scipy  # type: ignore[import-untyped, unused-ignore]  # noqa: F401
    except ImportError:
        raise missing("scipy") from None
    score = scorer(reranker)
    found_warnings = list(warnings)
    dataset, unanswerable = with_relevant(dataset)
    if unanswerable:
        found_warnings.append(
            f"{unanswerable} judged queries have no relevant document (every measure is 0 for "
            "them whatever the ranking): left out of every mean, and not sent"
        )
    items = Items(score, id_key, dataset.corpus)
    deepest = max(depths)
    qids = list(dataset.queries)
    judged = {d for grades in dataset.qrels.values() for d, g in grades.items()}

    # -- retrieve everything first: the ids must be checked before anything is sent
    bar = progress_bar(
        sys.stderr.isatty() if progress is None else progress, len(qids) * 2, unit="step"
    )
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def fetch(qid: str) -> list[Any]:
        async with semaphore:
            found = await first.retrieve(qid, dataset.queries[qid])
        bar.update(1)
        return found

    try:
        retrieved = await asyncio.gather(*(fetch(q) for q in qids))
        if not any(retrieved):
            raise EvaluationError(
                f"the retriever returned nothing for any of the {len(qids)} judged queries: "
                "check that it holds the documents (an index built, the right collection)"
            )
        items.choose([i for found in retrieved for i in found], judged)
        # an item without an id is counted as not relevant, under an id no judgment has
        # (printable: trec_eval's C code would cut an id at a NUL byte)
        unnamed = "(no id) "
        while any(d.startswith(unnamed) for d in judged):
            unnamed = "(" + unnamed
        without_id = 0

        def ids(found: list[Any]) -> list[str]:
            nonlocal without_id
            out = []
            for n, item in enumerate(found[:deepest]):
                did = items.doc_id(item)
                if did is None:
                    without_id += 1
                    did = f"{unnamed}{n}"
                out.append(did)
            return out

        queries = [
            _Query(
                qid,
                dataset.queries[qid],
                ids(found),
                [items.payload(i) for i in found[:deepest]],
                [],
            )
            for qid, found in zip(qids, retrieved, strict=True)
        ]
        if without_id:
            found_warnings.append(
                f"{without_id} retrieved items have no id ({items.chosen or items.id_key!s}): "
                "counted as not relevant; pass id_key= if they have one"
            )

        # -- one scoring call per query over its deepest list
        totals = {"requests": 0, "documents": 0, "hits": 0}
        reported: list[int | None] = []

        async def rank(q: _Query) -> None:
            if q.payloads:
                plan = score.client.plan(q.text, q.payloads, rank_fields=score.rank_fields)
                async with semaphore:
                    results = await score.client.aexecute(plan)
                if results.fallback:  # the first stage's order, not a ranking: not scored
                    raise EvaluationError(
                        f"the reranker failed on query {q.qid!r} and fell back to the first "
                        f"stage's order ({results.error}), which is not the reranker's ranking: "
                        "nothing to evaluate. Fix the cause and run again (a cache keeps what "
                        "was scored)"
                    ) from results.error
                if results.failed_over:  # another endpoint's scores, maybe another model's
                    raise EvaluationError(
                        f"the reranker failed on query {q.qid!r} and the failover endpoint "
                        f"{results.served_by} scored it: its scores are not the evaluated "
                        "reranker's (one evaluation would mix two rerankers). Fix the primary, "
                        "or evaluate the failover's client on its own"
                    )
                q.scores = plan.position_scores(results)
                totals["requests"] += results.requests
                totals["documents"] += results.documents_sent
                totals["hits"] += results.cache_hits
                if results.documents_sent:
                    reported.append(_reported_tokens(results))
            bar.update(1)

        await asyncio.gather(*(rank(q) for q in queries))
    finally:
        bar.close()

    latency = await _latency(score, queries, depths, cutoff, latency_sample, seed)
    tokens = None if not reported or None in reported else sum(t or 0 for t in reported)
    return _report(
        first,
        score,
        dataset,
        queries,
        depths,
        cutoff=cutoff,
        keep=keep,
        seed=seed,
        price=price_per_million_tokens,
        totals=totals,
        tokens=tokens,
        latency=latency,
        warnings=found_warnings,
    )


def with_relevant(dataset: EvalDataset) -> tuple[EvalDataset, int]:
    """The judged queries with a relevant document (grade >= 1), and how many had none:
    nDCG, RR and recall are undefined for those (trec_eval's 0 whatever the ranking), so
    counting them would dilute every mean and the first stage's recall."""
    keep = [q for q, grades in dataset.qrels.items() if any(g >= 1 for g in grades.values())]
    if len(keep) == len(dataset.qrels):
        return dataset, 0
    if not keep:
        raise EvaluationError(
            f"no judged query of {dataset.name} has a relevant document (a grade >= 1): "
            "nothing to measure"
        )
    subset = EvalDataset(
        {q: dataset.queries[q] for q in keep},
        {q: dataset.qrels[q] for q in keep},
        dataset.corpus,
        dataset.name,
        dataset.path,
        dataset.qrels_file,
    )
    return subset, len(dataset.qrels) - len(keep)


@dataclass
class _Latency:
    queries: int
    documents: int
    ms: dict[int, list[float]]
    tokens: dict[int, list[int | None]]
    fallbacks: int = 0
    failovers: int = 0


async def _latency(
    score: Scorer,
    queries: list[_Query],
    depths: list[int],
    cutoff: int,
    sample: int,
    seed: int,
) -> _Latency:
    """Time real, uncached calls at each depth on a seeded sample of queries, one at a time
    (an unloaded endpoint's added latency, as one user's request sees it)."""
    pool = [q for q in queries if q.payloads]
    chosen = random.Random(seed).sample(pool, min(sample, len(pool)))
    client = _uncached(score.client)
    out = _Latency(len(chosen), 0, {c: [] for c in depths}, {c: [] for c in depths})
    for c in depths:
        for q in chosen:
            start = time.perf_counter()
            plan = client.plan(
                q.text, q.payloads[:c], top_n=min(cutoff, c), rank_fields=score.rank_fields
            )
            results = await client.aexecute(plan)
            elapsed = (time.perf_counter() - start) * 1000
            out.documents += results.documents_sent
            if results.fallback:  # the failure's time, not the reranker's: not timed
                out.fallbacks += 1
                continue
            if results.failed_over:  # another endpoint's latency: not timed
                out.failovers += 1
                continue
            out.ms[c].append(elapsed)
            out.tokens[c].append(_reported_tokens(results))
    return out


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return float(np.percentile(values, p))


def _report(
    first: FirstStage,
    score: Scorer,
    dataset: EvalDataset,
    queries: list[_Query],
    depths: list[int],
    *,
    cutoff: int,
    keep: float,
    seed: int,
    price: float | None,
    totals: dict[str, int],
    tokens: int | None,
    latency: _Latency,
    warnings: Sequence[str],
) -> RerankEvaluation:
    qrels = dataset.qrels
    deepest = max(depths)
    first_order = {q.qid: unique(q.ids) for q in queries if q.ids}
    base = per_query(qrels, first_order, cutoff)
    notes: list[str] = []
    found_warnings = list(warnings)
    if latency.failovers:
        found_warnings.append(
            f"{latency.failovers} of the latency sample's calls failed and a failover "
            "endpoint answered them: not timed; the latency shown is the primary's"
        )
    if latency.fallbacks:
        found_warnings.append(
            f"{latency.fallbacks} of the latency sample's calls failed and fell back "
            "(on_error='fallback'): not timed; the latency shown is of the calls that ranked"
        )
    longest = max((len(q.ids) for q in queries), default=0)
    short_deepest = sum(1 for q in queries if len(q.ids) < deepest)
    if first.deepened is None and short_deepest:
        found_warnings.append(
            f"the retriever's depth could not be set ({first.why_not}): {short_deepest} of "
            f"{len(queries)} queries returned fewer than {deepest} candidates (at most "
            f"{longest}); deeper depths rerank what there is"
        )
    elif short_deepest:
        found_warnings.append(
            f"{short_deepest} of {len(queries)} queries have fewer than {deepest} candidates "
            f"(at most {longest}): the index holds fewer matching documents, or the "
            "retriever caps what it returns"
        )

    # tokens per document of the scoring pass, for estimates where nothing was measured
    per_doc = None if tokens is None or not totals["documents"] else tokens / totals["documents"]
    results: list[DepthResult] = []
    orders: dict[int, dict[str, list[str]]] = {}
    gains: dict[int, list[float]] = {}
    relevant: dict[int, list[float]] = {}
    other: dict[int, list[float]] = {}
    for c in depths:
        order: dict[str, list[str]] = {}
        rel_scores: list[float] = []
        oth_scores: list[float] = []
        for q in queries:
            if not q.ids:
                continue
            top = sorted(range(min(c, len(q.ids))), key=lambda i: -q.scores[i])  # stable
            reranked = unique([q.ids[i] for i in top])
            order[q.qid] = unique(reranked + q.ids[c:])
            best_score: dict[str, float] = {}
            for i in top:
                best_score.setdefault(q.ids[i], q.scores[i])
            grades = qrels.get(q.qid, {})
            for rank, did in enumerate(reranked):
                if grades.get(did, 0) >= 1:
                    if rank < cutoff:
                        rel_scores.append(best_score[did])
                else:
                    oth_scores.append(best_score[did])
        measured = per_query(qrels, order, cutoff)
        pools = set_recall(qrels, {q.qid: q.ids[:c] for q in queries if q.ids})
        per_gain = [measured["ndcg"][q] - base["ndcg"][q] for q in qrels]
        ci = bootstrap_ci(per_gain, seed=seed)
        other_ci = {
            key: bootstrap_ci([measured[key][q] - base[key][q] for q in qrels], seed=seed)
            for key in ("mrr", "recall")
        }
        sampled = latency.tokens.get(c, [])
        estimated = False
        tok: float | None = None
        if sampled and None not in sampled:
            tok = sum(t or 0 for t in sampled) / len(sampled)
        elif per_doc is not None:
            docs = [min(c, len(q.ids)) for q in queries if q.ids]
            tok = per_doc * sum(docs) / max(len(docs), 1)
            estimated = True
        cost = None if tok is None or price is None else tok * price / 1e6 * 1000
        results.append(
            DepthResult(
                candidates=c,
                ndcg=mean(measured["ndcg"]),
                mrr=mean(measured["mrr"]),
                recall=mean(measured["recall"]),
                pool_recall=mean(pools),
                gain=sum(per_gain) / len(per_gain),
                gain_ci=ci,
                tokens_per_query=tok,
                tokens_estimated=estimated,
                latency_p50_ms=_percentile(latency.ms.get(c, []), 50),
                latency_p95_ms=_percentile(latency.ms.get(c, []), 95),
                cost_per_1000_queries=cost,
                short_queries=sum(1 for q in queries if len(q.ids) < c),
                changed=sum(1 for g in per_gain if g != 0),
                mrr_gain_ci=other_ci["mrr"],
                recall_gain_ci=other_ci["recall"],
            )
        )
        orders[c] = order
        gains[c] = per_gain
        relevant[c] = rel_scores
        other[c] = oth_scores
    # the chance of each gain, allowing for the depths tried (the best of them is claimed)
    chance = sign_flip_pvalues([gains[d.candidates] for d in results], seed=seed)
    results = [replace(d, gain_p=p) for d, p in zip(results, chance, strict=True)]

    endpoint = _test_endpoint(score.client)
    offline = endpoint is not None
    if offline:
        from ..testing import lexical_scores

        if endpoint.scorer is lexical_scores:
            found_warnings.append(
                "the test endpoint's default scorer weighs words by the documents of each "
                "request, so its scores are not pointwise like LlamaRank's and the smaller "
                "depths are only approximate: use LexicalRerankEndpoint("
                "scorer=pointwise_lexical_scores)"
            )
    who = (
        "the embedded test endpoint (LexicalRerankEndpoint: word overlap, not LlamaRank)"
        if offline
        else f"{score.client.model} @ {score.client.base_url}"
    )
    if latency.queries:
        notes.append(
            f"measured: latency p50/p95 of {latency.queries} uncached calls per depth, one at "
            "a time" + ("" if offline else " (this machine's network included)")
        )
    else:
        notes.append("latency: not measured (latency_sample=0)")
    if any(d.tokens_estimated for d in results):
        notes.append(
            "tokens/query (and the cost) marked ~ are estimated from the scoring pass's "
            "reported tokens per document, not measured at that depth"
        )
    elif all(d.tokens_per_query is None for d in results) and not (
        totals["documents"] or latency.documents
    ):
        notes.append("tokens: none measured (nothing was sent: every score came from the cache)")
    elif all(d.tokens_per_query is None for d in results):
        notes.append("tokens: not reported by the endpoint")
    if price is None:
        notes.append("cost: pass price_per_million_tokens= to see it")
    n_judged = len(qrels)
    rec = recommend(
        results,
        cutoff=cutoff,
        keep=keep,
        queries=n_judged,
        relevant_scores=relevant,
        model=None if offline else score.client.model,  # the test endpoint's is no advice
        warnings=found_warnings,
        gains=gains,
        seed=seed,
    )
    return RerankEvaluation(
        cutoff=cutoff,
        queries=n_judged,
        first_stage={k: mean(v) for k, v in base.items()},
        depths=results,
        recommendation=rec,
        first_stage_name=first.name,
        queries_with_candidates=sum(1 for q in queries if q.ids),
        dataset=dataset.name,
        scorer=who,
        offline=offline,
        keep=keep,
        seed=seed,
        requests=totals["requests"],
        documents_sent=totals["documents"],
        cache_hits=totals["hits"],
        tokens=tokens,
        latency_queries=latency.queries,
        latency_documents_sent=latency.documents,
        retriever_depth=first.deepened or f"not set: {first.why_not}",
        warnings=found_warnings,
        notes=notes,
        first_order=first_order,
        orders=orders,
        gains=gains,
        relevant_scores=relevant,
        other_scores=other,
    )


def evaluate_reranking(
    retriever: Any,
    reranker: Any,
    dataset: EvalDataset,
    *,
    candidates: Sequence[int] | int = DEFAULT_CANDIDATES,
    cutoff: int = 10,
    keep: float = 0.95,
    id_key: IdKey = None,
    latency_sample: int = 20,
    price_per_million_tokens: float | None = None,
    seed: int = 0,
    progress: bool | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> RerankEvaluation:
    """Does reranking pay off on this retriever and data, and how deep should it retrieve?

    Each judged query of ``dataset`` is retrieved once at ``max(candidates)`` (the
    retriever deepened on a copy: LlamaIndex ``similarity_top_k``, LangChain
    ``search_kwargs["k"]``, a BM25 retriever's ``k``/``top_k``; the object you pass is never
    changed) and its candidates are scored once by ``reranker`` (either adapter's
    ``TogetherRerank`` or a ``RerankClient``, with its own configuration: endpoint, model,
    cache, deadline). Every depth of ``candidates`` is the top-k prefix of that list,
    ordered by the same scores.

    Per depth: nDCG/MRR/Recall@``cutoff`` (pytrec_eval), the first stage's recall at that
    depth, the nDCG gain over the first stage with a 95% paired bootstrap interval
    (``seed``), latency p50/p95 of ``latency_sample`` real uncached calls (0: off), tokens
    per query and, with ``price_per_million_tokens``, the cost per 1,000 queries. The
    ``recommendation`` picks the smallest depth whose gain is at least ``keep`` of the best.

    Documents are matched to judgments by ``id_key`` (a metadata key or attribute name, or
    a function item -> id); by default LlamaIndex ``ref_doc_id``/``node_id``, LangChain
    ``Document.id``/``metadata["id"]``, whichever matches the dataset. In a running event
    loop (a notebook) it runs on a worker thread; ``await aevaluate_reranking(...)`` there
    instead to stay on your loop.
    """

    def run() -> RerankEvaluation:
        return asyncio.run(
            aevaluate_reranking(
                retriever,
                reranker,
                dataset,
                candidates=candidates,
                cutoff=cutoff,
                keep=keep,
                id_key=id_key,
                latency_sample=latency_sample,
                price_per_million_tokens=price_per_million_tokens,
                seed=seed,
                progress=progress,
                concurrency=concurrency,
            )
        )

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()
