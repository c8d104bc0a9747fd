"""``together-rerank eval``: on the tiny synthetic dataset the package ships (``sample``), the
reported metrics equal the textbook definitions computed here on the same runs (saved with
``--save-runs``), the reranked runs are the library's rankings of the first stage's
candidates, the plot is written, and a TREC run file works as the first stage.

The reference below is written independently of the command (which calls pytrec_eval, the
C code of trec_eval): if either one is wrong, the comparison fails."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from together_rerank_plugins import (
    RerankClient,
    cli,
    evaluation,
)
from together_rerank_plugins.evaluation import SAMPLE_PATH
from together_rerank_plugins.evaluation._data import bm25_rankings
from together_rerank_plugins.testing import (
    LexicalRerankEndpoint,
    pointwise_lexical_scores,
    serve_loopback,
)

from .conftest import anonymous

DATA = SAMPLE_PATH
MEASURES = ["nDCG@10", "RR@10", "R@10"]


def qrels() -> dict[str, dict[str, int]]:
    with (DATA / "qrels" / "test.tsv").open() as f:
        reader = csv.DictReader(f, delimiter="\t")
        out: dict[str, dict[str, int]] = {}
        for row in reader:
            out.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return out


def run_order(path: Path) -> dict[str, list[str]]:
    order: dict[str, list[tuple[int, str]]] = {}
    for line in path.read_text().splitlines():
        qid, _, did, rank, _, _ = line.split()
        order.setdefault(qid, []).append((int(rank), did))
    return {q: [d for _, d in sorted(v)] for q, v in order.items()}


def reference(qrels: dict[str, dict[str, int]], order: dict[str, list[str]], name: str) -> float:
    """One measure's mean over every judged query, by its textbook definition (as trec_eval
    computes it: linear gains, log2 discount; relevant = judged >= 1; a query without results
    counts 0)."""
    measure, k = name.split("@")
    values = []
    for qid, judged in qrels.items():
        gains = [judged.get(d, 0) for d in order.get(qid, [])[: int(k)]]
        if measure == "nDCG":
            ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[: int(k)]
            dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains) if g > 0)
            idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
            values.append(dcg / idcg if idcg else 0.0)
        elif measure == "RR":
            first = next((i for i, g in enumerate(gains) if g >= 1), None)
            values.append(0.0 if first is None else 1.0 / (first + 1))
        else:
            relevant = sum(g >= 1 for g in judged.values())
            values.append(sum(g >= 1 for g in gains) / relevant if relevant else 0.0)
    return sum(values) / len(values)


def library(
    path: Path, measures: list[str] = MEASURES, queries: int | None = None
) -> dict[str, float]:
    """The reference measures of a saved TREC run file (over the first N judged queries)."""
    judged = dict(list(qrels().items())[:queries])
    order = run_order(path)
    return {m: reference(judged, order, m) for m in measures}


def as_measures(figures: dict[str, Any], k: int = 10) -> dict[str, float]:
    """A report's {"ndcg", "mrr", "recall"} under the measure names of :func:`library`."""
    return {f"nDCG@{k}": figures["ndcg"], f"RR@{k}": figures["mrr"], f"R@{k}": figures["recall"]}


def test_reference_matches_hand_computed_values() -> None:
    qrels = {"q1": {"a": 2, "b": 1, "z": 0}, "q2": {"c": 1}}
    order = {"q1": ["x", "a", "b"], "q2": ["y"]}
    # q1: DCG = 2/log2(3) + 1/log2(4); IDCG = 2 + 1/log2(3); q2 has nothing relevant retrieved
    assert reference(qrels, order, "nDCG@3") == pytest.approx(
        (2 / math.log2(3) + 0.5) / (2 + 1 / math.log2(3)) / 2
    )
    assert reference(qrels, order, "RR@3") == pytest.approx(0.25)
    assert reference(qrels, order, "RR@1") == 0.0
    assert reference(qrels, order, "R@2") == pytest.approx(0.25)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 600 <= width <= 3000
    assert 300 <= height <= 2000
    assert 10_000 < len(data) < 2_000_000
    from PIL import Image

    with Image.open(path) as image:
        image.verify()


