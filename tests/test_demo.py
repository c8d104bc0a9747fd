"""The seed-workflow demo (``python -m together_rerank_plugins.demo``), run offline, as a
subprocess, and in live mode against a loopback server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from together_rerank_plugins import demo
from together_rerank_plugins.testing import LexicalRerankEndpoint, serve_loopback

from .conftest import anonymous

FRAMEWORKS = ("LlamaIndex", "LangChain")

_SECTION = re.compile(r"^=== (\w+): ")
_QUESTION = re.compile(r"^Q(\d+)\. ")
_FIRST_ROW = re.compile(r"^\s+(\d+)\s+(-?\d\.\d{3})\s+([a-z]{2}\d{2})\s")
_RERANK_ROW = re.compile(r"^\s+(\d+)\s+(-?\d\.\d{3})\s+(\d+)\s+([a-z]{2}\d{2})\s")
_MORE = re.compile(r"^\s+ranks \d+-\d+: (.*)$")


@dataclass
class Block:
    candidates: list[str] = field(default_factory=list)  # ids in first-stage order
    reranked: list[tuple[int, float, int, str]] = field(default_factory=list)


def parse(out: str) -> dict[tuple[str, int], Block]:
    """Parse the demo's tables into {(framework, question number): Block}."""
    blocks: dict[tuple[str, int], Block] = {}
    framework = ""
    block = Block()
    table = ""
    for line in out.splitlines():
        if m := _SECTION.match(line):
            framework = m.group(1)
        elif m := _QUESTION.match(line):
            block = blocks.setdefault((framework, int(m.group(1))), Block())
        elif line.startswith("  first stage:"):
            table = "first"
        elif line.startswith("  reranked:"):
            table = "reranked"
        elif table == "first" and (m := _MORE.match(line)):
            block.candidates.extend(m.group(1).split())
        elif table == "first" and (m := _FIRST_ROW.match(line)):
            assert int(m.group(1)) == len(block.candidates) + 1
            block.candidates.append(m.group(3))
        elif table == "reranked" and (m := _RERANK_ROW.match(line)):
            rank, score, from_rank, pid = m.groups()
            block.reranked.append((int(rank), float(score), int(from_rank), pid))
    return blocks


def check_blocks(out: str, *, n_questions: int, top_n: int = 5) -> dict[tuple[str, int], Block]:
    blocks = parse(out)
    assert sorted(blocks) == sorted((fw, q) for fw in FRAMEWORKS for q in range(1, n_questions + 1))
    for key, block in blocks.items():
        assert len(block.candidates) == demo.FIRST_STAGE_K, key
        assert len(set(block.candidates)) == demo.FIRST_STAGE_K, key
        assert [r[0] for r in block.reranked] == list(range(1, top_n + 1)), key
        scores = [r[1] for r in block.reranked]
        assert scores == sorted(scores, reverse=True), key
        for _, _, from_rank, pid in block.reranked:
            assert pid in block.candidates, key
            assert block.candidates[from_rank - 1] == pid, key  # "from" is its first-stage rank
    return blocks


