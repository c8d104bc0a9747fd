"""The ``together-rerank`` command line: ``rerank``, ``demo``, and what every command shares
(mode line, no-key message, exit codes, the installed console script).

In-process runs call ``cli.main`` with the embedded endpoint (``--offline``) or against a
loopback server (``serve_loopback`` + ``--base-url``); subprocess runs check the installed
entry points. Nothing here reaches Together.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from together_rerank_plugins import RerankClient, cli
from together_rerank_plugins.evaluation import SAMPLE_PATH
from together_rerank_plugins.testing import LexicalRerankEndpoint, serve_loopback

from .conftest import anonymous

DOCS = [
    "Berlin is the capital of Germany.",
    "Paris is the capital of France.",
    "Rome is in Italy, far from France.",
    "Bananas are yellow.",
]
QUERY = "capital of France"


def run_cli(
    argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str | None = None
) -> tuple[int, str, str]:
    if stdin is not None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "stdin", io.StringIO(stdin))
            code = cli.main(argv)
    else:
        code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expected_order(query: str, docs: list[str]) -> list[tuple[int, float]]:
    """The ranking the library gives with the embedded endpoint, called directly."""
    client = RerankClient(api_key="x", transport=LexicalRerankEndpoint())
    return [(r.index, r.relevance_score) for r in client.rerank(query, docs)]


def table_rows(out: str) -> list[tuple[int, float, int, str]]:
    rows = []
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "score"])
    for line in lines[start + 1 :]:
        if line.startswith("tokens:"):
            break
        rank, score, number, text = line.split(maxsplit=3)
        rows.append((int(rank), float(score), int(number), text))
    return rows


@pytest.fixture
def docs_file(tmp_path: Path) -> Path:
    path = tmp_path / "docs.txt"
    # a blank line: skipped, but line numbers still count it
    path.write_text("\n".join([DOCS[0], DOCS[1], "", DOCS[2], DOCS[3]]) + "\n")
    return path


# -- rerank ----------------------------------------------------------------------------------
def test_rerank_offline_table(docs_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["rerank", "--offline", QUERY, str(docs_file)], capsys)
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith("mode: offline — embedded lexical test endpoint (not LlamaRank")
    rows = table_rows(out)
    expected = expected_order(QUERY, DOCS)
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert [r[3] for r in rows] == [DOCS[i] for i, _ in expected]
    assert [r[1] for r in rows] == pytest.approx([s for _, s in expected], abs=5e-5)
    file_line = {0: 1, 1: 2, 2: 4, 3: 5}
    assert [r[2] for r in rows] == [file_line[i] for i, _ in expected]
    assert lines[-1].startswith("tokens: ")


def test_rerank_stdin_json_top_n_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["rerank", "--offline", QUERY, "-", "--json", "--top-n", "3", "--score-threshold", "0.1"]
    code, out, err = run_cli(argv, capsys, stdin="\n".join(DOCS))
    assert code == 0, err
    assert err.splitlines()[0].startswith("mode: offline")  # stdout stays pure JSON
    assert out.count("\n") == 1
    data = json.loads(out)
    assert data["mode"].startswith("offline — embedded lexical test endpoint")
    assert data["offline"] is True
    expected = [(i, s) for i, s in expected_order(QUERY, DOCS)[:3] if s >= 0.1]
    assert [(r["index"], r["relevance_score"]) for r in data["results"]] == expected
    assert [r["rank"] for r in data["results"]] == list(range(1, len(expected) + 1))
    assert [r["document"] for r in data["results"]] == [DOCS[i] for i, _ in expected]
    assert data["documents"] == 4
    assert data["usage"] is None or data["usage"]["total_tokens"] > 0


def test_rerank_file_is_optional_with_piped_stdin(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["rerank", "--offline", QUERY], capsys, stdin="\n".join(DOCS))
    assert code == 0, err
    assert table_rows(out)[0][3] == DOCS[1]


def test_rerank_jsonl_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(DOCS)))
    code, out, err = run_cli(
        ["rerank", "--offline", QUERY, str(path), "--field", "body", "--json"], capsys
    )
    assert code == 0, err
    results = json.loads(out)["results"]
    assert [r["index"] for r in results] == [i for i, _ in expected_order(QUERY, DOCS)]
    assert results[0]["document"] == DOCS[1]


def test_rerank_jsonl_rank_fields_sends_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"name": "mercury", "text": "a liquid metal", "extra": "France"},
        {"name": "iron", "text": "capital of France? no, a solid metal", "extra": ""},
    ]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    endpoint = LexicalRerankEndpoint()
    monkeypatch.setattr("together_rerank_plugins.testing.LexicalRerankEndpoint", lambda: endpoint)
    argv = ["rerank", "--offline", QUERY, str(path), "--rank-fields", "name,text", "--json"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert endpoint.requests[0]["documents"] == rows
    assert endpoint.requests[0]["rank_fields"] == ["name", "text"]
    data = json.loads(out)
    assert data["results"][0]["index"] == 1
    assert data["results"][0]["document"] == rows[1]


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["--field", "t", "--rank-fields", "a"], "{}", "not both"),
        (["--field", "t"], "not json\n", "line 1: not valid JSON"),
        (["--field", "t"], '{"u": "x"}\n', "line 1: has no field 't'"),
        (["--rank-fields", "a,b"], '{"a": 1}\n', "line 1: no field(s) ['b']"),
        (["--rank-fields", "a,,b"], '{"a": 1}\n', "comma-separated"),
        ([], "\n  \n", "no documents"),
    ],
)
def test_rerank_bad_input_is_a_usage_error(
    argv: list[str], stdin: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["rerank", "--offline", QUERY, "-", *argv], capsys, stdin=stdin)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert message in err


def test_rerank_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["rerank", "--offline", QUERY, str(tmp_path / "nope.txt")], capsys)
    assert code == 2
    assert err.startswith("error: cannot read ")


def test_library_error_is_one_line_exit_1(
    docs_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["rerank", "--offline", "   ", str(docs_file)], capsys)
    assert code == 1
    assert out.startswith("mode: offline")
    assert err.count("\n") == 1
    assert err.startswith("error: RerankInputError: ")
    assert "Traceback" not in err


def test_demo_without_a_key_runs_offline_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["demo", "--questions", "1"], capsys)
    assert code == 0
    assert out.startswith("mode: offline")


@pytest.mark.parametrize("command", ["rerank", "batch", "eval"])
def test_no_key_and_no_offline_fails_with_a_hint(
    command: str, docs_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = {
        "rerank": ["rerank", QUERY, str(docs_file)],
        "batch": ["batch", str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl")],
        "eval": ["eval", str(SAMPLE_PATH)],
    }[command]
    (tmp_path / "in.jsonl").write_text('{"query": "q", "documents": ["d"]}\n')
    code, out, err = run_cli(args, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "TOGETHER_API_KEY" in err
    assert "--offline" in err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["rerank", "--offline", QUERY, "-", "--top-n", "0"],
        ["rerank", "--offline", QUERY, "-", "--timeout", "0"],
        ["rerank", "--offline", QUERY, "-", "--max-retries", "-1"],
        ["rerank", "--offline", QUERY, "-", "--score-threshold", "nan"],
        ["rerank", "--offline"],
        ["batch", "--offline", "in.jsonl"],
        ["eval", "--offline", "x", "--candidates", "10,x"],
        ["eval", "--offline", "x", "--candidates", "0"],
        ["nope"],
        [],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "usage: together-rerank" in capsys.readouterr().err


def test_offline_refuses_live_only_flags(
    docs_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["rerank", "--offline", "--base-url", "http://127.0.0.1:9", QUERY, str(docs_file)]
    code, _out, err = run_cli(argv, capsys)
    assert code == 2
    assert "drop --base-url" in err


def test_offline_ignores_the_environment(
    docs_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", "would-be-live")
    monkeypatch.setenv("TOGETHER_BASE_URL", "http://192.0.2.1")  # never contacted
    monkeypatch.setenv("TOGETHER_RERANK_MODEL", "some/model")
    code, out, err = run_cli(["rerank", "--offline", QUERY, str(docs_file), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["model"] == "embedded-lexical-overlap"


@pytest.mark.loopback
def test_rerank_against_a_loopback_server(
    docs_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = LexicalRerankEndpoint(api_keys={"dummy"}, models={"my-org/ranker", "flag/model"})
    with serve_loopback(anonymous(endpoint)) as url:
        monkeypatch.setenv("TOGETHER_API_KEY", "dummy")
        monkeypatch.setenv("TOGETHER_RERANK_MODEL", "my-org/ranker")
        argv = ["rerank", QUERY, str(docs_file), "--base-url", url, "--top-n", "2"]
        code, out, err = run_cli(argv, capsys)
        assert code == 0, err
        assert out.splitlines()[0] == f"mode: live — endpoint {url}, model my-org/ranker"
        rows = table_rows(out)
        assert [r[3] for r in rows] == [DOCS[i] for i, _ in expected_order(QUERY, DOCS)[:2]]
        assert endpoint.requests[-1]["model"] == "my-org/ranker"
        assert endpoint.requests[-1]["top_n"] == 2

        # flags win over the environment; TOGETHER_BASE_URL is honoured
        monkeypatch.setenv("TOGETHER_BASE_URL", url)
        code, out, err = run_cli(["rerank", QUERY, str(docs_file), "--model", "flag/model"], capsys)
        assert code == 0, err
        assert endpoint.requests[-1]["model"] == "flag/model"


@pytest.mark.loopback
def test_rerank_api_key_flag_warns_and_refused_key_is_one_line(
    docs_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = LexicalRerankEndpoint(api_keys={"the-right-key"})
    with serve_loopback(anonymous(endpoint)) as url:
        base = ["rerank", QUERY, str(docs_file), "--base-url", url, "--max-retries", "0"]
        code, out, err = run_cli([*base, "--api-key", "the-right-key"], capsys)
        assert code == 0, err
        assert err.startswith("warning: --api-key is visible")
        assert out.startswith("mode: live")
        code, out, err = run_cli([*base, "--api-key", "a-wrong-key-123"], capsys)
    assert code == 1
    last = err.splitlines()[-1]
    assert last.startswith("error: AuthenticationError: ")
    assert err.count("\n") == 2  # the --api-key warning, then the error
    assert "a-wrong-key-123" not in err + out
    assert "Traceback" not in err


@pytest.mark.loopback
def test_rerank_says_test_endpoint_when_the_environment_points_at_it(
    docs_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m together_rerank_plugins.testing`'s exports: not "mode: live"."""
    endpoint = LexicalRerankEndpoint()
    with serve_loopback(endpoint) as url:
        monkeypatch.setenv("TOGETHER_API_KEY", "placeholder")
        monkeypatch.setenv("TOGETHER_BASE_URL", url)
        code, out, err = run_cli(["rerank", QUERY, str(docs_file)], capsys)
        assert code == 0, err
        first = out.splitlines()[0]
        assert first.startswith(
            f"mode: test endpoint — the embedded lexical test endpoint at {url}"
        )
        assert "not LlamaRank" in first
        code, out, err = run_cli(["rerank", QUERY, str(docs_file), "--json"], capsys)
    assert code == 0, err
    assert err.startswith("mode: test endpoint")
    data = json.loads(out)
    assert (data["offline"], data["test_endpoint"]) == (False, True)
    assert len(endpoint.requests) == 2  # the identity check scored nothing


