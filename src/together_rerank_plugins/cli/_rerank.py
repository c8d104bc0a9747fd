"""``together-rerank rerank QUERY [FILE|-]``: rank documents against a query, print the ranking."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from .._console import json_line
from ._common import (
    UsageError,
    add_config_flags,
    add_output_flags,
    json_object,
    make_client,
    usage_json,
    usage_tokens,
)

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Rank documents against QUERY and print them best first with their scores.

Documents come from FILE, or standard input when FILE is '-' or omitted: one document per
line (blank lines are skipped), or JSON Lines with --field NAME (the text of each object's
NAME) or --rank-fields a,b (each object sent whole, ranked on those fields; Llama-Rank
endpoints only). JSON Lines without either flag is refused, with the flag to add."""


def add_parser(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "rerank",
        help="rank documents (one per line, or JSONL) against a query",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("query", metavar="QUERY", help="the question to rank against")
    parser.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        default="-",
        help="documents, one per line or JSONL ('-' or omitted: standard input)",
    )
    fmt = parser.add_argument_group("input")
    fmt.add_argument(
        "--field", metavar="NAME", help="input is JSONL; rank the string in each object's NAME"
    )
    fmt.add_argument(
        "--rank-fields",
        metavar="A,B",
        help="input is JSONL; send each object whole and rank on these comma-separated fields",
    )
    add_config_flags(parser)
    add_output_flags(parser)
    parser.set_defaults(handler=run)


@dataclass(frozen=True)
class InputDoc:
    line: int  # 1-based line number in the input
    payload: str | dict[str, Any]  # what is sent
    text: str  # what is shown


def _split_fields(value: str) -> list[str]:
    fields = [f.strip() for f in value.split(",")]
    if not fields or not all(fields):
        raise UsageError(f"--rank-fields takes comma-separated field names, got {value!r}")
    return fields


def _flat(text: str) -> str:
    return " ".join(text.split())


def read_documents(
    lines: Iterable[str], source: str, *, field: str | None, rank_fields: list[str] | None
) -> list[InputDoc]:
    docs: list[InputDoc] = []
    jsonl = field is not None or rank_fields is not None
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if not jsonl:
            docs.append(InputDoc(number, line, line))
            continue
        obj = json_object(line, f"{source} line {number}")
        if field is not None:
            value = obj.get(field)
            if not isinstance(value, str):
                what = "has no field" if field not in obj else "has a non-string field"
                raise UsageError(f"{source} line {number}: {what} {field!r}")
            docs.append(InputDoc(number, value, value))
        else:
            assert rank_fields is not None
            missing = [f for f in rank_fields if f not in obj]
            if missing:
                raise UsageError(f"{source} line {number}: no field(s) {missing} (--rank-fields)")
            shown = " | ".join(str(obj[f]) for f in rank_fields)
            docs.append(InputDoc(number, dict(obj), shown))
    return docs


#: Field names tried first when suggesting ``--field`` for JSON Lines input.
_TEXT_FIELDS = ("text", "content", "page_content", "body", "document", "passage", "contents")


def refuse_unflagged_jsonl(docs: list[InputDoc], source: str) -> None:
    """Input in which every line is a JSON object, read without --field/--rank-fields, would
    rank the raw JSON text: refuse it, naming the flag (and a field) to use instead."""
    objects: list[dict[str, Any]] = []
    for doc in docs:
        text = doc.text.strip()
        if not text.startswith("{"):
            return
        try:
            obj = json.loads(text)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        objects.append(obj)
    if not objects:
        return
    common = [k for k, v in objects[0].items() if isinstance(v, str)]
    common = [k for k in common if all(isinstance(o.get(k), str) for o in objects)]
    preferred = [k for k in _TEXT_FIELDS if k in common]
    name = (preferred or common or ["NAME"])[0]
    raise UsageError(
        f"{source} is JSON Lines (every line is a JSON object), and without a flag each line's "
        f"raw JSON text would be ranked: add --field {name} to rank the text of each object's "
        f'"{name}", or --rank-fields a,b to send the objects whole and rank on those fields'
    )


def _open_input(path: str) -> tuple[TextIO, str, bool]:
    if path == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("no documents: give FILE, or pipe documents on standard input")
        return sys.stdin, "<stdin>", False
    try:
        return open(path, encoding="utf-8"), path, True
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 1)].rstrip() + "…"


def run(args: argparse.Namespace) -> int:
    if args.field is not None and args.rank_fields is not None:
        raise UsageError("use --field (rank a string) or --rank-fields (rank objects), not both")
    rank_fields = _split_fields(args.rank_fields) if args.rank_fields is not None else None
    stream, source, close = _open_input(args.file)
    try:
        try:
            docs = read_documents(stream, source, field=args.field, rank_fields=rank_fields)
        except UnicodeDecodeError as exc:
            raise UsageError(f"{source} is not UTF-8 text ({exc.reason})") from None
    finally:
        if close:
            stream.close()
    if not docs:
        raise UsageError(f"no documents in {source}")
    if args.field is None and rank_fields is None:
        refuse_unflagged_jsonl(docs, source)

    client, mode = make_client(args)
    print(mode.header, file=sys.stderr if args.json else sys.stdout, flush=True)
    with client:
        results = client.rerank(
            args.query,
            [d.payload for d in docs],
            top_n=args.top_n,
            rank_fields=rank_fields,
            score_threshold=args.score_threshold,
        )
    rows = [
        {
            "rank": rank,
            "index": r.index,
            "line": docs[r.index].line,
            "relevance_score": r.relevance_score,
            "document": docs[r.index].payload,
        }
        for rank, r in enumerate(results, start=1)
    ]
    tokens = usage_tokens(results)
    if args.json:
        out = {
            **mode.as_json(),
            "query": args.query,
            "source": source,
            "documents": len(docs),
            "results": rows,
            "usage": usage_json(results),
        }
        print(json_line(out))
        return 0

    kept = f"{len(rows)} of {len(docs)}"
    print(f"query: {args.query!r}; {len(docs)} documents from {source}; ranked: {kept}")
    tty = sys.stdout.isatty()
    width = shutil.get_terminal_size((100, 24)).columns - 26
    print(f"{'rank':>4}  {'score':>8}  {'line':>6}  document")
    for r, row in zip(results, rows, strict=True):
        text = _flat(docs[r.index].text)
        if tty:
            text = _clip(text, max(width, 20))
        print(f"{row['rank']:>4}  {row['relevance_score']:>8.4f}  {row['line']:>6}  {text}")
    print(f"tokens: {tokens if tokens is not None else 'n/a (not reported by this client)'}")
    return 0