def texts() -> tuple[dict[str, str], dict[str, str]]:
    corpus = {}
    for line in (DATA / "corpus.jsonl").read_text().splitlines():
        doc = json.loads(line)
        corpus[doc["_id"]] = f"{doc['title']} {doc['text']}"
    queries = {}
    for line in (DATA / "queries.jsonl").read_text().splitlines():
        q = json.loads(line)
        queries[q["_id"]] = q["text"]
    return corpus, queries


def test_dataset_readme_says_synthetic() -> None:
    assert "synthetic" in (DATA / "README.md").read_text().lower()


def test_eval_offline_metrics_match_the_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot, runs = tmp_path / "sweep.png", tmp_path / "runs"
    argv = ["eval", str(DATA), "--offline", "--candidates", "5,10,20", "--json"]
    code, out, err = run_cli([*argv, "--plot", str(plot), "--save-runs", str(runs)], capsys)
    assert code == 0, err
    assert err.splitlines()[0].startswith("mode: offline — embedded lexical test endpoint")
    report = json.loads(out)
    assert report["offline"] is True
    assert report["queries"] == 8
    assert report["documents"] == 40
    assert report["cutoff"] == 10
    assert report["metric_library"] == "pytrec_eval"
    assert report["plot"] == str(plot)
    check_png(plot)

    # first stage alone, and its Recall@c per candidate count (the reranker's pool)
    first = runs / "first_stage.trec"
    assert as_measures(report["first_stage"]) == pytest.approx(library(first))
    pools = library(first, ["R@5", "R@10", "R@20"])
    assert [p["pool_recall"] for p in report["depths"]] == pytest.approx(
        [pools["R@5"], pools["R@10"], pools["R@20"]]
    )
    # each reranked run
    assert [p["candidates"] for p in report["depths"]] == [5, 10, 20]
    for point in report["depths"]:
        saved = runs / f"rerank_{point['candidates']}.trec"
        assert as_measures(point) == pytest.approx(library(saved))
        assert point["gain"] == pytest.approx(point["ndcg"] - report["first_stage"]["ndcg"])
        assert point["tokens_per_query"] > 0
    # one scoring pass: each query's deepest list once, not once per depth
    assert report["requests"] == 8
    assert report["documents_sent"] == 8 * 20
    # plus the latency sample (every query here: 8 < 20), uncached, at each depth
    assert report["latency_queries"] == 8
    assert report["latency_documents_sent"] == 8 * (5 + 10 + 20)

    # the reranked runs are the library's ranking of the first stage's top c, then the rest
    corpus, queries = texts()
    # (the pointwise scorer --offline uses: one pass reuses the deepest call's scores)
    pointwise = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    client = RerankClient(api_key="x", transport=pointwise)
    first_order = run_order(first)
    assert set(first_order) == set(qrels())
    assert all(len(v) == 20 for v in first_order.values())
    for c in (5, 10, 20):
        reranked = run_order(runs / f"rerank_{c}.trec")
        for qid, docs in first_order.items():
            pool = docs[:c]
            ranking = client.rerank(queries[qid], [corpus[d] for d in pool])
            assert reranked[qid] == [pool[r.index] for r in ranking] + docs[c:]


