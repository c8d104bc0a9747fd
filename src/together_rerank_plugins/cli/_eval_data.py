"""The inputs of ``together-rerank eval``: a BEIR-format dataset, and the first stage (BM25
from ``bm25s`` over its corpus, or a TREC run file)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._inputs import LONE_SURROGATE
from ._common import UsageError, json_object, missing_extra

__all__ = ["Dataset", "bm25_first_stage", "load_beir", "read_trec_run", "run_file_first_stage"]


# -- dataset ---------------------------------------------------------------------------------
@dataclass
class Dataset:
    path: Path
    qrels_file: Path
    corpus: dict[str, str]  # doc id -> text sent to the reranker (title, then text)
    queries: dict[str, str]  # judged query ids, in queries.jsonl order -> text
    qrels: dict[str, dict[str, int]]


def _jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise UsageError(f"{path} not found: DATASET must be a BEIR-format folder")
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                obj = json_object(line, f"{path} line {number}")
                if "_id" not in obj:
                    raise UsageError(f'{path} line {number}: expected an object with "_id"')
                if not str(obj["_id"]).isascii() and LONE_SURROGATE.search(str(obj["_id"])):
                    # pytrec_eval (C) crashes the process on such an id; texts are fine (the
                    # library sends them with U+FFFD), but an id must match the qrels as is
                    raise UsageError(
                        f'{path} line {number}: "_id" holds a lone surrogate (a \\ud800-'
                        "\\udfff escape that is half of a character), which is not valid "
                        "Unicode: fix the id"
                    )
                yield number, obj
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason})") from None


def _qrels_file(folder: Path, split: str | None) -> Path:
    qdir = folder / "qrels"
    if split is not None:
        path = qdir / f"{split}.tsv"
        if not path.is_file():
            raise UsageError(f"{path} not found")
        return path
    if (qdir / "test.tsv").is_file():
        return qdir / "test.tsv"
    found = sorted(qdir.glob("*.tsv"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError(f"no qrels/*.tsv in {folder}: DATASET must be a BEIR-format folder")
    names = ", ".join(p.stem for p in found)
    raise UsageError(f"{folder}/qrels has several splits ({names}) and no test.tsv: pick --split")


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR TSV (query-id, corpus-id, score; a header line) or TREC qrels (qid 0 docid rel)."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            parts = line.split("\t") if "\t" in line else line.split()
            parts = [p.strip() for p in parts]
            if not any(parts):
                continue
            if len(parts) == 4:
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise UsageError(f"{path} line {number}: expected query-id, corpus-id, score")
            try:
                rel = int(parts[2])
            except ValueError:
                if number == 1:  # the header
                    continue
                raise UsageError(
                    f"{path} line {number}: score {parts[2]!r} is not an integer"
                ) from None
            qrels.setdefault(parts[0], {})[parts[1]] = rel
    return qrels


def load_beir(folder: Path, split: str | None = None, max_queries: int | None = None) -> Dataset:
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder: DATASET must be a BEIR-format folder")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / name).is_file():
            raise UsageError(f"{folder / name} not found: DATASET must be a BEIR-format folder")
    qrels_file = _qrels_file(folder, split)
    qrels_all = _read_qrels(qrels_file)
    corpus: dict[str, str] = {}
    for _, obj in _jsonl(folder / "corpus.jsonl"):
        title = str(obj.get("title") or "").strip()
        text = str(obj.get("text") or "").strip()
        corpus[str(obj["_id"])] = f"{title} {text}".strip() if title else text
    queries: dict[str, str] = {}
    for _, obj in _jsonl(folder / "queries.jsonl"):
        qid = str(obj["_id"])
        if qid in qrels_all:
            queries[qid] = str(obj.get("text") or "")
    if not corpus:
        raise UsageError(f"{folder}/corpus.jsonl has no documents")
    if not queries:
        raise UsageError(f"no query of {folder}/queries.jsonl is judged in {qrels_file}")
    if max_queries is not None:
        queries = dict(list(queries.items())[:max_queries])
    qrels = {q: qrels_all[q] for q in queries}
    return Dataset(folder, qrels_file, corpus, queries, qrels)


# -- first stage -----------------------------------------------------------------------------
def bm25_first_stage(data: Dataset, depth: int) -> dict[str, list[str]]:
    """BM25 (bm25s, English stopwords, no stemming) top ``depth`` doc ids per query."""
    try:
        import bm25s  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise missing_extra("bm25s") from None
    ids = list(data.corpus)
    retriever = bm25s.BM25()
    corpus_tokens = bm25s.tokenize(
        [data.corpus[i] for i in ids], stopwords="en", show_progress=False, return_ids=False
    )
    retriever.index(corpus_tokens, show_progress=False)
    qids = list(data.queries)
    q_tokens = bm25s.tokenize(
        [data.queries[q] for q in qids], stopwords="en", show_progress=False, return_ids=False
    )
    found, _scores = retriever.retrieve(
        q_tokens, k=min(depth, len(ids)), show_progress=False, n_threads=1
    )
    return {q: [ids[int(i)] for i in row] for q, row in zip(qids, found, strict=True)}


def read_trec_run(path: Path) -> Iterator[tuple[str, str, float]]:
    """(query id, doc id, score) of each line of a TREC run file (``qid Q0 docid rank score
    tag``). Six whitespace-separated columns: parsing them needs no library."""
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 6:
                    raise UsageError(
                        f"{path} line {number}: not a TREC run line (expected 6 columns: "
                        "qid Q0 docid rank score tag)"
                    )
                try:
                    score = float(parts[4])
                except ValueError:
                    score = math.nan
                if not math.isfinite(score):
                    raise UsageError(f"{path} line {number}: score {parts[4]!r} is not a number")
                yield parts[0], parts[2], score
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason})") from None


def run_file_first_stage(
    path: Path, data: Dataset, depth: int
) -> tuple[dict[str, list[str]], list[str]]:
    """Top ``depth`` doc ids per judged query from a TREC run file; and warnings."""
    if not path.is_file():
        raise UsageError(f"cannot read {path}: no such file")
    scored: dict[str, list[tuple[float, str]]] = {}
    unknown = 0
    for qid, did, score in read_trec_run(path):
        if qid not in data.queries:
            continue
        if did not in data.corpus:
            unknown += 1
            continue
        scored.setdefault(qid, []).append((score, did))
    warnings = []
    if unknown:
        warnings.append(f"{unknown} document(s) of {path} are not in the corpus; skipped them")
    missing = [q for q in data.queries if q not in scored]
    if missing:
        warnings.append(
            f"{len(missing)} judged query(ies) have no result in {path}; they count as 0 in every "
            "mean"
        )
    # best score first; ties keep the file's order (a stable sort)
    out = {
        q: [d for _, d in sorted(pairs, key=lambda p: -p[0])][:depth] for q, pairs in scored.items()
    }
    return {q: out[q] for q in data.queries if q in out}, warnings
