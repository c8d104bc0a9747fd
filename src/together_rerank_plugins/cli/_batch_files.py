"""The files of ``together-rerank batch``: reading IN, and appending to OUT and the errors
file so that each is valid JSONL at every moment (whole lines, each fsynced), with the
repair of a partial last line left by a crash."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from .._console import json_line
from ._common import UsageError, json_object

__all__ = [
    "JsonlAppender",
    "compact_errors",
    "read_records",
    "repair_partial_line",
    "rows_to_do",
    "scan_input",
]


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
        self._file.write(json_line(record) + "\n")
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
                yield number, json_object(text, f"{label} line {number}")
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
            f.write(json_line(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(left)


def rows_to_do(path: Path, todo: set[str]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for number, obj in _json_lines(path, str(path)):
        key = _key(obj, number)
        if key in todo:
            yield key, number, obj
