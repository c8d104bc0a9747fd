"""The measures of an evaluation, per query: nDCG@k, RR@k (MRR@k as a mean) and Recall@k,
computed by pytrec_eval (``pytrec-eval-terrier``: bindings of trec_eval's C code), never by
formulas of ours; and the 95% paired bootstrap interval of a mean gain (scipy).

Why pytrec_eval directly rather than ir-measures: ir-measures (0.4.3, the latest) parses
measure names with ``ast.Num``, deprecated since Python 3.8 and removed in 3.14; it computes
nDCG and Recall with pytrec_eval anyway.

What we add around it, and why:

- trec_eval's ``recip_rank`` has no cutoff: RR@k is ``recip_rank`` of each list cut to its
  first k documents (exactly its definition).
- pytrec_eval reports only the queries of the run: a judged query without candidates counts
  0 (as ``trec_eval -c``).
- Runs are handed over with rank-derived scores (``depth - rank``), so trec_eval's own
  tie-breaking (by document id) never reorders a list; a document id is kept at its first
  (best) place only.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._errors import missing

__all__ = [
    "as_run",
    "bootstrap_ci",
    "per_query",
    "sign_flip_pvalues",
    "require_metrics",
    "set_recall",
    "unique",
    "write_trec_run",
]

#: resamples of the bootstrap (scipy's default)
N_RESAMPLES = 9999
#: resamples (and jackknife samples) scipy holds at once: without a batch it holds all
#: 9,999 x n resamples and BCa's n x (n-1) jackknife (~450 MB at 4,000 queries); the
#: interval is the same either way (the same random stream, drawn in batches)
BATCH = 256


def require_metrics() -> Any:
    """The ``pytrec_eval`` module, or the one-line error naming the extra that installs it."""
    try:
        import pytrec_eval  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise missing("pytrec_eval") from None
    return pytrec_eval


def unique(ids: Sequence[str]) -> list[str]:
    """``ids`` with each one at its first place only."""
    return list(dict.fromkeys(ids))


def as_run(order: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Rank-derived scores, so the metric library evaluates exactly this order."""
    out = {}
    for q, ds in order.items():
        docs = unique(ds)
        out[q] = {d: float(len(docs) - i) for i, d in enumerate(docs)}
    return out


def per_query(
    qrels: Mapping[str, Mapping[str, int]], order: Mapping[str, Sequence[str]], cutoff: int
) -> dict[str, dict[str, float]]:
    """``{"ndcg"|"mrr"|"recall": {query id: value at cutoff}}`` of ``order`` for every query
    of ``qrels`` (0 for a query without results)."""
    pytrec_eval = require_metrics()
    judged = {q: dict(docs) for q, docs in qrels.items()}
    ranked = {q: unique(docs) for q, docs in order.items() if q in judged and docs}
    names = {f"ndcg_cut.{cutoff}", f"recall.{cutoff}"}
    values = pytrec_eval.RelevanceEvaluator(judged, names).evaluate(as_run(ranked))
    top = {q: docs[:cutoff] for q, docs in ranked.items()}
    reciprocal = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(as_run(top))

    def column(found: Mapping[str, Mapping[str, float]], key: str) -> dict[str, float]:
        return {q: float(found.get(q, {}).get(key, 0.0)) for q in judged}

    return {
        "ndcg": column(values, f"ndcg_cut_{cutoff}"),
        "mrr": column(reciprocal, "recip_rank"),
        "recall": column(values, f"recall_{cutoff}"),
    }


def set_recall(
    qrels: Mapping[str, Mapping[str, int]], pools: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Recall of each query's whole pool (trec_eval's recall at the pool's length)."""
    depth = max([len(unique(p)) for p in pools.values()] + [1])
    return per_query(qrels, pools, depth)["recall"]


def mean(values: Mapping[str, float]) -> float:
    return sum(values.values()) / len(values) if values else 0.0


def bootstrap_ci(
    values: Sequence[float], *, seed: int, confidence: float = 0.95
) -> tuple[float, float] | None:
    """The ``confidence`` bootstrap interval (BCa, scipy) of the mean of ``values`` (per-query
    paired differences): ``[g, g]`` when every value is ``g``, None for fewer than 2."""
    if len(values) < 2:
        return None
    if max(values) == min(values):
        g = sum(values) / len(values)  # as the gain itself is computed (same rounding)
        return (g, g)
    try:
        import numpy as np
        from scipy import stats  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise missing("scipy") from None
    data = np.asarray(values, dtype=float)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # BCa's degenerate cases (a near-constant sample) give NaN and a warning: fall
            # back to the percentile interval then
            warnings.simplefilter("ignore")
            res = stats.bootstrap(
                (data,),
                np.mean,
                confidence_level=confidence,
                n_resamples=N_RESAMPLES,
                method=method,
                rng=np.random.default_rng(seed),
                batch=BATCH,
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return (low, high)
    return None  # pragma: no cover - percentile is finite for finite data


def sign_flip_pvalues(
    gains: Sequence[Sequence[float]], *, seed: int, resamples: int = N_RESAMPLES
) -> list[float]:
    """One-sided p-values that each depth's mean gain is above zero, adjusted for having
    tried every depth of the sweep (``gains[j]``: the per-query gains of depth ``j``, every
    depth in the same query order).

    A paired randomization test (Fisher-Pitman): if the reranker were no better than the
    first stage, each query's gain would be as likely negated, at every depth at once (one
    ranking against the other, for that query). So the observed means are compared with
    those of ``resamples`` seeded sign flips, through the largest mean over the depths
    (single-step max-T, Westfall and Young): a depth's p is the share of flips whose best
    depth does at least as well as it did, which stays valid when the best of several
    depths is the one claimed. Exact in its assumptions, whatever the number of queries or
    of changed ones (5 changes of the same sign cannot go below 2 x 0.5^5 / 2 = 0.031)."""
    import numpy as np

    matrix = np.asarray(gains, dtype=float).T  # queries x depths
    if matrix.size == 0:
        return [1.0] * len(gains)
    moved = matrix[np.any(matrix != 0, axis=1)]  # an unchanged query flips to itself
    n = matrix.shape[0]
    observed = matrix.mean(axis=0)
    if len(moved) == 0:
        return [1.0] * len(gains)
    rng = np.random.default_rng(seed)
    at_least = np.zeros(matrix.shape[1])
    tolerance = 1e-12 * max(1.0, float(np.abs(matrix).max()))
    done = 0
    while done < resamples:
        size = min(BATCH, resamples - done)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, len(moved)))
        best = (signs @ moved / n).max(axis=1)
        at_least += (best[:, None] >= observed[None, :] - tolerance).sum(axis=0)
        done += size
    return [float(p) for p in (1 + at_least) / (resamples + 1)]


def write_trec_run(path: Path, order: Mapping[str, Sequence[str]], tag: str) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for qid, run in as_run(order).items():
            for rank, (did, score) in enumerate(run.items(), start=1):
                f.write(f"{qid} Q0 {did} {rank} {score:g} {tag}\n")