def test_eval_offline_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["eval", str(DATA), "--offline", "--candidates", "5,10"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("mode: offline — embedded lexical test endpoint (not LlamaRank")
    assert lines[1].startswith(f"dataset: {DATA} (BEIR; test.tsv): 40 documents, 8 judged")
    assert "(LexicalRerankEndpoint: word overlap, not LlamaRank)" in out
    header = next(i for i, line in enumerate(lines) if line.startswith("cands"))
    assert lines[header].split()[:3] == ["cands", "nDCG@10", "gain"]
    assert lines[header + 1].split()[0] == "5"
    assert lines[header + 2].split()[0] == "10"
    assert "pytrec_eval" in lines[header + 4]
    assert any(line.startswith("recommendation: ") for line in lines)


def test_trec_run_file_as_first_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    base = ["eval", str(DATA), "--offline", "--candidates", "3,8", "--json"]
    code, out, err = run_cli([*base, "--save-runs", str(runs)], capsys)
    assert code == 0, err
    bm25 = json.loads(out)
    # the saved BM25 run, plus a line for a query that is not judged and one unknown doc
    run_file = tmp_path / "mine.trec"
    text = (runs / "first_stage.trec").read_text()
    run_file.write_text(text + "q-unjudged Q0 bees-0 1 9 x\nq-bees Q0 no-such-doc 99 -5 x\n")
    code, out, err = run_cli([*base, "--run", str(run_file)], capsys)
    assert code == 0, err
    mine = json.loads(out)
    assert mine["first_stage"]["name"] == "run mine.trec"
    assert as_measures(mine["first_stage"]) == pytest.approx(as_measures(bm25["first_stage"]))
    for ours, theirs in zip(mine["depths"], bm25["depths"], strict=True):
        assert as_measures(ours) == pytest.approx(as_measures(theirs))
    assert "1 document(s)" in err
    assert "not in the corpus" in err


def test_queries_missing_from_the_run_count_as_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    base = ["eval", str(DATA), "--offline", "--candidates", "5", "--json"]
    assert run_cli([*base, "--save-runs", str(runs)], capsys)[0] == 0
    run_file = tmp_path / "partial.trec"
    lines = (runs / "first_stage.trec").read_text().splitlines(keepends=True)
    run_file.write_text("".join(line for line in lines if not line.startswith("q-bees ")))
    code, out, err = run_cli([*base, "--run", str(run_file), "--save-runs", str(tmp_path)], capsys)
    assert code == 0, err
    assert "1 judged query(ies) have no result" in err
    report = json.loads(out)
    assert report["queries"] == 8
    assert report["queries_with_candidates"] == 7
    assert as_measures(report["first_stage"]) == pytest.approx(library(run_file))  # all 8 judged
    assert as_measures(report["depths"][0]) == pytest.approx(library(tmp_path / "rerank_5.trec"))


def test_cutoff_and_max_queries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    argv = ["eval", str(DATA), "--offline", "--candidates", "4", "--cutoff", "3", "--json"]
    code, out, err = run_cli([*argv, "--max-queries", "3", "--save-runs", str(runs)], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["queries"] == 3
    assert report["cutoff"] == 3
    cut = ["nDCG@3", "RR@3", "R@3"]
    expected = library(runs / "rerank_4.trec", cut, queries=3)
    assert as_measures(report["depths"][0], 3) == pytest.approx(expected)
    assert len(run_order(runs / "first_stage.trec")) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/folder"], "is not a folder"),
        ([str(DATA), "--split", "dev"], "dev.tsv not found"),
        ([str(DATA), "--run", "/no/such.trec"], "cannot read /no/such.trec"),
        ([str(DATA / "qrels")], "corpus.jsonl not found"),
    ],
)
def test_eval_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["eval", "--offline", *args], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert message in err


def test_tokens_are_the_endpoints_reported_usage() -> None:
    """Tokens come from the endpoint's ``usage``: summed over the scoring pass, measured per
    depth on the latency sample, or estimated (and marked so) when nothing was timed. A
    reranker that scores everything the same keeps the first stage's order: no gain, and
    an interval of exactly [0, 0]."""

    def seven_tokens(request: httpx.Request) -> httpx.Response:
        flat = LexicalRerankEndpoint(scorer=lambda q, docs: [0.5] * len(docs))
        body = json.loads(flat.handle(request).content)
        body["usage"] = {"prompt_tokens": 7, "total_tokens": 7}
        return httpx.Response(200, json=body)

    client = RerankClient(api_key="x", transport=httpx.MockTransport(seven_tokens))
    data = evaluation.load_dataset("sample")
    first = bm25_rankings(data, 10)
    by_text = {text: first[qid] for qid, text in data.queries.items()}
    report = evaluation.evaluate_reranking(
        by_text.__getitem__, client, data, candidates=[2, 10], latency_sample=3
    )
    assert report.tokens == 8 * 7  # one call per query
    assert [d.tokens_per_query for d in report.depths] == [7, 7]  # one call per timed query
    assert not any(d.tokens_estimated for d in report.depths)
    for d in report.depths:
        assert (d.ndcg, d.mrr, d.recall) == pytest.approx(
            (report.first_stage["ndcg"], report.first_stage["mrr"], report.first_stage["recall"])
        )
        assert d.gain == 0
        assert d.gain_ci == (0.0, 0.0)
    assert report.recommendation.helped is False
    assert report.recommendation.candidates is None

    untimed = evaluation.evaluate_reranking(
        by_text.__getitem__, client, data, candidates=[2, 10], latency_sample=0
    )
    # 7 tokens per 10-document call: 0.7 per document, estimated
    assert [d.tokens_per_query for d in untimed.depths] == pytest.approx([1.4, 7.0])
    assert all(d.tokens_estimated for d in untimed.depths)
    assert all(d.latency_p50_ms is None for d in untimed.depths)


