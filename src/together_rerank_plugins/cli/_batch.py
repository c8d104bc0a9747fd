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
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import (
    APIStatusError,
    RerankClient,
    RerankConfigError,
    RerankError,
)
from ._batch_files import (
    JsonlAppender,
    compact_errors,
    read_records,
    repair_partial_line,
    rows_to_do,
    scan_input,
)
from ._common import (
    UsageError,
    add_config_flags,
    check_output_file,
    error_line,
    make_client,
    positive_int,
    usage_json,
    usage_tokens,
)
from ._progress import add_progress_flag, progress_bar

__all__ = ["add_parser", "run"]

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
    add_progress_flag(parser)
    add_config_flags(parser)
    parser.set_defaults(handler=run)


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
    # before anything is sent: a path that cannot be written fails now, not after the rows
    check_output_file(out_path, "OUT")
    check_output_file(err_path, "the errors file")

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
    bar = progress_bar(
        not args.no_progress, total, 0 if args.retry_failed else n_in - len(todo), unit="row"
    )
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
