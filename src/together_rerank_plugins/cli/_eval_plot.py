"""The plot of ``together-rerank eval``: does reranking help, by how much, at what cost?

Three panels against the candidate count c: quality (each measure reranked, solid, and the
first stage alone, dashed; the y axis zoomed to the data), gain (reranked minus first stage,
one labelled bar per measure) and cost (tokens, or documents, per query; labelled bars).
Written in the format the file's extension names (matplotlib, Agg canvas, no pyplot).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import UsageError, check_output_file, check_output_folder, missing_extra

if TYPE_CHECKING:
    from ._eval import EvalReport

__all__ = ["PLOT_FORMATS", "check_plot_path", "figure", "plot"]

#: Extension -> matplotlib format. Image formats people open; each one is tested.
PLOT_FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".pdf": "pdf", ".svg": "svg"}
_FORMATS_TEXT = ".png, .jpg, .pdf or .svg"

FONT = 10  # points: every text of the figure is at least this size but the footnote (9)
COLORS = ("tab:blue", "tab:orange", "tab:green")
MARKERS = ("o", "s", "^")


def check_plot_path(path: Path) -> str:
    """The matplotlib format of ``--plot PATH``; a usage error, before any call, for a path
    whose extension names no format we write, or that could not be written."""
    if path.is_dir() or str(path).endswith(("/", "\\")):
        raise UsageError(f"--plot {path} is a folder: give a file name such as sweep.png")
    suffix = path.suffix.lower()
    if suffix not in PLOT_FORMATS:
        what = f"extension {path.suffix!r}" if path.suffix else "no extension"
        raise UsageError(f"--plot {path}: {what}; the extension names the format: {_FORMATS_TEXT}")
    check_output_folder(path.parent, "the plot")
    if path.exists():
        check_output_file(path, "the plot")
    return PLOT_FORMATS[suffix]


def _zoom(values: list[float]) -> tuple[float, float]:
    """Y limits that span the data with a small margin (a gain of 0.05 must be visible)."""
    low, high = min(values), max(values)
    margin = max(0.02, 0.12 * (high - low))
    return max(0.0, low - margin), min(1.0 + margin, high + margin)


def figure(report: EvalReport) -> Any:
    """The matplotlib ``Figure`` of the sweep (not saved)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise missing_extra("matplotlib") from None
    counts = [p.candidates for p in report.sweep]
    positions = list(range(len(counts)))
    labels = [str(c) for c in counts]
    measures = report.measures
    fig = Figure(figsize=(15, 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    quality, gain, cost = fig.subplots(1, 3, width_ratios=[5, 4, 3])

    # -- quality: the lines side by side (a small dodge per measure, then the pool recall),
    #    so no marker hides another when two values are equal
    dodge = 0.08
    values: list[float] = []
    for i, (name, color, marker) in enumerate(zip(measures, COLORS, MARKERS, strict=False)):
        xs = [x + (i - 1.5) * dodge for x in positions]
        ys = [p.metrics[name] for p in report.sweep]
        base = report.first_stage[name]
        values += [*ys, base]
        quality.plot(xs, ys, marker=marker, markersize=7, color=color, label=f"{name} reranked")
        quality.axhline(
            base,
            color=color,
            linestyle="--",
            linewidth=1.2,
            label=f"{name} {report.first_stage_name} alone: {base:.3f}",
        )
    pool = [p.pool_recall for p in report.sweep]
    values += pool
    quality.plot(
        [x + 1.5 * dodge for x in positions],
        pool,
        marker="D",
        markersize=8,
        markerfacecolor="none",
        color="dimgray",
        linestyle=":",
        label="pool R@c: the most reranking c can reach",
    )
    quality.set_ylim(*_zoom(values))
    quality.set_xticks(positions, labels)
    quality.set_xlim(-0.5, len(counts) - 0.5)
    quality.set_xlabel("candidates reranked per query (c)", fontsize=FONT)
    quality.set_ylabel("mean over queries (axis zoomed to the data)", fontsize=FONT)
    quality.grid(alpha=0.3)
    quality.set_title("quality: reranked (solid) vs first stage alone (dashed)", fontsize=FONT + 1)
    # below the panel, so it hides no data
    quality.legend(fontsize=FONT, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)

    # -- gain: reranked minus first stage, one labelled bar per measure and count
    width = 0.8 / max(len(measures), 1)
    gains: list[float] = []
    for i, (name, color) in enumerate(zip(measures, COLORS, strict=False)):
        xs = [x + (i - (len(measures) - 1) / 2) * width for x in positions]
        ys = [p.metrics[name] - report.first_stage[name] for p in report.sweep]
        gains += ys
        bars = gain.bar(xs, ys, width=width * 0.95, color=color, label=name)
        gain.bar_label(bars, [f"{y:+.3f}" for y in ys], padding=2, fontsize=FONT - 1, rotation=90)
    gain.axhline(0, color="black", linewidth=0.8)
    # room for the labels (rotated, above a bar or below it)
    span = max([*(abs(g) for g in gains), 0.01])
    low = min(gains) - 0.45 * span if min(gains) < 0 else -0.05 * span
    high = max(gains) + 0.45 * span if max(gains) > 0 else 0.05 * span
    gain.set_ylim(low, high)
    gain.set_xticks(positions, labels)
    gain.set_xlabel("candidates reranked per query (c)", fontsize=FONT)
    gain.set_ylabel("reranked minus first stage", fontsize=FONT)
    gain.grid(alpha=0.3, axis="y")
    gain.set_title("gain from reranking", fontsize=FONT + 1)
    gain.legend(fontsize=FONT, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)

    # -- cost
    if all(p.tokens is not None for p in report.sweep):
        costs = [(p.tokens or 0) / max(p.requests, 1) for p in report.sweep]
        cost.set_ylabel("tokens per query", fontsize=FONT)
        cost.set_title("cost: tokens reported by the endpoint", fontsize=FONT + 1)
    else:
        costs = [p.documents / max(p.requests, 1) for p in report.sweep]
        cost.set_ylabel("documents reranked per query", fontsize=FONT)
        cost.set_title("cost (tokens not reported)", fontsize=FONT + 1)
    bars = cost.bar(positions, costs, color="tab:purple")
    cost.bar_label(bars, [f"{v:,.0f}" for v in costs], padding=2, fontsize=FONT)
    cost.set_ylim(0, max([*costs, 1.0]) * 1.15)
    cost.set_xticks(positions, labels)
    cost.set_xlabel("candidates reranked per query (c)", fontsize=FONT)
    cost.grid(alpha=0.3, axis="y")

    for ax in (quality, gain, cost):
        ax.tick_params(labelsize=FONT)
    where = (
        "OFFLINE: embedded lexical test endpoint, not LlamaRank"
        if report.mode.offline
        else "TEST ENDPOINT: embedded lexical test endpoint, not LlamaRank"
        if report.mode.test_endpoint
        else f"model {report.mode.model}"
    )
    fig.suptitle(
        f"{report.first_stage_name} + rerank on {report.dataset.path.name} "
        f"({len(report.dataset.queries)} queries) — {where}",
        fontsize=FONT + 2,
    )
    return fig


def plot(report: EvalReport, path: Path) -> None:
    """Write the figure to ``path`` in the format its extension names."""
    fmt = check_plot_path(path)
    fig = figure(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=fmt, dpi=100)