# -- demo ------------------------------------------------------------------------------------
def test_demo_offline_passes_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["demo", "--offline", "--questions", "1", "--top-n", "2"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("mode: offline")
    assert "not LlamaRank" in lines[0]
    assert "reranked: top 2" in lines[1]
    assert sum(line.startswith("Q1. ") for line in lines) == 2  # LlamaIndex and LangChain
    assert not any(line.startswith("Q2. ") for line in lines)
    assert lines[-1].startswith("summary: ")


def test_demo_bad_argument_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--offline", "--top-n", "0"])
    assert exc.value.code == 2
    capsys.readouterr()


@pytest.mark.loopback
def test_demo_against_a_loopback_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = LexicalRerankEndpoint(api_keys={"dummy"})
    with serve_loopback(anonymous(endpoint)) as url:
        monkeypatch.setenv("TOGETHER_API_KEY", "dummy")
        monkeypatch.setenv("TOGETHER_BASE_URL", url)
        code, out, err = run_cli(["demo", "--questions", "1"], capsys)
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"mode: live — Together endpoint {url}")
    assert len(endpoint.requests) == 2  # one question, two frameworks


# -- entry points ----------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def test_module_entry_point_and_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "together_rerank_plugins.cli", "--help"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: together-rerank")
    for command in ("rerank", "batch", "eval", "demo"):
        assert command in proc.stdout