def test_offline_run(capsys: pytest.CaptureFixture[str]) -> None:
    code = demo.main(["--offline"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0].startswith("mode: offline")
    assert "not LlamaRank" in lines[0]
    for fw in FRAMEWORKS:
        assert any(line.startswith(f"=== {fw}: ") for line in lines), fw
    check_blocks(captured.out, n_questions=len(demo.load_corpus().questions))
    assert lines[-1].startswith("summary: ")


def test_offline_run_shows_reranking_helping() -> None:
    """The corpus is built so the lexical reranker fixes near-misses of the first stage."""
    corpus = demo.load_corpus()
    kwargs = {"api_key": "offline", "transport": LexicalRerankEndpoint()}
    for run in (demo.run_llama_index, demo.run_langchain):
        comps = run(corpus, corpus.questions, rerank_kwargs=kwargs)
        fixed = [
            c
            for c in comps
            if c.candidates[0].passage.id != c.question.answer_id
            and c.reranked[0].passage.id == c.question.answer_id
        ]
        assert len(fixed) >= 2, run.__name__
        for c in comps:  # the intended answer is among the 20 candidates
            assert c.question.answer_id in {h.passage.id for h in c.candidates}


def test_offline_flag_wins_over_a_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", "would-be-live")
    monkeypatch.setenv("TOGETHER_BASE_URL", "http://192.0.2.1")  # never contacted
    assert demo.main(["--offline", "--questions", "1", "--top-n", "3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("mode: offline")
    check_blocks(out, n_questions=1, top_n=3)


def test_missing_framework_is_skipped_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "_installed", lambda module: module != "llama_index.core")
    assert demo.main(["--offline", "--questions", "1"]) == 0
    out = capsys.readouterr().out
    assert 'run `pip install ".[llama-index]"` in your clone of together-rerank-plugins' in out
    assert "=== LlamaIndex" not in out
    assert "=== LangChain" in out


def test_library_error_is_one_line_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", "dummy")
    monkeypatch.setenv("TOGETHER_BASE_URL", "ftp://example.invalid")
    assert demo.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: RerankConfigError: ")
    assert "Traceback" not in err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--top-n", "0"], ["--top-n", "21"], ["--questions", "x"]):
        with pytest.raises(SystemExit) as exc:
            demo.main(["--offline", *argv])
        assert exc.value.code == 2
    capsys.readouterr()


def test_module_runs_as_a_subprocess() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
    env["PYTHONIOENCODING"] = "utf-8"
    proc = subprocess.run(
        [sys.executable, "-m", "together_rerank_plugins.demo", "--offline"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("mode: offline")
    check_blocks(proc.stdout, n_questions=len(demo.load_corpus().questions))


@pytest.mark.loopback
def test_live_mode_against_a_loopback_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = LexicalRerankEndpoint(api_keys={"dummy-key"}, models={"my-org/dedicated"})
    with serve_loopback(anonymous(endpoint)) as url:
        monkeypatch.setenv("TOGETHER_API_KEY", "dummy-key")
        monkeypatch.setenv("TOGETHER_BASE_URL", url)
        monkeypatch.setenv("TOGETHER_RERANK_MODEL", "my-org/dedicated")
        code = demo.main(["--questions", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    first = captured.out.splitlines()[0]
    assert first == f"mode: live — Together endpoint {url}, model my-org/dedicated"
    check_blocks(captured.out, n_questions=2)
    assert len(endpoint.requests) == 2 * len(FRAMEWORKS)  # one rerank call per question
    assert all(r["model"] == "my-org/dedicated" for r in endpoint.requests)


@pytest.mark.loopback
def test_test_endpoint_named_on_the_first_line_not_live_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pointed at `python -m together_rerank_plugins.testing` through the environment."""
    endpoint = LexicalRerankEndpoint()
    with serve_loopback(endpoint) as url:
        monkeypatch.setenv("TOGETHER_API_KEY", "placeholder")
        monkeypatch.setenv("TOGETHER_BASE_URL", url)
        code = demo.main(["--questions", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    first = captured.out.splitlines()[0]
    assert first.startswith(f"mode: test endpoint — the embedded lexical test endpoint at {url}")
    assert "not LlamaRank" in first
    assert len(endpoint.requests) == len(FRAMEWORKS)


@pytest.mark.loopback
def test_live_mode_refused_key_is_one_line_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve_loopback(anonymous(LexicalRerankEndpoint(api_keys={"the-right-key"}))) as url:
        monkeypatch.setenv("TOGETHER_API_KEY", "a-wrong-key")
        monkeypatch.setenv("TOGETHER_BASE_URL", url)
        code = demo.main(["--questions", "1"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.splitlines()[0].startswith("mode: live")
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("error: AuthenticationError: ")
    assert "a-wrong-key" not in captured.err
