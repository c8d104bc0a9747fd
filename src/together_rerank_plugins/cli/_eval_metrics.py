"""The measures of ``together-rerank eval``: nDCG@k, RR@k (MRR@k as a mean) and Recall@k,
computed by pytrec_eval (``pytrec-eval-terrier``: Python bindings of trec_eval's C code,
with wheels for CPython 3.10 to 3.13), never by formulas of ours.

Why pytrec_eval directly rather than ir-measures: ir-measures (0.4.3, the latest) parses
measure names with ``ast.Num``, deprecated since Python 3.8 (a DeprecationWarning on 3.12
and 3.13) and removed in 3.14; it computes nDCG and Recall with pytrec_eval anyway.

What we add around it, and why:

- trec_eval's ``recip_rank`` has no cutoff: RR@k is ``recip_rank`` of each list cut to its
  first k documents (the reciprocal rank of the first relevant document within the top k,
  else 0; exactly its definition).
- pytrec_eval reports only the queries of the run: a judged query without candidates counts
  0 in every mean (as ``trec_eval -c``); means are over every judged query.
- Runs are handed over with rank-derived scores (``depth - rank``), so trec_eval's own
  tie-breaking (by document id) never reorders a list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._common import missing_extra

__all__ = ["as_run", "measure_names", "means", "require_metrics", "write_trec_run"]


def require_metrics() -> Any:
    """The ``pytrec_eval`` module, or the one-line error naming the extra that installs it."""
    try:
        import pytrec_eval  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise missing_extra("pytrec_eval") from None
    return pytrec_eval


def measure_names(cutoff: int) -> list[str]:
    return [f"nDCG@{cutoff}", f"RR@{cutoff}", f"R@{cutoff}"]


def as_run(order: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Rank-derived scores, so the metric library evaluates exactly this order."""
    return {q: {d: float(len(ds) - i) for i, d in enumerate(ds)} for q, ds in order.items()}


def means(
    qrels: Mapping[str, Mapping[str, int]],
    order: Mapping[str, Sequence[str]],
    cutoff: int,
    recall_at: Iterable[int] = (),
) -> dict[str, float]:
    """nDCG@cutoff, RR@cutoff, R@cutoff (and R@c for each c of ``recall_at``) of ``order``:
    means over every query of ``qrels``."""
    pytrec_eval = require_metrics()
    judged = {q: dict(docs) for q, docs in qrels.items()}
    ranked = {q: list(docs) for q, docs in order.items() if q in judged and docs}
    cuts = sorted({cutoff, *recall_at})
    names = {f"ndcg_cut.{cutoff}", "recall." + ",".join(str(c) for c in cuts)}
    per_query = pytrec_eval.RelevanceEvaluator(judged, names).evaluate(as_run(ranked))
    top = {q: docs[:cutoff] for q, docs in ranked.items()}
    reciprocal = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(as_run(top))

    def mean(values: Mapping[str, Mapping[str, float]], key: str) -> float:
        return sum(float(values.get(q, {}).get(key, 0.0)) for q in judged) / len(judged)

    out = {
        f"nDCG@{cutoff}": mean(per_query, f"ndcg_cut_{cutoff}"),
        f"RR@{cutoff}": mean(reciprocal, "recip_rank"),
    }
    for c in cuts:
        out[f"R@{c}"] = mean(per_query, f"recall_{c}")
    return out


def write_trec_run(path: Path, order: Mapping[str, Sequence[str]], tag: str) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for qid, run in as_run(order).items():
            for rank, (did, score) in enumerate(run.items(), start=1):
                f.write(f"{qid} Q0 {did} {rank} {score:g} {tag}\n")