def _run_shell_block(text: str, heading: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the first ```bash block under ``heading`` as a user would: through the installed
    ``together-rerank`` console script, in an empty folder (``eval`` uses the packaged
    ``sample``)."""
    script_dir = Path(sys.executable).parent
    if not (script_dir / "together-rerank").exists():
        pytest.skip("the together-rerank script is not installed next to this interpreter")
    section = text.split(heading, 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    env = _env()
    env["PATH"] = f"{script_dir}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_readme_command_line_block_runs(tmp_path: Path) -> None:
    """The README's command-line block runs as written."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    proc = _run_shell_block(text, "## Command line", tmp_path)
    assert proc.stdout.count("mode: offline") == 2
    assert "Paris is the capital of France." in proc.stdout.split("mode: offline")[1]
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"


# -- rerank on JSONL without --field ---------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_rerank_jsonl_without_field_says_which_flag(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"docs{suffix}"
    path.write_text("".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(DOCS)))
    code, out, err = run_cli(["rerank", "--offline", QUERY, str(path)], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "--field body" in err
    assert "--rank-fields" in err


def test_rerank_plain_lines_that_merely_look_like_json_are_ranked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # one line is an object, the others are not: plain text, ranked as written
    path = tmp_path / "docs.txt"
    path.write_text('{"a": 1}\n' + "\n".join(DOCS) + "\n")
    code, out, err = run_cli(["rerank", "--offline", QUERY, str(path)], capsys)
    assert code == 0, err
    assert len(table_rows(out)) == 5


# -- --model-family and --deadline reach the client -------------------------------------------
@pytest.mark.parametrize("command", ["rerank", "batch", "eval"])
def test_model_family_and_deadline_flags_reach_the_client(
    command: str,
    docs_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[RerankClient] = []

    def recording_client(**kwargs: object) -> RerankClient:
        client = RerankClient(**kwargs)  # type: ignore[arg-type]
        seen.append(client)
        return client

    monkeypatch.setattr("together_rerank_plugins.cli._common.RerankClient", recording_client)
    (tmp_path / "in.jsonl").write_text('{"query": "q", "documents": ["d"]}\n')
    args = {
        "rerank": ["rerank", QUERY, str(docs_file)],
        "batch": ["batch", str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl")],
        "eval": ["eval", str(SAMPLE_PATH), "--candidates", "2"],
    }[command]
    code, _, err = run_cli([*args, "--offline"], capsys)
    assert code == 0, err
    # offline, the embedded endpoint's family is set explicitly; no deadline unless asked
    assert seen[-1].model_family == "llama-rank"
    assert seen[-1].deadline is None
    (tmp_path / "out.jsonl").unlink(missing_ok=True)
    code, _, err = run_cli(
        [*args, "--offline", "--model-family", "mxbai", "--deadline", "7.5"], capsys
    )
    assert code == 0, err
    assert seen[-1].model_family == "mxbai"
    assert seen[-1].deadline == 7.5


@pytest.mark.parametrize("flags", [["--model-family", "bert"], ["--deadline", "0"]])
def test_model_family_and_deadline_are_checked(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["rerank", "--offline", QUERY, "-", *flags])
    assert exc.value.code == 2
    capsys.readouterr()


def test_every_client_command_documents_the_new_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("rerank", "batch", "eval"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--model-family {llama-rank,mxbai}" in text
        assert "--deadline SECONDS" in text


def test_demo_help_names_the_command_it_was_called_as(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: together-rerank demo ")


# -- docs/cli.md shows what the commands print -----------------------------------------------
def _text_blocks(section: str) -> list[str]:
    text = (Path(__file__).parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    body = text.split(section, 1)[1].split("\n## ", 1)[0]
    return [b.split("```", 1)[0] for b in body.split("```text\n")[1:]]


def test_docs_eval_table_is_what_the_command_prints(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", "--offline", "sample", "--candidates", "5,10,20", "--latency-sample", "0"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    table = out[out.index("\n8 judged queries;") + 1 :]
    assert table in _text_blocks("## `eval`")


def test_docs_mode_lines_are_what_the_commands_print(
    docs_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["rerank", "--offline", QUERY, str(docs_file)], capsys)
    assert code == 0
    assert out.splitlines()[0] + "\n" in _text_blocks("## Try it offline")
    code, out, _ = run_cli(["demo", "--questions", "1"], capsys)  # no key: offline, says so
    assert code == 0
    assert out.splitlines()[0] + "\n" in _text_blocks("## `demo`")


def test_docs_cli_shell_blocks_run_in_order_as_written(tmp_path: Path) -> None:
    """Every ```bash block of docs/cli.md but the install line, in order, in one folder (the
    "Try it offline" block among them, once: its files are checked here)."""
    text = (Path(__file__).parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```bash\n")[1:]]
    runnable = [b for b in blocks if not b.startswith("pip install")]
    assert len(runnable) == len(blocks) - 1
    try_it = text.split("## Try it offline", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert try_it in runnable
    script = "## all\n```bash\n" + "".join(runnable) + "```\n"
    proc = _run_shell_block(script, "## all", tmp_path)
    assert "usage: together-rerank" in proc.stdout
    # every offline command says so on its first line (on stderr with --json)
    offline = sum(line.count(" --offline") for b in runnable for line in b.splitlines())
    assert offline >= 3
    said = (proc.stdout + proc.stderr).count("mode: offline — embedded lexical test endpoint")
    assert said == offline
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"  # the "Try it offline" block
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "sweep.svg").read_text().startswith("<?xml")
    assert (tmp_path / "sweep.pdf").read_bytes().startswith(b"%PDF")
    assert len((tmp_path / "top5.jsonl").read_text().splitlines()) == 2
    # the sample OUT line of the batch section is row "a" of the offline example
    sample = text.split("## `batch`", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    out_lines = (tmp_path / "out.jsonl").read_text().splitlines(keepends=True)
    assert sample in out_lines


# -- text that is not valid Unicode ----------------------------------------------------------
LONE = "\ud83d"  # half of an emoji's UTF-16 pair, as JSON can carry it ("\ud83d")


@pytest.mark.parametrize("flag", [["--field", "text"], ["--rank-fields", "text"]])
@pytest.mark.parametrize("as_json", [True, False])
def test_rerank_prints_documents_and_queries_with_lone_surrogates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str], as_json: bool
) -> None:
    texts = [f"Paris is the capital of France {LONE}", "Bananas are yellow."]
    docs_file = tmp_path / "docs.jsonl"
    docs_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    query = f"capital of France {LONE}"  # e.g. a shell argument that is not UTF-8
    argv = ["rerank", "--offline", query, str(docs_file), *flag]
    code, out, err = run_cli([*argv, "--json"] if as_json else argv, capsys)
    assert code == 0, err
    expected = expected_order(query, texts)
    if as_json:
        result = json.loads(out)  # valid JSON, the text exactly as given
        assert result["query"] == query
        got = [(r["index"], r["relevance_score"]) for r in result["results"]]
        assert got == expected
        documents = [r["document"] for r in result["results"]]
        sent = [{"text": texts[i]} if flag[0] == "--rank-fields" else texts[i] for i, _ in got]
        assert documents == sent
    else:
        assert [(r[2] - 1, r[1]) for r in table_rows(out)] == expected
        assert "\\ud83d" in out  # shown, as an escape
