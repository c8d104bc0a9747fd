"""Evaluation datasets: :class:`EvalDataset` and :func:`load_dataset` (a BEIR folder, a JSON
Lines file of judged queries, the JSON LlamaIndex's question generator saves, or the
packaged sample), and the first stages the command line builds from a corpus (BM25 from
``bm25s``, a TREC run file)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._inputs import LONE_SURROGATE
from ._errors import EvaluationError, missing

__all__ = [
    "SAMPLE",
    "SAMPLE_PATH",
    "EvalDataset",
    "bm25_rankings",
    "load_beir",
    "load_dataset",
    "read_trec_run",
    "run_file_rankings",
]

#: The word that names the packaged sample dataset (``load_dataset("sample")``).
SAMPLE = "sample"
#: The packaged sample: a tiny synthetic BEIR folder (8 queries, 40 passages; its README).
SAMPLE_PATH = Path(__file__).resolve().parent.parent / "data" / "eval_sample"


@dataclass
class EvalDataset:
    """Judged queries: ``queries`` ``{query id: text}`` and ``qrels`` ``{query id: {document
    id: grade}}`` (grade >= 1 is relevant; 2 more than 1 for nDCG). ``corpus`` ``{document
    id: text}`` is optional: a retriever of your own holds the documents; the command line's
    BM25 first stage needs it.

    Only queries with judgments are evaluated (in ``queries`` order); a judged query that
    is not in ``queries`` is an error.
    """

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    corpus: dict[str, str] | None = None
    name: str = "in-memory dataset"
    path: Path | None = None
    qrels_file: Path | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.queries, Mapping) or not isinstance(self.qrels, Mapping):
            raise EvaluationError(
                "EvalDataset needs queries={query id: text} and qrels={query id: {document "
                "id: grade}} (dicts)."
            )
        queries = {str(q): str(t) for q, t in self.queries.items()}
        unknown = [q for q in self.qrels if str(q) not in queries]
        if unknown:
            raise EvaluationError(
                f"qrels judge {len(unknown)} query id(s) that are not in queries, e.g. "
                f"{unknown[0]!r}: give every judged query its text."
            )
        qrels: dict[str, dict[str, int]] = {}
        for qid, judged in self.qrels.items():
            if not isinstance(judged, Mapping):
                raise EvaluationError(
                    f"qrels[{qid!r}] must be {{document id: grade}}, got {type(judged).__name__}"
                )
            grades: dict[str, int] = {}
            for did, grade in judged.items():
                if isinstance(grade, bool) or not isinstance(grade, int):
                    raise EvaluationError(
                        f"qrels[{qid!r}][{did!r}] is {grade!r}: grades are whole numbers "
                        "(0 not relevant, 1 relevant, 2 highly relevant, ...)"
                    )
                grades[str(did)] = grade
            if grades:
                qrels[str(qid)] = grades
        self.queries = {q: t for q, t in queries.items() if q in qrels}
        self.qrels = {q: qrels[q] for q in self.queries}
        if not self.queries:
            raise EvaluationError("the dataset has no judged query: nothing to evaluate.")
        if self.corpus is not None:
            self.corpus = {str(d): str(t) for d, t in self.corpus.items()}

    def head(self, n: int | None) -> EvalDataset:
        """The first ``n`` judged queries (all when ``n`` is None)."""
        if n is None or n >= len(self.queries):
            return self
        queries = dict(list(self.queries.items())[:n])
        return EvalDataset(
            queries,
            {q: self.qrels[q] for q in queries},
            self.corpus,
            self.name,
            self.path,
            self.qrels_file,
        )


def load_dataset(
    path: str | Path, *, split: str | None = None, max_queries: int | None = None
) -> EvalDataset:
    """Read judged queries from ``path``:

    - a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``; ``split``
      defaults to ``test`` or the only one there is);
    - a ``.jsonl`` file, one judged query a line: ``{"query": "...", "relevant": ["doc-1",
      ...]}`` or ``"relevant": {"doc-1": 2, "doc-7": 1}``, with an optional ``"id"``;
    - a ``.json`` file as LlamaIndex's ``generate_question_context_pairs`` saves it
      (``queries``, ``corpus``, ``relevant_docs``);
    - the word ``"sample"``: the small synthetic dataset shipped in the package (unless a
      file or folder of that name exists here: yours wins).

    ``max_queries`` keeps the first N judged queries (to bound the cost of a live run).
    """
    if str(path) == SAMPLE and not Path(path).exists():
        data = load_beir(SAMPLE_PATH, split)
        data.name = "sample (synthetic, packaged)"
        return data.head(max_queries)
    p = Path(path)
    if p.is_dir():
        return load_beir(p, split).head(max_queries)
    if not p.exists():
        raise EvaluationError(
            f"{p} is not a folder: give a BEIR-format folder, a .jsonl of judged queries, "
            "LlamaIndex's question-generator .json, or the word 'sample'"
        )
    if p.suffix.lower() == ".jsonl":
        return _load_jsonl(p).head(max_queries)
    if p.suffix.lower() == ".json":
        return _load_llama_index_json(p).head(max_queries)
    raise EvaluationError(
        f"{p}: expected a BEIR folder, a .jsonl file of judged queries or a .json file from "
        "LlamaIndex's question generator"
    )


def _json_object(text: str, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise EvaluationError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise EvaluationError(f"{where}: expected a JSON object")
    return obj


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield number, line
    except UnicodeDecodeError as exc:
        raise EvaluationError(f"{path} is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise EvaluationError(f"cannot read {path}: {exc.strerror or exc}") from None


def _load_jsonl(path: Path) -> EvalDataset:
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _lines(path):
        where = f"{path} line {number}"
        row = _json_object(line, where)
        query, relevant = row.get("query"), row.get("relevant")
        if not isinstance(query, str) or not query.strip():
            raise EvaluationError(f'{where}: expected "query": a non-empty string')
        qid = str(row.get("id", f"q{number}"))
        if qid in queries:
            raise EvaluationError(f"{where}: query id {qid!r} appears twice")
        if isinstance(relevant, list) and all(isinstance(d, (str, int)) for d in relevant):
            grades = {str(d): 1 for d in relevant}
        elif isinstance(relevant, dict):
            grades = {}
            for did, grade in relevant.items():
                if isinstance(grade, bool) or not isinstance(grade, int):
                    raise EvaluationError(f"{where}: grade of {did!r} is {grade!r}, not an int")
                grades[str(did)] = grade
        else:
            raise EvaluationError(
                f'{where}: expected "relevant": a list of document ids or {{id: grade}}'
            )
        queries[qid] = query
        qrels[qid] = grades
    if not queries:
        raise EvaluationError(f"{path} has no judged query")
    return EvalDataset(queries, qrels, None, path.name, path, path)


def _load_llama_index_json(path: Path) -> EvalDataset:
    """``EmbeddingQAFinetuneDataset.save_json``: ``{"queries": {qid: text}, "corpus":
    {node id: text}, "relevant_docs": {qid: [node id, ...]}, "mode": "text"}``."""
    try:
        obj = _json_object(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise EvaluationError(f"{path} is not UTF-8 text ({exc.reason})") from None
    queries, corpus, relevant = obj.get("queries"), obj.get("corpus"), obj.get("relevant_docs")
    if not (isinstance(queries, dict) and isinstance(relevant, dict)):
        raise EvaluationError(
            f"{path}: expected LlamaIndex's question-generator JSON with 'queries', 'corpus' "
            "and 'relevant_docs' (EmbeddingQAFinetuneDataset.save_json)"
        )
    qrels = {str(q): {str(d): 1 for d in docs} for q, docs in relevant.items() if docs}
    return EvalDataset(
        {str(q): str(t) for q, t in queries.items()},
        qrels,
        {str(d): str(t) for d, t in corpus.items()} if isinstance(corpus, dict) else None,
        path.name,
        path,
        path,
    )


# -- BEIR ------------------------------------------------------------------------------------
def _beir_rows(path: Path) -> Iterable[dict[str, Any]]:
    if not path.is_file():
        raise EvaluationError(f"{path} not found: DATASET must be a BEIR-format folder")
    for number, line in _lines(path):
        obj = _json_object(line, f"{path} line {number}")
        if "_id" not in obj:
            raise EvaluationError(f'{path} line {number}: expected an object with "_id"')
        if not str(obj["_id"]).isascii() and LONE_SURROGATE.search(str(obj["_id"])):
            # pytrec_eval (C) crashes the process on such an id; texts are fine (the library
            # sends them with U+FFFD), but an id must match the judgments as it is
            raise EvaluationError(
                f'{path} line {number}: "_id" holds a lone surrogate (a \\ud800-\\udfff escape '
                "that is half of a character), which is not valid Unicode: fix the id"
            )
        yield obj


def _qrels_file(folder: Path, split: str | None) -> Path:
    qdir = folder / "qrels"
    if split is not None:
        path = qdir / f"{split}.tsv"
        if not path.is_file():
            raise EvaluationError(f"{path} not found")
        return path
    if (qdir / "test.tsv").is_file():
        return qdir / "test.tsv"
    found = sorted(qdir.glob("*.tsv"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise EvaluationError(f"no qrels/*.tsv in {folder}: DATASET must be a BEIR-format folder")
    names = ", ".join(p.stem for p in found)
    raise EvaluationError(
        f"{folder}/qrels has several splits ({names}) and no test.tsv: pick a split"
    )


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR TSV (query-id, corpus-id, score; a header line) or TREC qrels (qid 0 docid rel)."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _lines(path):
        parts = [p.strip() for p in (line.split("\t") if "\t" in line else line.split())]
        if len(parts) == 4:
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise EvaluationError(f"{path} line {number}: expected query-id, corpus-id, score")
        try:
            rel = int(parts[2])
        except ValueError:
            if number == 1:  # the header
                continue
            raise EvaluationError(
                f"{path} line {number}: score {parts[2]!r} is not an integer"
            ) from None
        qrels.setdefault(parts[0], {})[parts[1]] = rel
    return qrels


def load_beir(folder: Path, split: str | None = None) -> EvalDataset:
    """A BEIR-format folder; each document's text is its title, then its text."""
    if not folder.is_dir():
        raise EvaluationError(f"{folder} is not a folder: DATASET must be a BEIR-format folder")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / name).is_file():
            raise EvaluationError(
                f"{folder / name} not found: DATASET must be a BEIR-format folder"
            )
    qrels_file = _qrels_file(folder, split)
    qrels_all = _read_qrels(qrels_file)
    corpus: dict[str, str] = {}
    for obj in _beir_rows(folder / "corpus.jsonl"):
        title = str(obj.get("title") or "").strip()
        text = str(obj.get("text") or "").strip()
        corpus[str(obj["_id"])] = f"{title} {text}".strip() if title else text
    queries: dict[str, str] = {}
    for obj in _beir_rows(folder / "queries.jsonl"):
        qid = str(obj["_id"])
        if qid in qrels_all:
            queries[qid] = str(obj.get("text") or "")
    if not corpus:
        raise EvaluationError(f"{folder}/corpus.jsonl has no documents")
    if not queries:
        raise EvaluationError(f"no query of {folder}/queries.jsonl is judged in {qrels_file}")
    qrels = {q: qrels_all[q] for q in queries}
    return EvalDataset(queries, qrels, corpus, folder.name, folder, qrels_file)


