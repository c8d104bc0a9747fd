"""Validating one call's arguments: pure, no I/O.

:func:`validate_call` checks a call's query, documents and options, raising
:class:`RerankInputError` (naming the fix) before anything is sent, and returns the
:class:`CallSpec` that :class:`together_rerank_plugins._plan.CallPlan` plans from.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._config import validate_score_threshold, validate_top_n
from ._errors import RerankInputError

__all__ = [
    "LONE_SURROGATE",
    "CallSpec",
    "Document",
    "canonical",
    "check_rank_fields",
    "clean_text",
    "is_blank",
    "require_sequence",
    "structured_document",
    "validate_call",
]

Document = str | Mapping[str, Any]


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
    fields, and the item's own text under ``"text"`` (always: a metadata key named "text",
    such as a loader's placeholder, never replaces the passage). Values JSON cannot carry
    (dates, NaN, ...), at any depth, become strings; a missing field is left out, so
    validation names it."""
    doc: dict[str, Any] = {}
    for name in fields:
        if name == "text":
            doc[name] = text
        elif name in metadata:
            doc[name] = _jsonable(metadata[name])
    return doc


#: a lone surrogate: text that is not valid Unicode (half of a UTF-16 pair, or a byte
#: decoded with ``surrogateescape``); JSON can carry one as an escape, UTF-8 cannot encode it
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Replace lone surrogates (text decoded with ``surrogateescape``) by U+FFFD: they
    cannot be sent as UTF-8. The caller's objects keep their text; only what is sent changes."""
    if text.isascii() or not LONE_SURROGATE.search(text):  # isascii: a fast C scan
        return text
    return LONE_SURROGATE.sub("\ufffd", text)


class _BadKey(Exception):
    """A mapping key that JSON cannot carry as it is (raised while cleaning a document)."""


def _clean_value(value: Any) -> Any:
    """A document's value as sent: lone surrogates replaced at any depth (keys and tuples
    included; tuples become lists, as JSON sends them). A key that is not a string, or two
    keys that only differ by such characters, raise :class:`_BadKey`: JSON keys are strings,
    and ``{1: "a", "1": "b"}`` would send one key twice."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, (list, tuple)):
        return [_clean_value(v) for v in value]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                shown = repr(key) if len(repr(key)) <= 40 else type(key).__name__
                raise _BadKey(
                    f"has a key {shown} that is not a string; JSON object keys are strings: "
                    "convert them, e.g. {str(k): v for k, v in doc.items()}"
                )
            name = clean_text(key)
            if name in out:
                raise _BadKey(
                    f"has two keys that both become {name!r} once their lone surrogates "
                    "are replaced by U+FFFD; rename one"
                )
            out[name] = _clean_value(item)
        return out
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
    docs = []
    for i, d in enumerate(documents):
        try:
            docs.append(_clean_value(d))
        except _BadKey as exc:
            raise RerankInputError(f"documents[{i}] {exc}.") from None
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
    if fields is not None:  # cleaned as the documents' keys are, so they still match
        fields = [clean_text(f) for f in fields]
    docs = _check_documents(documents, fields)
    return CallSpec(query, docs, top_n, fields, threshold)
