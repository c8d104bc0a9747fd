"""Result types, and checking one server answer: pure, no I/O.

:func:`parse_batch` turns one server answer into trustworthy ``(position, score)`` pairs or
raises :class:`MalformedResponseError`; the sync and async paths share it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import MalformedResponseError, RerankError

__all__ = [
    "FALLBACK_KEY",
    "RELEVANCE_SCORE_KEY",
    "SERVED_BY_KEY",
    "Endpoint",
    "RerankResult",
    "RerankResults",
    "Usage",
    "parse_batch",
    "parse_usage",
]

#: Metadata key of the relevance score on every result both adapters return (the key
#: langchain-cohere uses; ``None`` on a fallback, where nothing was scored).
RELEVANCE_SCORE_KEY = "relevance_score"
#: Metadata key both adapters set to True on results of an ``on_error="fallback"`` answer
#: (the retrieval order, kept because reranking failed).
FALLBACK_KEY = "rerank_fallback"
#: Metadata key both adapters set (to ``str(results.served_by)``) on results that a
#: ``failover=`` endpoint scored, because the primary failed.
SERVED_BY_KEY = "rerank_served_by"
#: Both flags above: they describe one call, so a later rerank stage replaces them.
CALL_FLAGS = frozenset({FALLBACK_KEY, SERVED_BY_KEY})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Which endpoint scored a call: its ``model`` and ``base_url`` (never credentials:
    a user name or password in the URL is dropped). ``str()`` gives ``"model @ base_url"``."""

    model: str
    base_url: str

    @classmethod
    def of(cls, model: str, base_url: str) -> Endpoint:
        scheme, sep, rest = base_url.partition("://")
        host, slash, path = rest.partition("/")
        host = host.rpartition("@")[2]  # drop user:password@, if any
        return cls(model, f"{scheme}{sep}{host}{slash}{path}")

    def __str__(self) -> str:
        return f"{self.model} @ {self.base_url}"


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
    - ``served_by``: the :class:`Endpoint` whose scores these are (None on fallback);
      ``failed_over`` is True when that is a ``failover=`` endpoint, not the primary.
    """

    usage: Usage
    requests: int
    documents_sent: int
    cache_hits: int
    duplicates: int
    fallback: bool
    error: RerankError | None
    served_by: Endpoint | None
    failed_over: bool

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
        served_by: Endpoint | None = None,
        failed_over: bool = False,
    ) -> None:
        super().__init__(results)
        self.usage = usage or Usage()
        self.requests = requests
        self.documents_sent = documents_sent
        self.cache_hits = cache_hits
        self.duplicates = duplicates
        self.fallback = fallback
        self.error = error
        self.served_by = served_by
        self.failed_over = failed_over

    def call_flags(self) -> dict[str, Any]:
        """The metadata both adapters put on every result of this call:
        ``{FALLBACK_KEY: True}`` on a fallback, ``{SERVED_BY_KEY: "model @ url"}`` when a
        ``failover=`` endpoint scored it, else nothing."""
        if self.fallback:
            return {FALLBACK_KEY: True}
        if self.failed_over:
            return {SERVED_BY_KEY: str(self.served_by)}
        return {}

    def relevance(self, result: RerankResult) -> float | None:
        """``result``'s relevance score as the adapters show it: ``None`` on a fallback
        (nothing was scored; the core's NaN is not a score), so the score key is on every
        returned item and code reading it never meets a ``KeyError`` or a NaN."""
        return None if self.fallback else result.relevance_score

    def stamp(
        self,
        metadata: Mapping[str, Any],
        result: RerankResult,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A new metadata dict for ``result``: ``metadata`` without the flags an earlier
        rerank stage set (they describe that stage, not this call), plus the score under
        :data:`RELEVANCE_SCORE_KEY` (:meth:`relevance`: ``None`` on a fallback), ``extra``
        and this call's :meth:`call_flags`. ``metadata`` itself is not changed."""
        kept = {k: v for k, v in metadata.items() if k not in CALL_FLAGS}
        score = {RELEVANCE_SCORE_KEY: self.relevance(result)}
        return {**kept, **score, **(extra or {}), **self.call_flags()}


def _bad(detail: str) -> MalformedResponseError:
    return MalformedResponseError(
        f"The rerank server sent an answer that cannot be trusted: {detail}. No ranking was "
        "returned. If this persists, check that `base_url` points at a server that speaks "
        "Together's /v1/rerank API."
    )


def _show(value: Any) -> str:
    """A server value for an error message: numbers as they are (huge ones by size), never
    the text of a string (a server may echo the request's ``Authorization`` header)."""
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        bits = value.bit_length()
        return repr(value) if bits <= 64 else f"an integer of about {bits * 3 // 10} digits"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return f"a JSON {'object' if isinstance(value, Mapping) else type(value).__name__}"


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
            raise _bad(f"results[{pos}].index is {_show(index)}, not an integer")
        if not 0 <= index < sent:
            raise _bad(f"results[{pos}].index {_show(index)} is out of range for {sent} documents")
        if index in seen:
            raise _bad(f"index {index} appears more than once")
        seen.add(index)
        score = item.get("relevance_score")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise _bad(f"results[{pos}].relevance_score is {_show(score)}, not a number")
        try:
            value = float(score)  # an integer of hundreds of digits overflows
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise _bad(f"results[{pos}].relevance_score is {_show(score)}, not a finite number")
        pairs.append((index, value))
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