@pytest.mark.loopback
def test_eval_against_a_loopback_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = LexicalRerankEndpoint(api_keys={"dummy"}, scorer=pointwise_lexical_scores)
    plot = tmp_path / "plot.png"
    monkeypatch.setenv("TOGETHER_API_KEY", "dummy")
    with serve_loopback(anonymous(endpoint)) as url:
        argv = ["eval", str(DATA), "--base-url", url, "--candidates", "5,10", "--plot", str(plot)]
        code, out, err = run_cli([*argv, "--latency-sample", "0"], capsys)
    assert code == 0, err
    assert out.splitlines()[0] == f"mode: live — endpoint {url}, model Salesforce/Llama-Rank-V1"
    # one pass: each query's 10 candidates once; depth 5 reuses their scores
    assert sorted(len(r["documents"]) for r in endpoint.requests) == [10] * 8
    check_png(plot)
    endpoint.requests.clear()
    with serve_loopback(endpoint) as url:
        argv = ["eval", str(DATA), "--base-url", url, "--candidates", "5,10"]
        code, out, err = run_cli([*argv, "--latency-sample", "3"], capsys)
    assert code == 0, err
    # and 3 timed calls per depth
    assert sorted(len(r["documents"]) for r in endpoint.requests) == [5] * 3 + [10] * 11
    check_png(plot)