# -- first stages built from the dataset (the command line's) --------------------------------
def bm25_rankings(data: EvalDataset, depth: int) -> dict[str, list[str]]:
    """BM25 (bm25s, English stopwords, no stemming) top ``depth`` doc ids per query."""
    if not data.corpus:
        raise EvaluationError(f"{data.name} has no corpus: BM25 needs the documents' texts")
    try:
        import bm25s  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise missing("bm25s") from None
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
    for number, line in _lines(path):
        parts = line.split()
        if len(parts) != 6:
            raise EvaluationError(
                f"{path} line {number}: not a TREC run line (expected 6 columns: "
                "qid Q0 docid rank score tag)"
            )
        try:
            score = float(parts[4])
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise EvaluationError(f"{path} line {number}: score {parts[4]!r} is not a number")
        yield parts[0], parts[2], score


def run_file_rankings(
    path: Path, data: EvalDataset, depth: int
) -> tuple[dict[str, list[str]], list[str]]:
    """Top ``depth`` doc ids per judged query from a TREC run file; and warnings."""
    if not path.is_file():
        raise EvaluationError(f"cannot read {path}: no such file")
    scored: dict[str, list[tuple[float, str]]] = {}
    unknown = 0
    for qid, did, score in read_trec_run(path):
        if qid not in data.queries:
            continue
        if data.corpus is not None and did not in data.corpus:
            unknown += 1
            continue
        scored.setdefault(qid, []).append((score, did))
    warnings = []
    if unknown:
        warnings.append(f"{unknown} document(s) of {path} are not in the corpus; skipped them")
    missing_q = [q for q in data.queries if q not in scored]
    if missing_q:
        warnings.append(
            f"{len(missing_q)} judged query(ies) have no result in {path}; they count as 0 in "
            "every mean"
        )
    if not scored:
        raise EvaluationError(f"{path} has no result for any judged query of {data.name}")
    # best score first; ties keep the file's order (a stable sort)
    out = {
        q: [d for _, d in sorted(pairs, key=lambda p: -p[0])][:depth] for q, pairs in scored.items()
    }
    return {q: out[q] for q in data.queries if q in out}, warnings
