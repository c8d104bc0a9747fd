"""``together-rerank batch IN.jsonl OUT.jsonl``: rerank many rows, resumably.

Each input row is ``{"id"?, "query", "documents"}``; a row's key is its ``id`` when it has
one, else its line number in IN. OUT gets one line per row that succeeded, written whole
and fsynced, so OUT is valid JSONL at every moment (a crash mid-write can only leave a
partial last line, which the next run drops before doing anything else). Running the same
command again skips every key already in OUT. Rows that fail go to ``OUT.errors.jsonl``;
they are skipped by later runs until ``--retry-failed`` retries them (alone). Errors that
would fail every row (bad key, unknown endpoint, no credit, bad configuration) stop the run.

Concurrency is asyncio over the client's native async path: ``--concurrency`` workers
awaiting ``arerank``, no threads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .. import (
    APIStatusError,
    RerankClient,
    RerankConfigError,
    RerankError,
)
from ._common import (
    UsageError,
    add_config_flags,
    error_line,
    make_client,
    positive_int,
    usage_json,
    usage_tokens,
)

__all__ = ["add_parser", "repair_partial_line", "run"]

DEFAULT_CONCURRENCY = 8
#: Statuses that would fail every row the same way: stop instead of recording each row.
FATAL_STATUSES = frozenset({401, 402, 403, 404})

DESCRIPTION = """\
Rerank every row of IN.jsonl ({"id"?, "query", "documents"}) and append one line per row
to OUT.jsonl: {"id"?, "line", "results": [{"index", "relevance_score"}], "usage"}.

