"""The picture of an evaluation: does reranking help, by how much, at what cost and latency,
and where would a score threshold cut?

Four panels against the depth c (candidates reranked per query): quality (each measure
reranked, solid; the first stage alone, dashed; the first stage's nDCG plus the gain's 95%
paired interval as a band; the first stage's recall in its top c, dotted), gain over the
first stage (one labelled bar per measure, each with its interval as an error bar), cost
and latency (tokens per query as bars, p50/p95 latency as lines), and the reranker's
scores of relevant and other candidates at the recommended depth with the suggested
threshold. matplotlib, Agg canvas, no pyplot.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import EvaluationError, missing

if TYPE_CHECKING:
    from ._report import RerankEvaluation

__all__ = ["PLOT_FORMATS", "check_plot_path", "figure", "plot"]

#: Extension -> matplotlib format. Image formats people open; each one is tested.
PLOT_FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".pdf": "pdf", ".svg": "svg"}
FORMATS_TEXT = ".png, .jpg, .pdf or .svg"

FONT = 10  # points: every text of the figure is at least this size but the footnote (9)
COLORS = ("tab:blue", "tab:orange", "tab:green")
MARKERS = ("o", "s", "^")
MEASURES = (("ndcg", "nDCG"), ("mrr", "MRR"), ("recall", "R"))


def check_plot_path(path: Path) -> str:
    """The matplotlib format of ``path``; an error for one whose extension names no format we
    write, or that is a folder."""
    if path.is_dir() or str(path).endswith(("/", "\\")):
        raise EvaluationError(f"plot {path} is a folder: give a file name such as sweep.png")
    suffix = path.suffix.lower()
    if suffix not in PLOT_FORMATS:
        what = f"extension {path.suffix!r}" if path.suffix else "no extension"
        raise EvaluationError(
            f"plot {path}: {what}; the extension names the format: {FORMATS_TEXT}"
        )
    return PLOT_FORMATS[suffix]


def _zoom(values: list[float]) -> tuple[float, float]:
    """Y limits that span the data with a small margin (a gain of 0.05 must be visible)."""
    low, high = min(values), max(values)
    margin = max(0.02, 0.12 * (high - low))
    return max(0.0, low - margin), min(1.0 + margin, high + margin)


def figure(report: RerankEvaluation) -> Any:
    """The matplotlib ``Figure`` of the evaluation (not saved)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise missing("matplotlib") from None
    depths = report.depths
    counts = [d.candidates for d in depths]
    positions = list(range(len(counts)))
    labels = [str(c) for c in counts]
    k = report.cutoff
    fig = Figure(figsize=(20, 5.8), layout="constrained")
    FigureCanvasAgg(fig)
    quality, gain, cost, scores = fig.subplots(1, 4, width_ratios=[5, 4, 3.5, 3.5])

    # -- quality: lines side by side (a small dodge per measure), nDCG's interval as a band
    dodge = 0.08
    values: list[float] = []
    for i, ((key, label), color, marker) in enumerate(zip(MEASURES, COLORS, MARKERS, strict=True)):
        xs = [x + (i - 1.5) * dodge for x in positions]
        ys = [getattr(d, key) for d in depths]
        base = report.first_stage[key]
        values += [*ys, base]
        name = f"{label}@{k}"
        quality.plot(xs, ys, marker=marker, markersize=7, color=color, label=f"{name} reranked")
        quality.axhline(
            base,
            color=color,
            linestyle="--",
            linewidth=1.2,
            label=f"{name} first stage: {base:.3f}",
        )
        if key == "ndcg":
            band = [(j, d) for j, d in enumerate(depths) if d.gain_ci is not None]
            if band:
                # the interval of the mean gain, around the first stage's mean; drawn within
                # [0, 1], where an nDCG lives (a bootstrap of few queries can reach past it)
                lows = [max(0.0, base + d.gain_ci[0]) for _, d in band if d.gain_ci]
                highs = [min(1.0, base + d.gain_ci[1]) for _, d in band if d.gain_ci]
                values += [*lows, *highs]
                quality.fill_between(
                    [xs[j] for j, _ in band],
                    lows,
                    highs,
                    color=color,
                    alpha=0.15,
                    label=f"{name} first stage + the gain's 95% interval",
                )
    pool = [d.pool_recall for d in depths]
    values += pool
    quality.plot(
        [x + 1.5 * dodge for x in positions],
        pool,
        marker="D",
        markersize=8,
        markerfacecolor="none",
        color="dimgray",
        linestyle=":",
        label="first stage recall in top c (the ceiling)",
    )
    quality.set_ylim(*_zoom(values))
    quality.set_xticks(positions, labels)
    quality.set_xlim(-0.5, len(counts) - 0.5)
    quality.set_xlabel("candidates reranked per query (c)", fontsize=FONT)
    quality.set_ylabel("mean over queries (axis zoomed to the data)", fontsize=FONT)
    quality.grid(alpha=0.3)
    quality.set_title("quality: reranked (solid) vs first stage (dashed)", fontsize=FONT + 1)
    quality.legend(fontsize=FONT, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)

    # -- gain: reranked minus first stage, one labelled bar per measure and depth
    width = 0.8 / len(MEASURES)
    gains: list[float] = []
    for i, ((key, label), color) in enumerate(zip(MEASURES, COLORS, strict=True)):
        xs = [x + (i - (len(MEASURES) - 1) / 2) * width for x in positions]
        ys = [d.gain_of(key, report.first_stage) for d in depths]
        gains += ys
        bars = gain.bar(xs, ys, width=width * 0.95, color=color, label=f"{label}@{k}")
        gain.bar_label(bars, [f"{y:+.3f}" for y in ys], padding=2, fontsize=FONT - 1, rotation=90)
        # every gain with its interval
        with_ci = [
            (x, y, ci)
            for x, y, d in zip(xs, ys, depths, strict=True)
            for ci in [d.interval_of(key)]
            if ci is not None
        ]
        if with_ci:
            gain.errorbar(
                [x for x, _, _ in with_ci],
                [y for _, y, _ in with_ci],
                yerr=[
                    [max(0.0, y - ci[0]) for _, y, ci in with_ci],
                    [max(0.0, ci[1] - y) for _, y, ci in with_ci],
                ],
                fmt="none",
                ecolor="black",
                capsize=3,
                linewidth=1,
            )
            gains += [v for _, _, ci in with_ci for v in ci]
    gain.axhline(0, color="black", linewidth=0.8)
    span = max([*(abs(g) for g in gains), 0.01])
    low = min(gains) - 0.45 * span if min(gains) < 0 else -0.05 * span
    high = max(gains) + 0.45 * span if max(gains) > 0 else 0.05 * span
    gain.set_ylim(low, high)
    gain.set_xticks(positions, labels)
    gain.set_xlabel("candidates reranked per query (c)", fontsize=FONT)
    gain.set_ylabel("reranked minus first stage", fontsize=FONT)
    gain.grid(alpha=0.3, axis="y")
    gain.set_title("gain from reranking (95% intervals)", fontsize=FONT + 1)
    gain.legend(fontsize=FONT, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)

    # -- cost (bars) and latency (lines, right axis)
    if all(d.tokens_per_query is not None for d in depths):
        costs = [d.tokens_per_query or 0.0 for d in depths]
        estimated = any(d.tokens_estimated for d in depths)
        cost.set_ylabel("tokens per query" + (" (estimated)" if estimated else ""), fontsize=FONT)
    else:
        costs = [float(c) for c in counts]
        cost.set_ylabel("documents reranked per query (tokens not reported)", fontsize=FONT)
    bars = cost.bar(positions, costs, color="tab:purple", alpha=0.6)
    cost.bar_label(bars, [f"{v:,.0f}" for v in costs], padding=2, fontsize=FONT)
    cost.set_ylim(0, max([*costs, 1.0]) * 1.15)
    cost.set_xticks(positions, labels)
    cost.set_xlabel("candidates reranked per query (c)", fontsize=FONT)
    cost.grid(alpha=0.3, axis="y")
    cost.set_title("cost and added latency per query", fontsize=FONT + 1)
    if any(d.latency_p50_ms is not None for d in depths):
        lat = cost.twinx()
        for attr, style, name in (
            ("latency_p50_ms", "-", "p50"),
            ("latency_p95_ms", "--", "p95"),
        ):
            ys = [getattr(d, attr) for d in depths]
            lat.plot(positions, ys, style, color="black", marker=".", label=f"latency {name}")
        lat.set_ylabel("rerank latency, ms", fontsize=FONT)
        lat.set_ylim(bottom=0)
        lat.tick_params(labelsize=FONT)
        lat.legend(fontsize=FONT, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)

    # -- scores of relevant vs other candidates at the recommended (else deepest) depth
    at = report.recommendation.candidates or report.max_depth
    rel = report.relevant_scores.get(at, [])
    oth = report.other_scores.get(at, [])
    everything = rel + oth
    if everything:
        low_s, high_s = min(everything), max(everything)
        if high_s == low_s:
            high_s = low_s + 1.0
        edges = [low_s + (high_s - low_s) * i / 20 for i in range(21)]
        scores.hist(oth, bins=edges, color="tab:gray", alpha=0.6, label=f"other ({len(oth)})")
        scores.hist(
            rel, bins=edges, color="tab:green", alpha=0.7, label=f"relevant in top {k} ({len(rel)})"
        )
    threshold = report.recommendation.score_threshold
    if threshold is not None:
        scores.axvline(
            threshold, color="tab:red", linewidth=1.5, label=f"suggested threshold {threshold:.3g}"
        )
    scores.set_xlabel(f"reranker score (candidates at c={at})", fontsize=FONT)
    scores.set_ylabel("candidates", fontsize=FONT)
    scores.set_title("score distributions", fontsize=FONT + 1)
    scores.grid(alpha=0.3, axis="y")
    scores.legend(fontsize=FONT, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)

    for ax in (quality, gain, cost, scores):
        ax.tick_params(labelsize=FONT)
    where = (
        "OFFLINE: embedded lexical test endpoint, not LlamaRank"
        if report.offline
        else report.scorer
    )
    fig.suptitle(
        f"{report.first_stage_name} + rerank on {report.dataset} ({report.queries} queries) "
        f"— {where}",
        fontsize=FONT + 2,
    )
    return fig


def plot(report: RerankEvaluation, path: Path) -> Path:
    """Write the figure to ``path`` in the format its extension names."""
    fmt = check_plot_path(path)
    fig = figure(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=fmt, dpi=100)
    return path
