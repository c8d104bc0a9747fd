"""Pure request planning and response validation: no I/O, no SDK, no framework.

:func:`plan_request` checks one call's arguments and builds the SDK keyword arguments;
:func:`parse_response` turns the server's JSON into a trustworthy ranking or raises
:class:`MalformedResponseError`. Keeping both pure lets the sync and async paths share them
and lets tests check them without a server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._config import validate_score_threshold, validate_top_n
from ._errors import MalformedResponseError, RerankInputError

__all__ = ["Document", "RequestPlan", "RerankResult", "parse_response", "plan_request"]

Document = str | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RerankResult:
    """One ranked candidate: ``index`` into the caller's ``documents`` and its score."""

    index: int
    relevance_score: float


@dataclass(frozen=True)
class RequestPlan:
    """What one call sends (``kwargs`` for ``rerank.create``) and how to read the answer."""

    kwargs: dict[str, Any]
    n_documents: int
    top_n: int | None
    score_threshold: float | None

    @property
    def expected_results(self) -> int:
        return self.n_documents if self.top_n is None else min(self.top_n, self.n_documents)


def _check_query(query: Any) -> str:
    if query is None:
        raise RerankInputError("`query` is missing: pass the user's question as a string.")
    if not isinstance(query, str):
        raise RerankInputError(f"`query` must be a string, not {type(query).__name__}.")
    if not query.strip():
        raise RerankInputError(
            "`query` is empty or only whitespace: a reranker needs a question to rank against."
        )
    return query


def _check_documents(documents: Any, rank_fields: list[str] | None) -> list[Document]:
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise RerankInputError(
            "`documents` must be a list of strings or of mappings (dicts), "
            f"not {type(documents).__name__}."
        )
    docs = list(documents)
    kinds = set()
    for i, doc in enumerate(docs):
        if isinstance(doc, str):
            kinds.add("str")
        elif isinstance(doc, Mapping):
            kinds.add("mapping")
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


def _check_rank_fields(rank_fields: Any) -> list[str] | None:
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


def plan_request(
    *,
    model: str,
    query: Any,
    documents: Any,
    top_n: Any = None,
    rank_fields: Any = None,
    score_threshold: Any = None,
) -> RequestPlan:
    """Validate one call and build the request. Only options the caller set are sent.

    The key order of ``kwargs`` is fixed, so the request JSON is deterministic (recorded
    cassettes match on the body).
    """
    try:
        top_n = validate_top_n(top_n)
        threshold = validate_score_threshold(score_threshold)
    except ValueError as exc:  # same checks as construction, reported as call errors
        raise RerankInputError(str(exc)) from None
    query = _check_query(query)
    fields = _check_rank_fields(rank_fields)
    docs = _check_documents(documents, fields)
    kwargs: dict[str, Any] = {"model": model, "query": query, "documents": docs}
    if top_n is not None and top_n < len(docs):
        kwargs["top_n"] = top_n
    if fields is not None:
        kwargs["rank_fields"] = fields
    return RequestPlan(kwargs=kwargs, n_documents=len(docs), top_n=top_n, score_threshold=threshold)


def _bad(detail: str) -> MalformedResponseError:
    return MalformedResponseError(
        f"The rerank server sent an answer that cannot be trusted: {detail}. No ranking was "
        "returned. If this persists, check that `base_url` points at a server that speaks "
        "Together's /v1/rerank API."
    )


def parse_response(plan: RequestPlan, payload: Any) -> list[RerankResult]:
    """Validate the server's JSON and return the ranking, best first.

    The server's order is not trusted: results are mapped by ``index`` and sorted here by
    descending score (ties keep the caller's order). ``top_n`` and then ``score_threshold``
    apply after sorting.
    """
    if not isinstance(payload, Mapping):
        raise _bad(f"expected a JSON object, got {type(payload).__name__}")
    results = payload.get("results")
    if not isinstance(results, list):
        raise _bad("the 'results' list is missing")
    seen: set[int] = set()
    ranked: list[RerankResult] = []
    for pos, item in enumerate(results):
        if not isinstance(item, Mapping):
            raise _bad(f"results[{pos}] is not an object")
        index = item.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise _bad(f"results[{pos}].index is {index!r}, not an integer")
        if not 0 <= index < plan.n_documents:
            raise _bad(
                f"results[{pos}].index {index} is out of range for {plan.n_documents} documents"
            )
        if index in seen:
            raise _bad(f"index {index} appears more than once")
        seen.add(index)
        score = item.get("relevance_score")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise _bad(f"results[{pos}].relevance_score is {score!r}, not a number")
        if not math.isfinite(score):
            raise _bad(f"results[{pos}].relevance_score is {score!r}, not a finite number")
        ranked.append(RerankResult(index=index, relevance_score=float(score)))
    if len(ranked) < plan.expected_results:
        raise _bad(
            f"{len(ranked)} results for {plan.n_documents} documents, expected "
            f"{plan.expected_results}"
        )
    ranked.sort(key=lambda r: (-r.relevance_score, r.index))
    if plan.top_n is not None:
        ranked = ranked[: plan.top_n]
    if plan.score_threshold is not None:
        ranked = [r for r in ranked if r.relevance_score >= plan.score_threshold]
    return ranked