Resumable: run the same command again after Ctrl-C, a crash or a kill, and only the rows
not yet in OUT are sent. Rows are keyed by "id" when present, else by line number (so give
ids if IN may change between runs). OUT is in completion order; sort on "line" if needed.
Failed rows go to OUT.errors.jsonl and are skipped until --retry-failed retries them."""


def add_parser(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "batch",
        help="rerank many JSONL rows with bounded concurrency; resumable",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", metavar="IN.jsonl", help='rows {"id"?, "query", "documents"}')
    parser.add_argument("output", metavar="OUT.jsonl", help="results, appended (resumable)")
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"requests in flight at once (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--rank-fields",
        metavar="A,B",
        help="for rows whose documents are objects: rank on these comma-separated fields",
    )
    parser.add_argument(
        "--with-documents",
        action="store_true",
        help="copy each ranked document into its result (default: index and score only)",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="retry only the rows recorded in the errors file",
    )
    parser.add_argument(
        "--errors",
        metavar="PATH",
        help="where failed rows go (default OUT.jsonl with .errors.jsonl appended)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is also off when stderr is not a terminal)",
    )
    add_config_flags(parser)
    parser.set_defaults(handler=run)


# -- files -----------------------------------------------------------------------------------
def repair_partial_line(path: Path) -> int:
    """Drop a trailing line without its newline (left by a crash mid-write); return bytes cut."""
    try:
        f = path.open("r+b")
    except FileNotFoundError:
        return 0
    with f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        cut, end = 0, size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                cut = start + newline + 1
                break
            end = start
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
        return size - cut


class JsonlAppender:
    """Appends whole JSON lines, each flushed and fsynced before the next one starts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None

    def write(self, record: Mapping[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8", newline="\n")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _key(obj: Mapping[str, Any], line: int) -> str:
    if "id" in obj:
        return "id:" + json.dumps(obj["id"])
    return f"line:{line}"


def _check_id(obj: Mapping[str, Any], where: str) -> None:
    if "id" in obj:
        ident = obj["id"]
        if isinstance(ident, bool) or not isinstance(ident, (str, int)):
            raise UsageError(f'{where}: "id" must be a string or an integer, not {ident!r}')


def _json_lines(path: Path, label: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line is a usage error."""
    try:
        with path.open(encoding="utf-8") as f:
            for number, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except ValueError as exc:
                    raise UsageError(f"{label} line {number}: not valid JSON ({exc})") from None
                if not isinstance(obj, dict):
                    raise UsageError(f"{label} line {number}: expected a JSON object")
                yield number, obj
    except OSError as exc:
        raise UsageError(f"cannot read {label}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{label} is not UTF-8 text ({exc.reason})") from None


def scan_input(path: Path) -> dict[str, int]:
    """Every row's key -> its line number, in file order. Duplicate ids are a usage error."""
    keys: dict[str, int] = {}
    for number, obj in _json_lines(path, str(path)):
        _check_id(obj, f"{path} line {number}")
        key = _key(obj, number)
        if key in keys:
            raise UsageError(
                f"{path} lines {keys[key]} and {number} have the same id {obj['id']!r}; "
                "ids must be unique (they key the resume)"
            )
        keys[key] = number
    return keys


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records of an OUT or errors file by key (the last one wins); missing file: none."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    for number, obj in _json_lines(path, str(path)):
        line = obj.get("line")
        if isinstance(line, bool) or not isinstance(line, int):
            raise UsageError(
                f'{path} line {number} has no "line" number: not written by '
                "`together-rerank batch`? Use another output file."
            )
        _check_id(obj, f"{path} line {number}")
        records[_key(obj, line)] = obj
    return records


def compact_errors(path: Path, done: set[str]) -> int:
    """Rewrite the errors file without rows now in OUT or repeated; return rows left."""
    if not path.exists():
        return 0
    left = {k: v for k, v in read_records(path).items() if k not in done}
    if not left:
        path.unlink()
        return 0
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as f:
        for record in left.values():
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(left)


def rows_to_do(path: Path, todo: set[str]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for number, obj in _json_lines(path, str(path)):
        key = _key(obj, number)
        if key in todo:
            yield key, number, obj


# -- progress --------------------------------------------------------------------------------
class _NoBar:
    def update(self, n: int = 1) -> None:
        return

    def close(self) -> None:
        return


def _progress(enabled: bool, total: int, initial: int) -> Any:
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        print(
            "note: no progress bar (tqdm is not installed; "
            'pip install "together-rerank-plugins[cli]")',
            file=sys.stderr,
        )
        return _NoBar()
    return tqdm(
        total=total, initial=initial, unit="row", file=sys.stderr, dynamic_ncols=True, leave=True
    )


# -- the run ---------------------------------------------------------------------------------
@dataclass
class Stats:
    written: int = 0
    failed: int = 0
    tokens: int = 0
    calls_with_usage: int = 0
    failures: list[str] = field(default_factory=list)


def is_fatal(exc: RerankError) -> bool:
    """Errors that every other row would hit too: stop the run instead of recording rows."""
    if isinstance(exc, RerankConfigError):
        return True
    return isinstance(exc, APIStatusError) and exc.status_code in FATAL_STATUSES


@dataclass
class Job:
    client: RerankClient
    out: JsonlAppender
    errors: JsonlAppender
    bar: Any
    stats: Stats
    top_n: int | None
    score_threshold: float | None
    rank_fields: list[str] | None
    with_documents: bool

    async def row(self, key: str, line: int, row: dict[str, Any]) -> None:
        base: dict[str, Any] = {"id": row["id"]} if "id" in row else {}
        base["line"] = line
        documents = row.get("documents")
        try:
            results = await self.client.arerank(
                row.get("query"),  # type: ignore[arg-type]  # checked by the library
                documents,  # type: ignore[arg-type]
                top_n=self.top_n,
                rank_fields=self.rank_fields,
                score_threshold=self.score_threshold,
            )
        except RerankError as exc:
            if is_fatal(exc):
                raise
            message = " ".join(str(exc).split())
            self.errors.write({**base, "error": {"type": type(exc).__name__, "message": message}})
            self.stats.failed += 1
        else:
            ranked: list[dict[str, Any]] = []
            for r in results:
                item: dict[str, Any] = {"index": r.index, "relevance_score": r.relevance_score}
                if self.with_documents:
                    item["document"] = documents[r.index]  # type: ignore[index]
                ranked.append(item)
            self.out.write({**base, "results": ranked, "usage": usage_json(results)})
            self.stats.written += 1
            tokens = usage_tokens(results)
            if tokens is not None:
                self.stats.tokens += tokens
                self.stats.calls_with_usage += 1
        self.bar.update(1)

    async def run(self, rows: Iterator[tuple[str, int, dict[str, Any]]], concurrency: int) -> None:
        queue: asyncio.Queue[tuple[str, int, dict[str, Any]] | None] = asyncio.Queue(
            maxsize=2 * concurrency
        )

        async def produce() -> None:
            for item in rows:
                await queue.put(item)
            for _ in range(concurrency):
                await queue.put(None)

        async def work() -> None:
            while (item := await queue.get()) is not None:
                await self.row(*item)

        tasks = [asyncio.ensure_future(produce())]
        tasks += [asyncio.ensure_future(work()) for _ in range(concurrency)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.client.aclose()
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc


def _split_fields(value: str | None) -> list[str] | None:
    if value is None:
        return None
    fields = [f.strip() for f in value.split(",")]
    if not all(fields):
        raise UsageError(f"--rank-fields takes comma-separated field names, got {value!r}")
    return fields


def run(args: argparse.Namespace) -> int:
    in_path = Path(args.input)
    out_path = Path(args.output)
    err_path = (
        Path(args.errors) if args.errors else out_path.with_name(out_path.name + ".errors.jsonl")
    )
    rank_fields = _split_fields(args.rank_fields)
    if not in_path.is_file():
        raise UsageError(f"cannot read {in_path}: no such file")
    resolved = {p.resolve() for p in (in_path, out_path, err_path)}
    if len(resolved) < 3:
        raise UsageError("IN, OUT and the errors file must be three different files")
    in_keys = scan_input(in_path)

    client, mode = make_client(args)
    print(mode.header, flush=True)

    for path in (out_path, err_path):
        cut = repair_partial_line(path)
        if cut:
            print(
                f"note: {path} ended with a partial line ({cut} bytes) left by an interrupted "
                "run; dropped it (that row is sent again).",
                file=sys.stderr,
            )
    done = set(read_records(out_path))
    failed = set(read_records(err_path)) - done
    stray = len(done - in_keys.keys())
    if stray:
        print(
            f"warning: {stray} row(s) in {out_path} match no row of {in_path}; did IN change? "
            '(rows without "id" are keyed by line number)',
            file=sys.stderr,
        )
    n_in = len(in_keys)
    n_done = len(done & in_keys.keys())
    n_failed = len(failed & in_keys.keys())
    if args.retry_failed:
        todo = failed & in_keys.keys()
        skipped_failed = 0
    else:
        todo = in_keys.keys() - done - failed
        skipped_failed = n_failed
    parts = [f"{n_in} rows in {in_path}", f"{n_done} already in {out_path}"]
    if args.retry_failed:
        parts.append(f"retrying {len(todo)} failed")
    else:
        if skipped_failed:
            parts.append(f"{skipped_failed} failed earlier (skipped; --retry-failed retries them)")
        parts.append(f"{len(todo)} to do")
    print("batch: " + "; ".join(parts) + f"; concurrency {args.concurrency}", flush=True)

    stats = Stats()
    out = JsonlAppender(out_path)
    errors = JsonlAppender(err_path)
    total = len(todo) if args.retry_failed else n_in
    bar = _progress(not args.no_progress, total, 0 if args.retry_failed else n_in - len(todo))
    job = Job(
        client=client,
        out=out,
        errors=errors,
        bar=bar,
        stats=stats,
        top_n=args.top_n,
        score_threshold=args.score_threshold,
        rank_fields=rank_fields,
        with_documents=args.with_documents,
    )
    outcome: BaseException | None = None
    try:
        if todo:
            asyncio.run(job.run(rows_to_do(in_path, todo), args.concurrency))
    except (RerankError, KeyboardInterrupt) as exc:
        outcome = exc
    finally:
        bar.close()
        out.close()
        errors.close()
        client.close()
    done = set(read_records(out_path))
    left_failed = compact_errors(err_path, done)
    have = len(done & in_keys.keys())
    if stats.calls_with_usage:
        tokens = f"{stats.tokens:,}"
    elif stats.written:
        tokens = "n/a (not reported by this client)"
    else:
        tokens = "0"
    progress = (
        f"{stats.written} written, {stats.failed} failed this run; "
        f"{have} of {n_in} rows in {out_path}"
    )
    if isinstance(outcome, KeyboardInterrupt):
        print(
            f"interrupted: {progress}. Run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    if isinstance(outcome, RerankError):
        print(
            f"{error_line(outcome)} (stopped: {progress}; fix this and run the same command "
            "again to resume)",
            file=sys.stderr,
        )
        return 1
    print(f"done: {progress}; tokens: {tokens}")
    if left_failed:
        print(
            f"error: {left_failed} row(s) failed, recorded in {err_path}; fix them or the "
            "endpoint and run again with --retry-failed",
            file=sys.stderr,
        )
        return 1
    return 0
