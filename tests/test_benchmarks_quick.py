"""``benchmarks/run.py --quick`` does not fail on the noise of single samples, and the report
it writes (``docs/performance.md``) publishes no local path, no internal reference and only
durations that were measured."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _harness import Row  # noqa: E402  (benchmarks/ is not a package)
from _report import (  # noqa: E402
    check_public,
    machine_facts,
    render_doc,
    unjudge_timings,
    verdict,
)

ROOT = BENCHMARKS.parent


def test_quick_run_judges_counts_not_single_timing_samples() -> None:
    rows = [
        Row(
            "overhead 100 docs sync: LangChain compress_documents",
            "9 ms",
            "SDK 8 ms",
            "1.2x",
            "<= 1.10x",
            False,
        ),
        Row(
            "async x64: LlamaIndex apostprocess_nodes",
            "600 ms",
            "limit 500 ms",
            "1.2x",
            "<= 1.2x",
            True,
        ),
        Row(
            "cache: repeated query, core RerankClient.rerank",
            "3 docs sent",
            "20 docs",
            "0.15",
            "0 documents",
            False,
        ),
        Row("dedupe: 30% duplicates, core", "70 docs", "100 docs", "0.70", "0.70", True),
        Row("async x64: AsyncTogether direct (the limit)", "500 ms", "", "1.00", "-", None),
    ]
    unjudge_timings(rows)
    assert [r.ok for r in rows] == [None, None, False, True, None]
    assert "not judged" in rows[0].notes[-1]
    assert verdict(rows)[0] == "1 of 2 targets met."  # a wrong count still fails the run


def _rows() -> list[Row]:
    return [
        Row("cache: repeated query, core", "0 docs sent", "20 docs", "0.00", "0 documents", True),
        Row(
            "import together_rerank_plugins.langchain",
            "378 ms [328 ms-487 ms], n=5",
            "import langchain_core.documents.compressor: 441 ms",
            "0.86x",
            "<= 1.15x",
            True,
            ["also imported: neither the `together` SDK nor llama_index (only its own framework)"],
        ),
    ]


PRIVATE = re.compile(r"\b(?:issue|capability|item|stop|review|session)s? #?\d+\b", re.I)


def assert_public(text: str) -> None:
    for local in (str(ROOT), str(Path.home()), sys.executable, sys.prefix):
        assert local not in text, f"a local path in the report: {local}"
    assert not PRIVATE.search(text), PRIVATE.search(text)
    assert "-dirty" not in text
    # durations are the measured ones, not estimates such as "~1 min" or "about 2-3 minutes"
    estimate = re.search(r"(?:~|\babout |\baround )\s*\d[\d-]*\s*(?:min|s\b)", text)
    assert not estimate, estimate


@pytest.mark.parametrize("quick", [False, True])
def test_the_report_publishes_no_local_path_or_internal_reference(quick: bool) -> None:
    """Rendered from a fixture result with this machine's real facts (interpreter, git)."""
    facts = machine_facts(ROOT, (0.5,), 123.4, quick)
    doc = render_doc(_rows(), facts, ["--quick"] if quick else [], 123.4)
    assert_public(doc)
    assert "run time: 123 s" in doc
    assert "The run reported below took 123 s on the machine it describes" in doc
    source = next(f for f in facts if f.startswith("source: "))
    commit = r"commit [0-9a-f]{4,}( with uncommitted changes to the measured code)?"
    assert re.fullmatch(rf"source: ({commit}|not a git checkout)", source)


@pytest.mark.parametrize(
    "note",
    [
        f"profile written to {Path.home()}/bench.prof",
        f"server started with {sys.executable}",
        "see issue 3 for the targets",
        "(capability 5)",
        "as measured at stop 21",
        "found in review 16",
        "see the note of session 4",
        "source: git add1156-dirty",
    ],
)
def test_the_writer_refuses_a_report_that_would_publish_them(note: str) -> None:
    rows = _rows()
    rows[0].notes.append(note)
    with pytest.raises(ValueError, match="local or internal details"):
        render_doc(rows, ["run time: 1 s"], [], 1.0)
    with pytest.raises(ValueError, match="local or internal details"):
        check_public(note)


def test_the_committed_performance_page_is_public() -> None:
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert_public(text)
    check_public(text)
    measured = re.search(r"^- run time: (\d+) s$", text, re.MULTILINE)
    assert measured, "the page states its run time among the machine's facts"
    assert f"reported below took {measured.group(1)} s" in text  # the same figure