def test_eval_header_counts_the_timed_calls_it_will_make(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The sample has 8 judged queries: the default --latency-sample (20) times 8 calls per
    depth, and the plan printed before the run says 8, as the report's note does after."""
    code, out, err = run_cli(["eval", "sample", "--offline", "--candidates", "5,10"], capsys)
    assert code == 0, err
    plan = next(line for line in out.splitlines() if line.startswith("first stage:"))
    assert "8 calls (at most 80 documents), plus 8 timed calls per depth" in plan
    assert "latency p50/p95 of 8 uncached calls per depth" in out


@pytest.mark.parametrize(
    ("module", "args"),
    [("bm25s", []), ("pytrec_eval", []), ("matplotlib", ["--plot", "x.png"])],
)
def test_missing_cli_extra_is_one_line_with_the_fix(
    module: str,
    args: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    code, out, err = run_cli(["eval", str(DATA), "--offline", *args], capsys)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert '`pip install ".[cli]"` in your clone of together-rerank-plugins' in err


# -- progress, plot format and picture --------------------------------------------------------
class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_eval_shows_progress_on_a_terminal_like_batch(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["eval", str(DATA), "--offline", "--candidates", "5,10"]
    code, _, err = run_cli(argv, capsys)  # stderr is not a terminal: no bar
    assert code == 0, err
    assert "/16" not in err
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert cli.main(argv) == 0
    assert "16/16" in terminal.getvalue()  # 8 queries retrieved, then 8 scored (one pass)
    terminal.seek(0)
    terminal.truncate()
    assert cli.main([*argv, "--no-progress"]) == 0
    assert "/16" not in terminal.getvalue()
    capsys.readouterr()


@pytest.mark.parametrize(
    ("suffix", "magic"),
    [(".png", b"\x89PNG"), (".jpg", b"\xff\xd8\xff"), (".pdf", b"%PDF"), (".svg", b"<?xml")],
)
def test_plot_is_written_in_the_format_its_extension_names(
    suffix: str, magic: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / f"sweep{suffix}"
    argv = ["eval", str(DATA), "--offline", "--candidates", "5", "--plot", str(plot)]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert plot.read_bytes().startswith(magic)


@pytest.mark.parametrize("name", ["sweep.xyz", "sweep", "plots/"])
def test_plot_format_it_cannot_write_is_refused_before_any_call(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = LexicalRerankEndpoint()
    monkeypatch.setattr("together_rerank_plugins.testing.LexicalRerankEndpoint", lambda: endpoint)
    (tmp_path / "plots").mkdir()
    argv = ["eval", str(DATA), "--offline", "--plot", str(tmp_path / name)]
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert ".png" in err
    assert endpoint.requests == []


def test_save_runs_into_a_file_is_refused_before_any_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = LexicalRerankEndpoint()
    monkeypatch.setattr("together_rerank_plugins.testing.LexicalRerankEndpoint", lambda: endpoint)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    argv = ["eval", str(DATA), "--offline", "--save-runs", str(a_file / "runs")]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert endpoint.requests == []


def test_plot_zooms_to_the_data_and_shows_the_gain() -> None:
    endpoint = LexicalRerankEndpoint(scorer=pointwise_lexical_scores)
    client = RerankClient(api_key="x", transport=endpoint)
    data = evaluation.load_dataset("sample")
    first = bm25_rankings(data, 20)
    by_text = {text: first[qid] for qid, text in data.queries.items()}
    report = evaluation.evaluate_reranking(
        by_text.__getitem__, client, data, candidates=[5, 10, 20], latency_sample=2
    )
    fig = report.figure()
    quality, gain, cost, scores = fig.axes[:4]

    # quality: the y axis spans the data (with a margin), not 0-1
    values = [*report.first_stage.values()]
    for point in report.depths:
        values += [point.ndcg, point.mrr, point.recall, point.pool_recall]
    low, high = quality.get_ylim()
    assert low <= min(values)
    assert high >= max(values)
    assert low > 0.5  # every value of this dataset is above 0.87

    # gain: reranked minus first stage, per depth, for each metric, labelled
    assert "gain" in gain.get_title().lower()
    heights = sorted(round(p.get_height(), 6) for p in gain.patches)
    expected = sorted(
        round(getattr(point, m) - report.first_stage[m], 6)
        for point in report.depths
        for m in ("ndcg", "mrr", "recall")
    )
    assert heights == pytest.approx(expected, abs=1e-6)
    labels = {t.get_text() for t in gain.texts}
    assert f"{report.depths[0].gain:+.3f}" in labels

    # cost: every bar carries its value; latency on the right axis
    assert len(cost.texts) == len(cost.patches) == 3
    assert "latency" in fig.axes[4].get_ylabel()
    # scores: relevant and other candidates, and the suggested threshold when there is one
    legend = " ".join(t.get_text() for t in scores.get_legend().get_texts())
    assert "relevant" in legend
    assert "other" in legend
    # readable at 100%: no text smaller than 9 pt
    for ax in fig.axes:
        legend = ax.get_legend()
        for text in [*ax.texts, *(legend.get_texts() if legend else [])]:
            assert text.get_fontsize() >= 9


# -- text that is not valid Unicode ----------------------------------------------------------
def _copy_with(tmp_path: Path, edit: str) -> Path:
    """eval_tiny with a lone surrogate added to the first corpus entry's ``edit`` field and
    to the first query's text."""
    folder = tmp_path / "data"
    (folder / "qrels").mkdir(parents=True)
    (folder / "qrels" / "test.tsv").write_bytes((DATA / "qrels" / "test.tsv").read_bytes())
    for name, field in (("corpus.jsonl", edit), ("queries.jsonl", "text")):
        lines = (DATA / name).read_text(encoding="utf-8").splitlines()
        first = json.loads(lines[0])
        first[field] = str(first[field]) + "\ud83d"
        lines[0] = json.dumps(first)  # written as the escape \ud83d
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_eval_ranks_texts_with_lone_surrogates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy_with(tmp_path, "text")
    runs = tmp_path / "runs"
    argv = ["eval", str(folder), "--offline", "--no-progress", "--save-runs", str(runs)]
    code, out, err = run_cli([*argv, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["queries"] == 8


def test_eval_refuses_an_id_that_is_not_valid_unicode_on_one_line(tmp_path: Path) -> None:
    # a lone surrogate in an id crashed pytrec_eval's C code (a segmentation fault): run in a
    # child process so that, were it to crash again, only the child would
    folder = _copy_with(tmp_path, "_id")
    command = [sys.executable, "-m", "together_rerank_plugins.cli", "eval", str(folder)]
    done = subprocess.run(
        [*command, "--offline", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr
    assert "corpus.jsonl line 1" in done.stderr
    assert '"_id"' in done.stderr


# -- your own retriever, a score cache --------------------------------------------------------
APP = """
from together_rerank_plugins.evaluation import load_dataset

CORPUS = load_dataset("sample").corpus


def build():
    def overlap(query):
        words = set(query.lower().split())
        return sorted(CORPUS, key=lambda d: (-len(words & set(CORPUS[d].lower().split())), d))[:3]

    return overlap
"""


def test_eval_with_your_retriever_and_a_disk_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_eval_app.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_eval_app", raising=False)
    argv = [
        "eval",
        "sample",
        "--offline",
        "--retriever",
        "my_eval_app:build",
        "--candidates",
        "2,5",
        "--latency-sample",
        "0",
        "--cache",
        str(tmp_path / "scores"),
        "--json",
    ]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["first_stage"]["name"] == "overlap"
    # a plain function: its depth cannot be set, and the report says so and counts
    assert report["retriever_depth"].startswith("not set: overlap is a plain function")
    assert "8 of 8 queries returned fewer than 5 candidates" in err
    assert report["documents_sent"] == 8 * 3
    assert report["depths"][1]["short_queries"] == 8
    # the same evaluation again: every score comes from the disk store, nothing is sent
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    again = json.loads(out)
    assert again["documents_sent"] == 0
    assert again["cache_hits"] == 8 * 3
    quality = ("ndcg", "mrr", "recall", "pool_recall", "gain", "gain_ci")
    for ours, theirs in zip(again["depths"], report["depths"], strict=True):
        assert {k: ours[k] for k in quality} == {k: theirs[k] for k in quality}
    # nothing sent, nothing reported: no token figure rather than a made-up one
    assert again["tokens"] is None
    assert all(d["tokens_per_query"] is None for d in again["depths"])
    # and it says why (not "not reported by the endpoint": nothing was sent)
    assert (
        "tokens: none measured (nothing was sent: every score came from the cache)"
        in (again["notes"])
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nocolon", "expected MODULE:ATTRIBUTE"),
        ("no_such_module_xyz:r", "cannot import no_such_module_xyz"),
        ("json:no_such_attribute", "json has no no_such_attribute"),
    ],
)
def test_eval_retriever_spec_errors(
    spec: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["eval", "sample", "--offline", "--retriever", spec], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert message in err


DEEPENABLE_APP = """
from together_rerank_plugins.evaluation import load_dataset

CORPUS = load_dataset("sample").corpus


class Overlap:
    \"\"\"A retriever with a depth, k, as LangChain's BM25Retriever has.\"\"\"

    def __init__(self):
        self.k = 3

    async def ainvoke(self, query):
        words = set(query.lower().split())
        ranked = sorted(CORPUS, key=lambda d: (-len(words & set(CORPUS[d].lower().split())), d))
        return ranked[: self.k]


retriever = Overlap()
"""


def test_eval_deepens_your_retriever_to_the_deepest_depth_as_the_library_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a cutoff above the deepest depth the command deepened the retriever to the
    cutoff (k=10) and said so, while the evaluation (and the library) used its top 5."""
    (tmp_path / "deep_eval_app.py").write_text(DEEPENABLE_APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "deep_eval_app", raising=False)
    argv = ["eval", "sample", "--offline", "--retriever", "deep_eval_app:retriever"]
    argv += ["--candidates", "2,5", "--cutoff", "10", "--latency-sample", "0", "--json"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["retriever_depth"] == "k=5"
    assert report["documents_sent"] == 8 * 5
    import deep_eval_app  # type: ignore[import-not-found]

    assert deep_eval_app.retriever.k == 3  # yours, unchanged


def test_eval_counts_and_sends_only_queries_with_a_relevant_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "zero_eval_app.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "zero_eval_app", raising=False)
    from together_rerank_plugins.evaluation import load_dataset

    sample = load_dataset("sample")
    rows = [{"id": q, "query": t, "relevant": sample.qrels[q]} for q, t in sample.queries.items()]
    rows.append({"id": "nothing", "query": "what is not here", "relevant": {"x": 0}})
    path = tmp_path / "judged.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["eval", str(path), "--offline", "--retriever", "zero_eval_app:build"]
    argv += ["--candidates", "3", "--latency-sample", "0", "--json"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "in one pass: 8 calls (at most 24 documents)" in err
    report = json.loads(out)
    assert report["queries"] == 8
    assert report["requests"] == 8
    assert "1 judged queries have no relevant document" in err


def test_a_negative_seed_is_refused_before_anything_is_sent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """numpy's generator refused it with a traceback, after every query was scored."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["eval", "--offline", str(DATA), "--seed", "-1"])
    assert exc.value.code == 2
    assert "argument --seed: must be >= 0, got -1" in capsys.readouterr().err
