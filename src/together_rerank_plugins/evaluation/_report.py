"""The result of an evaluation (:class:`RerankEvaluation`), the recommendation rule
(:func:`recommend`) and the ways to look at them: a table, a JSON-safe dict, a pandas
frame, a plot, a notebook rendering."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config import DEFAULT_MODEL
from ._metrics import bootstrap_ci, write_trec_run

__all__ = [
    "ALPHA",
    "LOW_POOL_RECALL",
    "MIN_CHANGED",
    "DepthResult",
    "Recommendation",
    "RerankEvaluation",
    "recommend",
    "score_threshold",
]

#: Below this first-stage recall at the recommended depth, the report warns that the first
#: stage, not the reranker, is the limit.
LOW_POOL_RECALL = 0.6

#: The fewest queries the reranker must change (a gain other than 0) before an interval of
#: the gain is taken as evidence. A bootstrap interval never reaches past the data: when
#: every changed query gained, it excludes zero however few they are, while an exact sign
#: test needs 6 changes of the same sign to be significant at 95% (2 x 0.5^6 = 0.031; with 5,
#: 0.0625).
MIN_CHANGED = 6

#: The one-sided level a gain must reach to count as evidence: the paired sign-flip test's
#: p, adjusted for the depths tried, below this (the side of a 95% interval).
ALPHA = 0.025

#: A first stage at least this good (mean nDCG) leaves a reranker almost nothing to gain.
CEILING = 0.98


@dataclass(frozen=True)
class DepthResult:
    """One depth of the sweep: the reranker over the first stage's top ``candidates``.

    Quality figures are means over the judged queries at the cutoff; ``gain`` is the
    reranked nDCG minus the first stage's, ``gain_ci`` its 95% paired bootstrap interval.
    ``tokens_per_query`` is measured (the endpoint's reported usage on the latency sample)
    unless ``tokens_estimated``; None where a figure was not measured."""

    candidates: int
    ndcg: float
    mrr: float
    recall: float
    pool_recall: float
    gain: float
    gain_ci: tuple[float, float] | None
    tokens_per_query: float | None = None
    tokens_estimated: bool = False
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    cost_per_1000_queries: float | None = None
    short_queries: int = 0
    #: queries whose nDCG the reranker changed (None: not known, e.g. constructed data)
    changed: int | None = None
    #: one-sided p of the nDCG gain being above zero, by a paired sign-flip test adjusted
    #: for the depths of the sweep (``sign_flip_pvalues``; None: not computed)
    gain_p: float | None = None
    #: the 95% paired bootstrap intervals of the MRR and Recall gains over the first stage
    mrr_gain_ci: tuple[float, float] | None = None
    recall_gain_ci: tuple[float, float] | None = None

    def gain_of(self, measure: str, first_stage: Mapping[str, float]) -> float:
        """The gain of ``measure`` (``ndcg``, ``mrr``, ``recall``) over the first stage."""
        return self.gain if measure == "ndcg" else getattr(self, measure) - first_stage[measure]

    def interval_of(self, measure: str) -> tuple[float, float] | None:
        """The 95% interval of the gain of ``measure``."""
        return self.gain_ci if measure == "ndcg" else getattr(self, f"{measure}_gain_ci")

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "ndcg": self.ndcg,
            "mrr": self.mrr,
            "recall": self.recall,
            "pool_recall": self.pool_recall,
            "gain": self.gain,
            "gain_ci": None if self.gain_ci is None else list(self.gain_ci),
            "tokens_per_query": self.tokens_per_query,
            "tokens_estimated": self.tokens_estimated,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "cost_per_1000_queries": self.cost_per_1000_queries,
            "short_queries": self.short_queries,
            "changed": self.changed,
            "gain_p": self.gain_p,
            "mrr_gain_ci": None if self.mrr_gain_ci is None else list(self.mrr_gain_ci),
            "recall_gain_ci": None if self.recall_gain_ci is None else list(self.recall_gain_ci),
        }


@dataclass(frozen=True)
class Recommendation:
    """What to set, and why. ``candidates`` is None when reranking did not measurably help
    (``helped`` False; ``reason`` says why and how many more queries would tell)."""

    candidates: int | None
    top_n: int
    score_threshold: float | None
    helped: bool
    reason: str
    warnings: tuple[str, ...] = ()
    llama_index: str | None = None
    langchain: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "top_n": self.top_n,
            "score_threshold": self.score_threshold,
            "helped": self.helped,
            "reason": self.reason,
            "warnings": list(self.warnings),
            "settings": {"llama_index": self.llama_index, "langchain": self.langchain},
        }


def score_threshold(relevant_scores: Sequence[float], keep: float) -> float | None:
    """The highest score ``t`` such that the relevant documents scoring at least ``t`` are at
    least ``keep`` of ``relevant_scores`` (None when there are none)."""
    if not relevant_scores:
        return None
    ordered = sorted(relevant_scores, reverse=True)
    return float(ordered[max(1, math.ceil(keep * len(ordered) - 1e-9)) - 1])


def _threshold_text(value: float) -> str:
    """Rounded down, so the pasted threshold keeps every document the rule keeps."""
    return repr(math.floor(value * 10_000) / 10_000)


def settings(
    candidates: int, top_n: int, threshold: float | None, model: str | None
) -> tuple[str, str]:
    """Ready-to-paste LlamaIndex and LangChain settings."""
    args = [f"top_n={top_n}"]
    if threshold is not None:
        args.append(f"score_threshold={_threshold_text(threshold)}")
    if model and model != DEFAULT_MODEL:
        args.insert(0, f"model={model!r}")
    rerank = f"TogetherRerank({', '.join(args)})"
    llama = (
        "from together_rerank_plugins.llama_index import TogetherRerank\n\n"
        "query_engine = index.as_query_engine(\n"
        f"    similarity_top_k={candidates},\n"
        f"    node_postprocessors=[{rerank}],\n"
        ")"
    )
    lang = (
        "from langchain_classic.retrievers import ContextualCompressionRetriever\n"
        "from together_rerank_plugins.langchain import TogetherRerank\n\n"
        "retriever = ContextualCompressionRetriever(\n"
        f"    base_compressor={rerank},\n"
        f'    base_retriever=vectorstore.as_retriever(search_kwargs={{"k": {candidates}}}),\n'
        ")"
    )
    return llama, lang


def _shown(gain: float, ci: tuple[float, float] | None) -> str:
    """A gain with its interval (never one without the other, where there is one)."""
    return f"{gain:+.3f}" + ("" if ci is None else f" [95% CI {ci[0]:+.3f}, {ci[1]:+.3f}]")


def _evidence(d: DepthResult) -> bool:
    """Whether ``d``'s gain counts as evidence of help (see :func:`recommend`)."""
    return (
        d.gain_ci is not None
        and d.gain_ci[0] > 0
        and (d.changed is None or d.changed >= MIN_CHANGED)
        and (d.gain_p is None or d.gain_p < ALPHA)
    )


def _not_measurably_worse(
    depths: Sequence[DepthResult],
    chosen: DepthResult,
    gains: Mapping[int, Sequence[float]] | None,
    seed: int,
) -> tuple[DepthResult, float, tuple[float, float] | None] | None:
    """The smallest depth below ``chosen`` that is evidence itself and whose paired
    difference from ``chosen`` (per query) has an interval reaching zero, with that
    difference; None without per-query gains or such a depth."""
    if gains is None or chosen.candidates not in gains:
        return None
    for d in depths:
        if d.candidates >= chosen.candidates or d.candidates not in gains or not _evidence(d):
            continue
        diff = [b - a for a, b in zip(gains[chosen.candidates], gains[d.candidates], strict=True)]
        diff_ci = bootstrap_ci(diff, seed=seed)
        if diff_ci is None or diff_ci[0] <= 0 <= diff_ci[1]:
            return d, sum(diff) / len(diff), diff_ci
    return None


def queries_needed(queries: int, gain: float, ci: tuple[float, float], power: float = 0.8) -> int:
    """Judged queries in all for a 95% interval to exclude zero ``power`` of the time if the
    true gain is ``gain``: the interval's side toward zero gives the standard error
    (``(gain - low) / 1.96`` at ``queries``), which shrinks as 1/sqrt(queries); zero is
    excluded ``power`` of the time when the gain is (1.96 + z(power)) standard errors."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.975)
    side = gain - ci[0] if gain > 0 else ci[1] - gain
    return math.ceil(queries * (side * (z + NormalDist().inv_cdf(power)) / z / gain) ** 2)


def recommend(
    depths: Sequence[DepthResult],
    *,
    cutoff: int,
    keep: float,
    queries: int,
    relevant_scores: Mapping[int, Sequence[float]],
    model: str | None = None,
    warnings: Sequence[str] = (),
    gains: Mapping[int, Sequence[float]] | None = None,
    seed: int = 0,
) -> Recommendation:
    """The rule: ``candidates`` is the smallest depth whose nDCG gain is at least ``keep`` of
    the best depth's gain and is evidence itself (see below), when the best depth is
    evidence; ``top_n`` the cutoff; ``score_threshold`` from ``relevant_scores[candidates]``
    (the scores of the relevant documents in the reranked top ``cutoff``, pooled over
    queries) by :func:`score_threshold`.

    A depth is evidence when its gain's interval is above zero, the reranker changed at
    least :data:`MIN_CHANGED` queries there (where ``changed`` is known), and its
    ``gain_p`` (where computed) is below :data:`ALPHA`: the interval alone, on the best of
    several depths, claimed a gain too often when there was none.

    ``gains`` (per-query gains of each depth, in the same query order): the fall past the
    peak is then a paired difference with its own interval, warned only when that interval
    excludes zero, and a smaller depth not measurably worse than the chosen one is named;
    without them, on the point estimates.
    """
    found: list[str] = list(warnings)
    nd = f"nDCG@{cutoff}"
    best = max(depths, key=lambda d: d.gain)  # ties: the smallest depth
    ci = best.gain_ci
    shown = _shown(best.gain, ci)
    first_stage = best.ndcg - best.gain
    if first_stage >= CEILING:
        found.append(
            f"the first stage already scores {nd} {first_stage:.3f} on these queries: it "
            "leaves a reranker almost nothing to gain here (judge harder queries: those your "
            "users' first results miss)"
        )
    if best.gain > 0:
        # the end of the plateau: the deepest depth as good as the best
        peak = max((d for d in depths if d.gain >= best.gain), key=lambda d: d.candidates)
        falls = [d for d in depths if d.candidates > peak.candidates and d.gain < keep * best.gain]
        if falls:
            worst = min(falls, key=lambda d: d.gain)
            drop = ""
            measurable = True
            if gains is not None and peak.candidates in gains and worst.candidates in gains:
                diff = [
                    b - a
                    for a, b in zip(gains[peak.candidates], gains[worst.candidates], strict=True)
                ]
                drop_ci = bootstrap_ci(diff, seed=seed)
                measurable = drop_ci is not None and drop_ci[1] < 0
                drop = f"; the fall is {_shown(sum(diff) / len(diff), drop_ci)}"
            if measurable:
                found.append(
                    f"quality falls past {peak.candidates} candidates (the peak): the {nd} gain "
                    f"is {_shown(peak.gain, peak.gain_ci)} there and "
                    f"{_shown(worst.gain, worst.gain_ci)} at {worst.candidates}{drop}; deeper "
                    "lists give the reranker more wrong documents to promote"
                )
    chosen: DepthResult | None = None
    if ci is None:
        reason = (
            f"{queries} judged query(ies) are too few for an interval: judge more queries "
            "(see docs/evaluation.md for how many)"
        )
    elif best.changed is not None and best.changed < MIN_CHANGED and not ci[0] <= 0 <= ci[1]:
        reason = (
            f"too few queries to tell: the reranker changed only {best.changed} of {queries} "
            f"judged queries at {best.candidates} candidates (best {nd} gain {shown}); an "
            f"interval is evidence from {MIN_CHANGED} changed queries on (a bootstrap interval "
            "cannot reach zero when every change has the same sign): judge more queries"
        )
    elif ci[0] <= 0 <= ci[1]:
        reason = (
            f"reranking did not measurably help on this data: the best {nd} gain is {shown} "
            f"at {best.candidates} candidates, and the interval includes zero"
        )
        if best.gain > 0:
            need = queries_needed(queries, best.gain, ci)
            more = max(need - queries, 1)
            reason += (
                f"; about {more} more judged queries ({need} in all) would show it 80% of the "
                "time, if the true gain is this large (an interval narrows as 1/sqrt(queries))"
            )
    elif ci[1] < 0:
        reason = (
            f"reranking made {nd} worse on this data: even the best depth's gain is {shown} "
            f"at {best.candidates} candidates (its interval below zero; the other depths "
            "gained less)"
        )
    elif best.gain_p is not None and best.gain_p >= ALPHA:
        reason = (
            f"reranking did not measurably help on this data: the best {nd} gain is {shown} "
            f"at {best.candidates} candidates, but a paired sign-flip test over the judged "
            f"queries, allowing for the {len(depths)} depth(s) tried, gives p = "
            f"{best.gain_p:.3f} (evidence is below {ALPHA}): the best of several depths "
            "often looks this good by chance; judge more queries"
        )
    else:
        # the smallest depth within keep of the best that is evidence itself: its own
        # interval above zero, on enough changed queries
        chosen = next(
            d for d in depths if d is best or (d.gain >= keep * best.gain and _evidence(d))
        )
        share = chosen.gain / best.gain
        of_best = (
            "the best of the sweep"
            if chosen is best
            else f"{share:.0%} of the best gain ({shown} at {best.candidates})"
        )
        p = "" if chosen.gain_p is None else f", p = {chosen.gain_p:.4f}"
        reason = (
            f"{chosen.candidates} candidates: {nd} gain {_shown(chosen.gain, chosen.gain_ci)} "
            f"over the first stage{p}, {of_best}; the smallest depth within keep={keep:g} of "
            "the best, its interval above zero"
        )
        cheaper = _not_measurably_worse(depths, chosen, gains, seed)
        if cheaper is not None:
            smaller, gap, gap_ci = cheaper
            found.append(
                f"{smaller.candidates} candidates is not measurably worse than "
                f"{chosen.candidates}: its {nd} gain is {_shown(smaller.gain, smaller.gain_ci)}"
                f" and the difference is {_shown(gap, gap_ci)}; it sends fewer documents "
                "(less cost and latency), which may matter more than a gain this data cannot "
                "confirm"
            )
    at = chosen or depths[-1]
    if at.pool_recall < LOW_POOL_RECALL:
        found.append(
            f"the first stage finds only {at.pool_recall:.0%} of the relevant documents in its "
            f"top {at.candidates}: the first stage, not the reranker, is the limit here "
            "(improve retrieval: hybrid search, better embeddings, or retrieve deeper)"
        )
    if chosen is None:
        return Recommendation(None, cutoff, None, False, reason, tuple(found))
    threshold = score_threshold(relevant_scores.get(chosen.candidates, ()), keep)
    llama, lang = settings(chosen.candidates, cutoff, threshold, model)
    return Recommendation(
        chosen.candidates, cutoff, threshold, True, reason, tuple(found), llama, lang
    )


# -- the report ------------------------------------------------------------------------------
def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _cost(d: DepthResult) -> str:
    """The cost, marked ``~`` when the tokens it is priced from are estimated."""
    estimated = d.tokens_estimated and d.cost_per_1000_queries is not None
    return _num(d.cost_per_1000_queries, ".4f") + ("~" if estimated else "")


@dataclass
class RerankEvaluation:
    """What :func:`evaluate_reranking` measured. ``table()``, ``as_dict()``, ``to_pandas()``,
    ``plot(path)``; a notebook shows the table and the recommendation."""

    cutoff: int
    queries: int
    first_stage: dict[str, float]  # ndcg, mrr, recall of the retriever's own ranking
    depths: list[DepthResult]
    recommendation: Recommendation
    first_stage_name: str = "first stage"
    #: judged queries for which the retriever returned something (the others count 0)
    queries_with_candidates: int = 0
    dataset: str = ""
    #: who scored: "model @ url", or the embedded test endpoint's note
    scorer: str = ""
    offline: bool = False
    keep: float = 0.95
    seed: int = 0
    #: the scoring pass: one call per query over its deepest list
    requests: int = 0
    documents_sent: int = 0
    cache_hits: int = 0
    tokens: int | None = None
    #: the latency sample: extra, uncached calls at each depth
    latency_queries: int = 0
    latency_documents_sent: int = 0
    #: how the retriever was deepened, or why it could not be
    retriever_depth: str = ""
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # for plots and saved runs (not in as_dict)
    first_order: dict[str, list[str]] = field(default_factory=dict, repr=False)
    orders: dict[int, dict[str, list[str]]] = field(default_factory=dict, repr=False)
    gains: dict[int, list[float]] = field(default_factory=dict, repr=False)
    relevant_scores: dict[int, list[float]] = field(default_factory=dict, repr=False)
    other_scores: dict[int, list[float]] = field(default_factory=dict, repr=False)

    @property
    def max_depth(self) -> int:
        return max(d.candidates for d in self.depths)

    def depth(self, candidates: int) -> DepthResult:
        return next(d for d in self.depths if d.candidates == candidates)

    # -- outputs -----------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: numbers, strings, lists, dicts and None (a figure not measured)."""
        return {
            "cutoff": self.cutoff,
            "queries": self.queries,
            "queries_with_candidates": self.queries_with_candidates,
            "first_stage": {
                **self.first_stage,
                "name": self.first_stage_name,
                "depth": self.max_depth,
            },
            "depths": [d.as_dict() for d in self.depths],
            "recommendation": self.recommendation.as_dict(),
            "dataset": self.dataset,
            "scorer": self.scorer,
            "offline": self.offline,
            "keep": self.keep,
            "seed": self.seed,
            "metric_library": "pytrec_eval",
            "requests": self.requests,
            "documents_sent": self.documents_sent,
            "cache_hits": self.cache_hits,
            "tokens": self.tokens,
            "latency_queries": self.latency_queries,
            "latency_documents_sent": self.latency_documents_sent,
            "retriever_depth": self.retriever_depth,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }

    def table(self) -> str:
        """The sweep as text, with the recommendation and the settings to paste."""
        k = self.cutoff
        fs = self.first_stage
        lines = [
            f"{self.queries} judged queries; scored by {self.scorer}",
            f"first stage ({self.first_stage_name}, its own ranking of the top "
            f"{self.max_depth}): nDCG@{k} {fs['ndcg']:.4f}  MRR@{k} {fs['mrr']:.4f}  "
            f"R@{k} {fs['recall']:.4f}",
            "",
            f"{'cands':>5} {'nDCG@' + str(k):>8} {'gain [95% CI]':>26} {'MRR@' + str(k):>7} "
            f"{'R@' + str(k):>7} {'pool R':>7} {'tok/q':>8} {'p50 ms':>7} {'p95 ms':>7} "
            f"{'$/1k q':>8}",
        ]
        for d in self.depths:
            ci = "" if d.gain_ci is None else f"[{d.gain_ci[0]:+.3f}, {d.gain_ci[1]:+.3f}]"
            tokens = _num(d.tokens_per_query, ",.0f") + ("~" if d.tokens_estimated else "")
            lines.append(
                f"{d.candidates:>5} {d.ndcg:>8.4f} {d.gain:>+8.3f} {ci:>17} {d.mrr:>7.4f} "
                f"{d.recall:>7.4f} {d.pool_recall:>7.4f} {tokens:>8} "
                f"{_num(d.latency_p50_ms, '.1f'):>7} {_num(d.latency_p95_ms, '.1f'):>7} "
                f"{_cost(d):>8}"
            )
        lines += [
            "",
            f"pool R = the first stage's recall in its top c (the most a reranker can reach); "
            f"gain = reranked nDCG@{k} minus the first stage's; metrics by pytrec_eval",
            *self.notes,
        ]
        rec = self.recommendation
        lines += ["", "recommendation: " + rec.reason]
        if rec.helped:
            lines.append(
                f"  similarity_top_k / k = {rec.candidates}, top_n = {rec.top_n}, "
                "score_threshold = "
                + ("-" if rec.score_threshold is None else _threshold_text(rec.score_threshold))
            )
        lines += [f"warning: {w}" for w in rec.warnings]
        if rec.llama_index and rec.langchain:
            lines += ["", "LlamaIndex:", rec.llama_index, "", "LangChain:", rec.langchain]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_pandas(self) -> Any:
        """One row per depth (the ``depths`` of :meth:`as_dict`); needs pandas."""
        try:
            import pandas as pd  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            raise ImportError(
                "to_pandas() needs pandas: pip install pandas (as_dict() needs nothing)",
                name="pandas",
            ) from None
        rows = [d.as_dict() for d in self.depths]
        for row in rows:
            for key in ("gain_ci", "mrr_gain_ci", "recall_gain_ci"):
                ci = row.pop(key)
                row[f"{key}_low"], row[f"{key}_high"] = (None, None) if ci is None else ci
        return pd.DataFrame(rows).set_index("candidates")

    def figure(self) -> Any:
        """The matplotlib ``Figure`` of :meth:`plot` (not saved)."""
        from ._plot import figure

        return figure(self)

    def plot(self, path: str | Path) -> Path:
        """Write the four panels to ``path`` (.png, .jpg, .pdf or .svg); returns the path."""
        from ._plot import plot

        return plot(self, Path(path))

    def save_runs(self, folder: str | Path) -> list[Path]:
        """The evaluated rankings as TREC run files (``first_stage.trec``,
        ``rerank_<c>.trec``), to check the numbers with any tool."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "first_stage.trec"]
        write_trec_run(paths[0], self.first_order, "first_stage")
        for c, order in self.orders.items():
            path = out / f"rerank_{c}.trec"
            write_trec_run(path, order, f"rerank_{c}")
            paths.append(path)
        return paths

    def _repr_html_(self) -> str:
        k = self.cutoff
        head = "".join(
            f"<th>{h}</th>"
            for h in (
                "candidates",
                f"nDCG@{k}",
                "gain [95% CI]",
                f"MRR@{k}",
                f"R@{k}",
                "pool recall",
                "tokens/query",
                "p50 ms",
                "p95 ms",
                "$ / 1k queries",
            )
        )
        rows = []
        rec = self.recommendation
        for d in self.depths:
            ci = "" if d.gain_ci is None else f" [{d.gain_ci[0]:+.3f}, {d.gain_ci[1]:+.3f}]"
            style = ' style="font-weight:bold"' if d.candidates == rec.candidates else ""
            cells = (
                d.candidates,
                f"{d.ndcg:.4f}",
                f"{d.gain:+.3f}{ci}",
                f"{d.mrr:.4f}",
                f"{d.recall:.4f}",
                f"{d.pool_recall:.4f}",
                _num(d.tokens_per_query, ",.0f") + ("~" if d.tokens_estimated else ""),
                _num(d.latency_p50_ms, ".1f"),
                _num(d.latency_p95_ms, ".1f"),
                _cost(d),
            )
            rows.append(f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        fs = self.first_stage
        parts = [
            f"<p>{self.queries} judged queries; scored by {html.escape(self.scorer)}. "
            f"First stage ({html.escape(self.first_stage_name)}): nDCG@{k} {fs['ndcg']:.4f}, "
            f"MRR@{k} {fs['mrr']:.4f}, R@{k} {fs['recall']:.4f}.</p>",
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>",
            f"<p><b>Recommendation:</b> {html.escape(rec.reason)}</p>",
            *(f"<p>&#9888; {html.escape(w)}</p>" for w in rec.warnings),
        ]
        if rec.llama_index and rec.langchain:
            parts += [
                f"<p>LlamaIndex:</p><pre>{html.escape(rec.llama_index)}</pre>",
                f"<p>LangChain:</p><pre>{html.escape(rec.langchain)}</pre>",
            ]
        return "<div>" + "".join(parts) + "</div>"
