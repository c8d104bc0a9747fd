"""``together-rerank batch``: results, resume after SIGKILL and Ctrl-C, failed rows and
``--retry-failed``, bounded concurrency, the progress bar.

The resume tests start a real ``batch`` subprocess against a slow loopback endpoint (the
embedded lexical endpoint, sleeping a little per request, served by this test process),
stop it part way once OUT has some lines (found by polling the file, with a deadline), run
it again, and check that every input row is in OUT exactly once with the right ranking.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from together_rerank_plugins import RerankClient, cli
from together_rerank_plugins.testing import LexicalRerankEndpoint, serve_loopback

from .conftest import anonymous

WORDS = ["apples", "pears", "plums", "figs", "dates", "limes", "kiwis", "grapes"]


def make_rows(n: int) -> list[dict[str, object]]:
    """Rows with ids (every third row has none: keyed by line number), distinct rankings."""
    rows: list[dict[str, object]] = []
    for i in range(n):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 3 + 1) % len(WORDS)]
        row: dict[str, object] = {
            "query": f"fresh {a} number {i}",
            "documents": [f"{b} in a bowl", f"fresh {a} and {b}", f"number {i} {a}", "nothing"],
        }
        if i % 3:
            row["id"] = f"row-{i}"
        rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def key(record: dict[str, object]) -> str:
    return f"id:{record['id']}" if "id" in record else f"line:{record['line']}"


def row_keys(rows: list[dict[str, object]]) -> list[str]:
    return [f"id:{r['id']}" if "id" in r else f"line:{i}" for i, r in enumerate(rows, start=1)]


def read_out(path: Path) -> list[dict[str, object]]:
    """Every line of OUT; fails unless each is complete, valid JSON."""
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "OUT ends with a partial line"
    return [json.loads(line) for line in text.splitlines()]


def complete_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def check_out(out: Path, rows: list[dict[str, object]], top_n: int | None = None) -> None:
    """Every row exactly once, with the ranking the library gives when called directly."""
    records = read_out(out)
    keys = [key(r) for r in records]
    assert sorted(keys) == sorted(row_keys(rows))  # each row once: none lost, none twice
    reference = RerankClient(api_key="x", transport=LexicalRerankEndpoint())
    for record in records:
        row = rows[int(record["line"]) - 1]  # type: ignore[call-overload]
        assert record.get("id") == row.get("id")
        expected = reference.rerank(row["query"], row["documents"], top_n=top_n)  # type: ignore[arg-type]
        assert record["results"] == [
            {"index": r.index, "relevance_score": r.relevance_score} for r in expected
        ]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class Gate:
    """A loopback handler that answers the first ``answered`` requests, then holds each later
    one until :meth:`release` (bounded: 60 s). A test interrupting a batch run is then sure to
    catch it midway, however loaded the machine: with ``--concurrency 4`` at least
    ``answered - 3`` rows are written and the run cannot finish (a delay per request could
    not promise either: under load the run finished before the signal came)."""

    def __init__(self, handle: Callable[[httpx.Request], httpx.Response], answered: int) -> None:
        self._handle = handle
        self._left = answered
        self._lock = threading.Lock()
        self._open = threading.Event()

    def release(self) -> None:
        self._open.set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self._left -= 1
            hold = self._left < 0
        if hold:
            self._open.wait(timeout=60)
        return self._handle(request)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen[str], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while complete_lines(path) < n:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"batch ended (rc {proc.returncode}) before {n} lines:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"OUT did not reach {n} lines within {deadline_s}s")
        time.sleep(0.005)  # polling interval, not a wait for an outcome


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    return tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "out.jsonl.errors.jsonl"


# -- in process ------------------------------------------------------------------------------
def test_batch_offline_end_to_end_and_rerun_is_a_no_op(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    in_path, out_path, err_path = files
    rows = make_rows(25)
    write_rows(in_path, rows)
    argv = ["batch", "--offline", str(in_path), str(out_path), "--top-n", "3"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("mode: offline — embedded lexical test endpoint (not LlamaRank")
    assert "25 to do" in lines[1]
    assert lines[-1].startswith("done: 25 written, 0 failed this run; 25 of 25 rows")
    assert err == ""  # no progress bar: stderr is not a terminal
    check_out(out_path, rows, top_n=3)
    assert not err_path.exists()
    records = read_out(out_path)
    assert all(r["usage"] is None or r["usage"]["total_tokens"] > 0 for r in records)  # type: ignore[index]

    before = out_path.read_bytes()
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "25 already in" in out
    assert "0 to do" in out
    assert out_path.read_bytes() == before


def test_batch_with_documents_and_rank_fields(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    in_path, out_path, _ = files
    docs = [{"name": "iron", "text": "a solid"}, {"name": "mercury", "text": "a liquid metal"}]
    write_rows(in_path, [{"id": 7, "query": "liquid metal", "documents": docs}])
    argv = ["batch", "--offline", str(in_path), str(out_path)]
    code, _, err = run_cli([*argv, "--rank-fields", "name,text", "--with-documents"], capsys)
    assert code == 0, err
    (record,) = read_out(out_path)
    assert record["id"] == 7
    assert [r["document"] for r in record["results"]] == [docs[1], docs[0]]  # type: ignore[attr-defined]


def test_partial_last_line_is_dropped_and_its_row_redone(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    in_path, out_path, _ = files
    rows = make_rows(6)
    write_rows(in_path, rows)
    argv = ["batch", "--offline", str(in_path), str(out_path)]
    assert run_cli(argv, capsys)[0] == 0
    full = out_path.read_text().splitlines(keepends=True)
    # as if killed while writing the fourth line
    out_path.write_text("".join(full[:3]) + full[3][: len(full[3]) // 2])
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "ended with a partial line" in err
    assert "3 already in" in out
    assert "3 to do" in out
    check_out(out_path, rows)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"query": "q", "documents": ["d"]}\nnot json\n', "line 2: not valid JSON"),
        ('["q", ["d"]]\n', "line 1: expected a JSON object"),
        ('{"id": 1, "query": "a"}\n{"id": 1, "query": "b"}\n', "same id 1"),
        ('{"id": [1], "query": "a"}\n', '"id" must be a string or an integer'),
    ],
)
def test_bad_input_is_a_usage_error_before_anything_runs(
    content: str, message: str, files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    in_path, out_path, _ = files
    in_path.write_text(content)
    code, out, err = run_cli(["batch", "--offline", str(in_path), str(out_path)], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert message in err
    assert not out_path.exists()


def test_out_not_written_by_batch_is_refused(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    in_path, out_path, _ = files
    write_rows(in_path, make_rows(2))
    out_path.write_text('{"something": "else"}\n')
    code, _, err = run_cli(["batch", "--offline", str(in_path), str(out_path)], capsys)
    assert code == 2
    assert "not written by `together-rerank batch`" in err
    assert out_path.read_text() == '{"something": "else"}\n'


def test_same_file_twice_is_refused(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    in_path, _, _ = files
    write_rows(in_path, make_rows(2))
    code, _, err = run_cli(["batch", "--offline", str(in_path), str(in_path)], capsys)
    assert code == 2
    assert "three different files" in err


def test_invalid_rows_are_recorded_and_stay_failed(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    in_path, out_path, err_path = files
    rows = make_rows(5)
    rows[1]["query"] = "  "
    del rows[3]["documents"]
    write_rows(in_path, rows)
    argv = ["batch", "--offline", str(in_path), str(out_path)]
    code, out, err = run_cli(argv, capsys)
    assert code == 1
    assert "3 written, 2 failed" in out
    assert err.count("\n") == 1
    assert "--retry-failed" in err
    failed = read_out(err_path)
    assert sorted(key(r) for r in failed) == sorted([row_keys(rows)[1], row_keys(rows)[3]])
    assert {r["error"]["type"] for r in failed} == {"RerankInputError"}  # type: ignore[index]

    code, out, _ = run_cli(argv, capsys)  # a plain re-run skips them
    assert code == 1
    assert "2 failed earlier (skipped" in out
    assert "0 to do" in out
    code, out, _ = run_cli([*argv, "--retry-failed"], capsys)  # still invalid
    assert code == 1
    assert "retrying 2 failed" in out
    assert len(read_out(err_path)) == 2  # compacted: no row twice
    assert len(read_out(out_path)) == 3


def test_progress_bar_on_a_terminal_only(
    files: tuple[Path, Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    in_path, out_path, _ = files
    write_rows(in_path, make_rows(4))
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert cli.main(["batch", "--offline", str(in_path), str(out_path)]) == 0
    assert "4/4" in terminal.getvalue()

    out_path.unlink()
    terminal.seek(0)
    terminal.truncate()
    assert cli.main(["batch", "--offline", "--no-progress", str(in_path), str(out_path)]) == 0
    assert terminal.getvalue() == ""
    capsys.readouterr()


# -- loopback --------------------------------------------------------------------------------
@pytest.mark.loopback
def test_batch_loopback_bounded_concurrency(
    files: tuple[Path, Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    in_path, out_path, _ = files
    rows = make_rows(12)
    write_rows(in_path, rows)
    endpoint = LexicalRerankEndpoint(api_keys={"dummy"})
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most

    def counting(request: httpx.Request) -> httpx.Response:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        try:
            time.sleep(0.02)
            return endpoint.handle(request)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setenv("TOGETHER_API_KEY", "dummy")
    with serve_loopback(anonymous(counting)) as url:
        argv = ["batch", str(in_path), str(out_path), "--base-url", url, "--concurrency", "3"]
        code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert out.splitlines()[0] == f"mode: live — endpoint {url}, model Salesforce/Llama-Rank-V1"
    check_out(out_path, rows)
    assert len(endpoint.requests) == 12
    assert 1 < in_flight[1] <= 3


@pytest.mark.loopback
def test_failed_rows_retried_alone(
    files: tuple[Path, Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    in_path, out_path, err_path = files
    rows = make_rows(9)
    write_rows(in_path, rows)
    endpoint = LexicalRerankEndpoint()
    broken = {"fresh plums number 2", "fresh limes number 5"}
    failing = [True]

    def flaky(request: httpx.Request) -> httpx.Response:
        if failing[0] and json.loads(request.read())["query"] in broken:
            return httpx.Response(503, json={"error": {"message": "overloaded"}})
        return endpoint.handle(request)

    monkeypatch.setenv("TOGETHER_API_KEY", "dummy")
    with serve_loopback(flaky) as url:
        argv = ["batch", str(in_path), str(out_path), "--base-url", url, "--max-retries", "0"]
        code, out, err = run_cli(argv, capsys)
        assert code == 1
        assert "7 written, 2 failed" in out
        failed = read_out(err_path)
        assert {r["error"]["type"] for r in failed} == {"ServerError"}  # type: ignore[index]

        failing[0] = False
        sent = len(endpoint.requests)
        code, out, err = run_cli([*argv, "--retry-failed"], capsys)
        assert code == 0, err
        assert "retrying 2 failed" in out
        assert {r["query"] for r in endpoint.requests[sent:]} == broken  # only those two
    assert not err_path.exists()  # nothing left failed
    check_out(out_path, rows)


@pytest.mark.loopback
def test_refused_key_stops_the_run_on_one_line(
    files: tuple[Path, Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    in_path, out_path, err_path = files
    write_rows(in_path, make_rows(20))
    monkeypatch.setenv("TOGETHER_API_KEY", "wrong-key-0123")
    with serve_loopback(LexicalRerankEndpoint(api_keys={"right"})) as url:
        # one request in flight: the run stops before any other is cut off mid-answer
        argv = ["batch", str(in_path), str(out_path), "--base-url", url, "--concurrency", "1"]
        code, out, err = run_cli(argv, capsys)
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("error: AuthenticationError: ")
    assert "run the same command again to resume" in err
    assert "wrong-key-0123" not in err + out
    assert not err_path.exists()  # not recorded row by row
    assert read_out(out_path) == [] if out_path.exists() else True


# -- real processes: resume after SIGKILL, Ctrl-C --------------------------------------------
def with_ctrl_c(cmd: list[str]) -> list[str]:
    """``cmd`` with SIGINT's default action, as from a terminal. A process started in the
    background by a non-interactive shell (``bash script &``, nohup, some CI runners) inherits
    SIGINT ignored, and Python then installs no KeyboardInterrupt handler: Ctrl-C could not be
    tested. exec keeps a default action, so set it and exec the command."""
    reset = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    reset += "os.execv(sys.argv[1], sys.argv[1:])"
    return [sys.executable, "-c", reset, *cmd]


def _command(in_path: Path, out_path: Path, url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "together_rerank_plugins.cli",
        "batch",
        str(in_path),
        str(out_path),
        "--base-url",
        url,
        "--concurrency",
        "4",
        "--max-retries",
        "0",
    ]


@pytest.mark.loopback
def test_resume_after_sigkill(files: tuple[Path, Path, Path]) -> None:
    in_path, out_path, _ = files
    rows = make_rows(40)
    write_rows(in_path, rows)
    endpoint = LexicalRerankEndpoint()
    sent_by: dict[str, list[str]] = {}  # api key (one per run) -> queries it sent
    lock = threading.Lock()

    def record(request: httpx.Request) -> httpx.Response:
        with lock:
            run_key = request.headers["authorization"].removeprefix("Bearer ")
            sent_by.setdefault(run_key, []).append(json.loads(request.read())["query"])
        return endpoint.handle(request)

    gate = Gate(record, answered=12)  # the first run stops midway: 9 to 12 rows written
    with serve_loopback(gate) as url:
        cmd = _command(in_path, out_path, url)
        try:
            first = subprocess.Popen(
                cmd,
                env=cli_env(TOGETHER_API_KEY="run-1"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_for_lines(out_path, 8, first, deadline_s=30)
            first.kill()  # SIGKILL: no cleanup of any kind
            first.communicate()
        finally:
            gate.release()
        assert first.returncode == -signal.SIGKILL
        done_before = {
            key(json.loads(line))
            for line in out_path.read_text().splitlines(True)
            if line.endswith("\n")
        }
        assert 8 <= len(done_before) < len(rows)

        second = subprocess.run(
            cmd,
            env=cli_env(TOGETHER_API_KEY="run-2"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    assert f"{len(done_before)} already in" in second.stdout
    check_out(out_path, rows)
    # rows already written were not sent again; every other row was, once
    queries = {k: str(r["query"]) for k, r in zip(row_keys(rows), rows, strict=True)}
    resent = sorted(sent_by["run-2"])
    assert resent == sorted(q for k, q in queries.items() if k not in done_before)


@pytest.mark.loopback
def test_ctrl_c_exits_cleanly_with_a_resume_hint(files: tuple[Path, Path, Path]) -> None:
    in_path, out_path, _ = files
    rows = make_rows(40)
    write_rows(in_path, rows)
    gate = Gate(anonymous(LexicalRerankEndpoint()), answered=8)  # 5 to 8 rows, then it waits
    with serve_loopback(gate) as url:
        cmd = _command(in_path, out_path, url)
        env = cli_env(TOGETHER_API_KEY="dummy")
        proc = subprocess.Popen(
            with_ctrl_c(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            wait_for_lines(out_path, 5, proc, deadline_s=30)
            proc.send_signal(signal.SIGINT)
            # the run was midway when interrupted; the requests held until now are answered
            # (the CLI may wait for those in flight before it exits)
            gate.release()
            out, err = proc.communicate(timeout=30)
        finally:
            gate.release()
            if proc.poll() is None:  # failed above: leave no process (nor its pipes) behind
                proc.kill()
                proc.communicate()
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        last = err.splitlines()[-1]
        assert last.startswith("interrupted: ")
        assert "Run the same command again to resume." in last
        assert out.startswith("mode: live")
        written = read_out(out_path)  # valid JSONL, complete lines only
        assert 5 <= len(written) < len(rows)

        again = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert again.returncode == 0, again.stderr
    check_out(out_path, rows)


# -- output paths are checked before anything is sent ----------------------------------------
@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("out-in-missing-folder", "no such folder"),
        ("out-is-a-folder", "is a folder"),
        ("errors-under-a-file", "is not a folder"),
        ("errors-is-a-folder", "is a folder"),
    ],
)
def test_unusable_output_paths_fail_before_any_row_is_sent(
    where: str,
    message: str,
    files: tuple[Path, Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the machine runs as root, so "unwritable" is a path no one can create: under a file
    in_path, out_path, err_path = files
    write_rows(in_path, make_rows(3))
    extra: list[str] = []
    if where == "out-in-missing-folder":
        out_path = in_path.parent / "no-such-folder" / "out.jsonl"
    elif where == "out-is-a-folder":
        out_path.mkdir()
    elif where == "errors-under-a-file":
        extra = ["--errors", str(in_path / "errors.jsonl")]
    else:
        err_path.mkdir()
    endpoint = LexicalRerankEndpoint()
    monkeypatch.setattr("together_rerank_plugins.testing.LexicalRerankEndpoint", lambda: endpoint)
    code, out, err = run_cli(["batch", "--offline", str(in_path), str(out_path), *extra], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err
    assert endpoint.requests == []


# -- text that is not valid Unicode ----------------------------------------------------------
LONE = "\ud83d"  # half of an emoji's UTF-16 pair, as JSON can carry it ("\ud83d")


def surrogate_rows() -> list[dict[str, object]]:
    return [
        {"id": "in-a-document", "query": "capital", "documents": [f"Paris capital {LONE}", "Rome"]},
        {"id": "in-the-query", "query": f"capital {LONE}", "documents": ["Paris capital", "Rome"]},
        {"id": f"in-the-id-{LONE}", "query": "capital", "documents": ["Paris capital", "Rome"]},
        # a row the library cannot send (strings and mappings mixed): the errors file, with
        # its id, which holds a lone surrogate too
        {"id": f"unsendable-{LONE}", "query": "capital", "documents": ["a", {"text": "b"}]},
        {"id": "plain", "query": "capital", "documents": ["Paris capital", "Rome"]},
    ]


@pytest.mark.parametrize("with_documents", [True, False])
def test_rows_with_lone_surrogates_are_written_recorded_and_resumed(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str], with_documents: bool
) -> None:
    in_path, out_path, err_path = files
    rows = surrogate_rows()
    write_rows(in_path, rows)  # json.dumps writes the surrogates as \ud83d escapes
    argv = ["batch", "--offline", str(in_path), str(out_path)]
    argv += ["--with-documents"] if with_documents else []
    code, out, err = run_cli(argv, capsys)
    assert code == 1, err  # one row failed, and says so; no traceback
    assert "Traceback" not in err
    assert "4 written, 1 failed" in out
    records = {r["id"]: r for r in read_out(out_path)}
    assert set(records) == {"in-a-document", "in-the-query", f"in-the-id-{LONE}", "plain"}
    reference = RerankClient(api_key="x", transport=LexicalRerankEndpoint())
    for row in rows[:3]:
        record = records[row["id"]]
        expected = reference.rerank(row["query"], row["documents"])  # type: ignore[arg-type]
        got = record["results"]
        assert [(r["index"], r["relevance_score"]) for r in got] == [  # type: ignore[attr-defined]
            (r.index, r.relevance_score) for r in expected
        ]
        if with_documents:  # copied exactly as IN has it
            docs = row["documents"]
            assert [r["document"] for r in got] == [docs[r.index] for r in expected]  # type: ignore[attr-defined,index]
    (failed,) = read_out(err_path)
    assert failed["id"] == f"unsendable-{LONE}"
    assert failed["error"]["type"] == "RerankInputError"  # type: ignore[index]

    before = out_path.read_bytes()
    code, out, _ = run_cli(argv, capsys)  # a re-run resumes: nothing left but the failed row
    assert code == 1
    assert "4 already in" in out
    assert "0 to do" in out
    assert out_path.read_bytes() == before
    code, out, _ = run_cli([*argv, "--retry-failed"], capsys)
    assert "retrying 1 failed" in out
    assert [r["id"] for r in read_out(err_path)] == [f"unsendable-{LONE}"]  # compacted
