"""Validating one call, the result types, and checking one response: pure, no I/O.

:func:`validate_call` checks a call's arguments (raising :class:`RerankInputError` before
anything is sent); :func:`parse_batch` turns one server answer into trustworthy
``(position, score)`` pairs or raises :class:`MalformedResponseError`. The sync and async
paths share both.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._config import validate_score_threshold, validate_top_n
from ._errors import MalformedResponseError, RerankError, RerankInputError

__all__ = [
    "FALLBACK_KEY",
    "CallSpec",
    "Document",
    "RerankResult",
    "RerankResults",
    "Usage",
    "canonical",
    "check_rank_fields",
    "clean_text",
    "is_blank",
    "require_sequence",
    "parse_batch",
    "parse_usage",
    "structured_document",
    "validate_call",
]

Document = str | Mapping[str, Any]

#: Metadata key both adapters set to True on results of an ``on_error="fallback"`` answer
#: (the retrieval order, kept because reranking failed).
FALLBACK_KEY = "rerank_fallback"


@dataclass(frozen=True, slots=True)
class RerankResult:
    """One ranked candidate: ``index`` into the caller's ``documents`` and its score."""

    index: int
    relevance_score: float


@dataclass(frozen=True)
class Usage:
    """Tokens the service reported, summed over every request of a call (None: not sent)."""

    prompt_tokens: int | None = None
    total_tokens: int | None = None

    def __add__(self, other: Usage) -> Usage:
        def add(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else a + b

        return Usage(
            add(self.prompt_tokens, other.prompt_tokens),
            add(self.total_tokens, other.total_tokens),
        )


class RerankResults(list[RerankResult]):
    """The ranking (a plain ``list[RerankResult]``, best first) plus what it cost.

    - ``usage``: tokens reported by the service, summed over requests;
    - ``requests``: requests sent; ``documents_sent``: documents (or windows) sent;
    - ``cache_hits``: documents answered from the score cache;
    - ``duplicates``: candidates whose text repeated an earlier one (scored once);
    - ``fallback``: True when ``on_error="fallback"`` returned the retrieval order because
      reranking failed; ``error`` is then the :class:`RerankError` that was absorbed.
    """

    usage: Usage
    requests: int
    documents_sent: int
    cache_hits: int
    duplicates: int
    fallback: bool
    error: RerankError | None

    def __init__(
        self,
        results: Sequence[RerankResult] = (),
        *,
        usage: Usage | None = None,
        requests: int = 0,
        documents_sent: int = 0,
        cache_hits: int = 0,
        duplicates: int = 0,
        fallback: bool = False,
        error: RerankError | None = None,
    ) -> None:
        super().__init__(results)
        self.usage = usage or Usage()
        self.requests = requests
        self.documents_sent = documents_sent
        self.cache_hits = cache_hits
        self.duplicates = duplicates
        self.fallback = fallback
        self.error = error


@dataclass(frozen=True)
class CallSpec:
    """A validated call."""

    query: str
    documents: list[Document]
    top_n: int | None
    rank_fields: list[str] | None
    score_threshold: float | None


def canonical(doc: Document) -> str:
    """A document as sent, as one string: itself, or a mapping's canonical JSON."""
    if isinstance(doc, str):
        return doc
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def structured_document(
    fields: Sequence[str], metadata: Mapping[str, Any], text: str
) -> dict[str, Any]:
    """The mapping document an adapter sends with ``rank_fields``: the named metadata
    fields, and the item's text under ``"text"``. Values JSON cannot carry (dates, NaN, ...),
    at any depth, become strings; a missing field is left out, so validation names it."""
    doc: dict[str, Any] = {}
    for name in fields:
        if name == "text" and name not in metadata:
            doc[name] = text
        elif name in metadata:
            doc[name] = _jsonable(metadata[name])
    return doc


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Replace lone surrogates (text decoded with ``surrogateescape``) by U+FFFD: they
    cannot be sent as UTF-8. The caller's objects keep their text; only what is sent changes."""
    if text.isascii() or not _SURROGATE.search(text):  # isascii: a fast C scan
        return text
    return _SURROGATE.sub("\ufffd", text)


def _clean_value(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [_clean_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _clean_value(v) for k, v in value.items()}
    return value


def require_sequence(items: Any, what: str = "documents") -> list[Any]:
    """``items`` as a list, or :class:`RerankInputError` (None, a string, a generator)."""
    if items is None or isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise RerankInputError(
            f"`{what}` must be a list (or another sequence), not {type(items).__name__}; "
            "pass the retrieved candidates as a list."
        )
    return list(items)


def is_blank(doc: Document) -> bool:
    """A candidate with nothing to score: empty or whitespace-only text."""
    return isinstance(doc, str) and not doc.strip()


def _check_query(query: Any) -> str:
    if query is None:
        raise RerankInputError("`query` is missing: pass the user's question as a string.")
    if not isinstance(query, str):
        raise RerankInputError(f"`query` must be a string, not {type(query).__name__}.")
    if not query.strip():
        raise RerankInputError(
            "`query` is empty or only whitespace: a reranker needs a question to rank against."
        )
    return clean_text(query)


def _check_documents(documents: Any, rank_fields: list[str] | None) -> list[Document]:
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise RerankInputError(
            "`documents` must be a list of strings or of mappings (dicts), "
            f"not {type(documents).__name__}."
        )
    if all(type(d) is str for d in documents):  # the common case, checked in one pass
        docs: list[Document] = [clean_text(d) for d in documents]
        if rank_fields:
            raise RerankInputError(
                "`rank_fields` only applies to mapping documents; drop it or pass dicts."
            )
        return docs
    docs = [_clean_value(d) for d in documents]
    kinds = set()
    for i, doc in enumerate(docs):
        if isinstance(doc, str):
            kinds.add("str")
        elif isinstance(doc, Mapping):
            kinds.add("mapping")
            try:
                json.dumps(doc, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise RerankInputError(
                    f"documents[{i}] cannot be sent as JSON ({exc}); use strings, finite "
                    "numbers, lists and dicts as values."
                ) from None
            if rank_fields:
                missing = [f for f in rank_fields if f not in doc]
                if missing:
                    raise RerankInputError(
                        f"documents[{i}] has no field(s) {missing} named in `rank_fields`; "
                        "add them to every document or change `rank_fields`."
                    )
        else:
            raise RerankInputError(
                f"documents[{i}] is a {type(doc).__name__}; each document must be a string or "
                "a mapping (dict)."
            )
    if len(kinds) > 1:
        raise RerankInputError(
            "`documents` mixes strings and mappings; the API takes one kind per request. "
            "Convert the strings to {'text': ...} mappings or the mappings to strings."
        )
    if rank_fields and "str" in kinds:
        raise RerankInputError(
            "`rank_fields` only applies to mapping documents; drop it or pass dicts."
        )
    return docs


def check_rank_fields(rank_fields: Any) -> list[str] | None:
    if rank_fields is None:
        return None
    if isinstance(rank_fields, str) or not isinstance(rank_fields, Sequence):
        raise RerankInputError(
            f"`rank_fields` must be a list of field names, e.g. ['title', 'text']; "
            f"got {rank_fields!r}."
        )
    fields = list(rank_fields)
    if not fields or not all(isinstance(f, str) and f for f in fields):
        raise RerankInputError(
            f"`rank_fields` must be a non-empty list of non-empty strings; got {rank_fields!r}."
        )
    return fields


def validate_call(
    *,
    query: Any,
    documents: Any,
    top_n: Any = None,
    rank_fields: Any = None,
    score_threshold: Any = None,
) -> CallSpec:
    """Check one call's arguments; raise :class:`RerankInputError` naming the fix."""
    try:
        top_n = validate_top_n(top_n)
        threshold = validate_score_threshold(score_threshold)
    except ValueError as exc:  # same checks as construction, reported as call errors
        raise RerankInputError(str(exc)) from None
    query = _check_query(query)
    fields = check_rank_fields(rank_fields)
    docs = _check_documents(documents, fields)
    return CallSpec(query, docs, top_n, fields, threshold)


def _bad(detail: str) -> MalformedResponseError:
    return MalformedResponseError(
        f"The rerank server sent an answer that cannot be trusted: {detail}. No ranking was "
        "returned. If this persists, check that `base_url` points at a server that speaks "
        "Together's /v1/rerank API."
    )


def parse_batch(payload: Any, *, sent: int, expected: int) -> list[tuple[int, float]]:
    """Validate one answer to a request of ``sent`` documents that asked for ``expected``
    results; return ``(position in the request, score)`` pairs.

    A non-object, a missing ``results`` list, an index out of range or repeated, a missing
    or non-finite score, or fewer results than asked all raise: never a wrong ranking.
    """
    if not isinstance(payload, Mapping):
        raise _bad(f"expected a JSON object, got {type(payload).__name__}")
    results = payload.get("results")
    if not isinstance(results, list):
        raise _bad("the 'results' list is missing")
    seen: set[int] = set()
    pairs: list[tuple[int, float]] = []
    for pos, item in enumerate(results):
        if not isinstance(item, Mapping):
            raise _bad(f"results[{pos}] is not an object")
        index = item.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise _bad(f"results[{pos}].index is {index!r}, not an integer")
        if not 0 <= index < sent:
            raise _bad(f"results[{pos}].index {index} is out of range for {sent} documents")
        if index in seen:
            raise _bad(f"index {index} appears more than once")
        seen.add(index)
        score = item.get("relevance_score")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise _bad(f"results[{pos}].relevance_score is {score!r}, not a number")
        if not math.isfinite(score):
            raise _bad(f"results[{pos}].relevance_score is {score!r}, not a finite number")
        pairs.append((index, float(score)))
    if len(pairs) < expected:
        raise _bad(f"{len(pairs)} results for {sent} documents, expected {expected}")
    return pairs


def parse_usage(payload: Mapping[str, Any]) -> Usage:
    """The ``usage`` block of an answer, tolerating its absence."""
    usage = payload.get("usage")
    if not isinstance(usage, Mapping):
        return Usage()

    def count(name: str) -> int | None:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return Usage(count("prompt_tokens"), count("total_tokens"))
