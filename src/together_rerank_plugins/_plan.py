"""Turning one validated call into requests, and their answers into one ranking.

Steps, all pure (the client does the I/O between them):

1. **Dedupe.** Candidates whose text as sent is identical are scored once. Candidates
   with no text (empty or whitespace) are not sent: they come back after every scored
   candidate, in input order, with score 0.0, filling only places ``top_n`` leaves.
2. **Cache.** With a score store, each unique document gets a key (endpoint, model, query,
   rank fields, long-document variant, tokenizer, extra request fields, SHA-256 of the
   document; see ``_cache.cache_key``); hits are not sent.
3. **Long documents.** A document over the token budget is split into overlapping windows
   (``"chunk"``), cut (``"truncate"``) or refused (``"error"``).
4. **Batches.** What remains is cut into requests of at most ``max_batch_size`` documents,
   which the client sends concurrently.
5. **Merge.** Each document's score is its best window's; the scores of all batches and of
   the cache form one global ranking; then ``top_n``, then ``score_threshold``.

Why merging is sound: LlamaRank and Mxbai are pointwise cross-encoders. Each score depends
only on (query, document), not on the other documents of the request, so scores from
different requests (or from yesterday's cache) with the same model and query are on the
same scale and can be sorted together. It would not be sound for a listwise reranker (one
that reads all candidates at once and returns relative scores), nor across different
models, queries or rank fields: those are part of the cache key, and one call never mixes
them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._cache import BUILTIN_TOKENIZER_ID, cache_key, document_digest, finite_score
from ._errors import RerankInputError
from ._inputs import CallSpec, Document, canonical, is_blank
from ._longdocs import TokenCounter, split_windows, truncate
from ._results import RerankResult, RerankResults, Usage, parse_batch, parse_usage

__all__ = ["CallPlan", "PlanOptions"]

#: the score of a candidate with no text (empty or whitespace; it is not sent), or the
#: lowest score of the call if that is lower
BLANK_SCORE = 0.0
#: tokens reserved for the model's own framing of (query, document)
_FRAMING_TOKENS = 16
#: a document part smaller than this cannot carry meaning next to the query
_MIN_DOC_TOKENS = 32


@dataclass(frozen=True)
class PlanOptions:
    model: str
    max_batch_size: int
    dedupe: bool = True
    use_cache: bool = False
    long_documents: str = "chunk"
    max_tokens_per_doc: int | None = None
    count_tokens: TokenCounter | None = None
    fast_upper_bound: int = 0  # tokens per char that `count_tokens` never exceeds (0: unknown)
    # cache key parts: where scores come from and what else shapes them (see _cache)
    endpoint: str = ""
    tokenizer_id: str = BUILTIN_TOKENIZER_ID
    #: fields merged into every request body (``extra_body``): part of the cache key,
    #: since they may change scores (an instruction for an instruction-following reranker)
    extra_body: Mapping[str, Any] | None = None


@dataclass
class _Piece:
    unique: int
    payload: Document


@dataclass
class _Request:
    pieces: list[int]
    top_n: int | None
    kwargs: dict[str, Any] = field(default_factory=dict)


class CallPlan:
    """One call, from validated arguments to :class:`RerankResults`."""

    def __init__(self, spec: CallSpec, options: PlanOptions) -> None:
        self.spec = spec
        self.options = options
        self._unique_of: list[int] = []
        self._first_of: list[int] = []
        self._uniques: list[Document] = []
        seen: dict[str, int] = {}
        self._canon: list[str] = []
        for i, doc in enumerate(spec.documents):
            # blanks are never sent, so never merged (with each other or with a document
            # that spells any marker we could give them): each keeps its place
            blank = is_blank(doc)
            text = "" if blank else canonical(doc)
            u = None if blank else seen.get(text)
            if u is None:
                u = len(self._uniques)
                if not blank:
                    seen[text] = u
                self._uniques.append(doc)
                self._canon.append(text)
                self._first_of.append(i)
            self._unique_of.append(u)
        self.scores: dict[int, float] = {}
        # nothing to score: never sent, returned after every scored candidate
        self._blank = {u for u, doc in enumerate(self._uniques) if is_blank(doc)}
        self.cache_hits = 0
        self._fresh: set[int] = set()
        self._pieces: list[_Piece] = []
        self._requests: list[_Request] = []
        self._usage = Usage()
        self._doc_budget: int | None = None
        self._variant = self._long_variant()

    # -- cache ---------------------------------------------------------------------------
    def _long_variant(self) -> str:
        o = self.options
        if o.long_documents == "error":  # a scored document was always sent whole
            return "whole"
        return f"{o.long_documents}:{o.max_tokens_per_doc}" if o.max_tokens_per_doc else "-"

    def cache_keys(self) -> list[str]:
        """One key per unique document (only meaningful with a cache)."""
        o = self.options
        # with "error", a scored document was sent whole: the tokenizer only decided
        # whether to refuse it, not what its score is
        tokenizer = "-" if o.long_documents == "error" else o.tokenizer_id
        return [
            cache_key(
                endpoint=o.endpoint,
                model=o.model,
                query=self.spec.query,
                rank_fields=self.spec.rank_fields,
                variant=self._variant,
                tokenizer=tokenizer,
                extra=canonical(o.extra_body) if o.extra_body else None,
                # an object's canonical JSON may equal a string document: not the same
                # request (the server serialises objects its own way), so not one key
                digest=("obj:" if isinstance(doc, Mapping) else "") + document_digest(text),
            )
            for doc, text in zip(self._uniques, self._canon, strict=True)
        ]

    def use_cached(self, values: Sequence[float | None]) -> None:
        """Take the cached scores (one per unique document); anything but a finite number
        (a corrupt or foreign store) is a miss, scored again."""
        for u, value in enumerate(values[: len(self._uniques)]):
            if u in self._blank:
                continue
            score = finite_score(value)
            if score is not None:
                self.scores[u] = score
                self.cache_hits += 1

    def fresh_scores(self, keys: Sequence[str]) -> list[tuple[str, float]]:
        """What this call learned, to write back to the cache."""
        return [(keys[u], self.scores[u]) for u in sorted(self._fresh)]

    # -- requests ------------------------------------------------------------------------
    def requests(self) -> list[dict[str, Any]]:
        """The keyword arguments of each request to send (possibly none)."""
        if self._requests:
            return [r.kwargs for r in self._requests]
        chunked = False
        todo = [
            u for u in range(len(self._uniques)) if u not in self.scores and u not in self._blank
        ]
        if self._all_fit(todo):  # the common case: no document can be over budget
            self._pieces.extend(_Piece(u, self._uniques[u]) for u in todo)
        else:
            for u in todo:
                parts = self._fit(u, self._uniques[u])
                chunked = chunked or len(parts) > 1
                self._pieces.extend(_Piece(u, p) for p in parts)
        size = self.options.max_batch_size
        top_n = self.spec.top_n
        # top_n may be sent only when every unique document is one piece and nothing is
        # cached: the global top n is then inside each batch's top n.
        send_top_n = top_n if not (chunked or self.options.use_cache) else None
        for start in range(0, len(self._pieces), size):
            idx = list(range(start, min(start + size, len(self._pieces))))
            req_top = send_top_n if send_top_n is not None and send_top_n < len(idx) else None
            kwargs: dict[str, Any] = {
                "model": self.options.model,
                "query": self.spec.query,
                "documents": [self._pieces[i].payload for i in idx],
            }
            if req_top is not None:
                kwargs["top_n"] = req_top
            if self.spec.rank_fields is not None:
                kwargs["rank_fields"] = self.spec.rank_fields
            if self.options.extra_body:  # the SDK merges it into the JSON body
                kwargs["extra_body"] = dict(self.options.extra_body)
            self._requests.append(_Request(idx, req_top, kwargs))
        return [r.kwargs for r in self._requests]

    def _budget(self) -> int | None:
        """Tokens left for a document next to the query (None: no limit); counted once."""
        o = self.options
        if o.max_tokens_per_doc is None or o.count_tokens is None:
            return None
        if self._doc_budget is None:
            self._doc_budget = (
                o.max_tokens_per_doc - o.count_tokens(self.spec.query) - _FRAMING_TOKENS
            )
        return self._doc_budget

    def _all_fit(self, todo: list[int]) -> bool:
        """True when no document can be over budget, judged from lengths alone (the
        built-in estimate never exceeds ``fast_upper_bound`` tokens per character)."""
        budget = self._budget()
        if budget is None:
            return True
        bound = self.options.fast_upper_bound
        longest = max((len(self._canon[u]) for u in todo), default=0)
        return bool(bound) and budget >= _MIN_DOC_TOKENS and longest * bound + 1 <= budget

    def _fit(self, u: int, doc: Document) -> list[Document]:
        o = self.options
        budget = self._budget()
        if budget is None or o.count_tokens is None:
            return [doc]
        count = o.count_tokens
        text = self._canon[u]
        if o.fast_upper_bound and len(text) * o.fast_upper_bound + 1 <= budget:
            return [doc]  # cannot be over budget: skip counting
        if budget < _MIN_DOC_TOKENS:
            raise RerankInputError(
                f"The query alone uses most of the {o.max_tokens_per_doc}-token budget per "
                "document; shorten the query or raise `max_tokens_per_doc`."
            )
        total = count(text)
        if total <= budget:
            return [doc]
        index = self._first_of[u]
        if o.long_documents == "error":
            raise RerankInputError(
                f"documents[{index}] is longer than the model's {o.max_tokens_per_doc}-token "
                "budget per document (query included). Shorten it, or set "
                'long_documents="chunk" (score its best window) or "truncate".'
            )
        if isinstance(doc, str):
            return self._cut(doc, budget, count, total)
        return self._cut_mapping(index, doc, budget)

    def _cut(
        self, text: str, budget: int, count: TokenCounter, total: int | None = None
    ) -> list[Document]:
        if self.options.long_documents == "truncate":
            return [truncate(text, budget, count)]
        return list(split_windows(text, budget, count, total=total))

    def _cut_mapping(self, index: int, doc: Mapping[str, Any], budget: int) -> list[Document]:
        """Fit a mapping by cutting its longest string field among the ranked ones."""
        count = self.options.count_tokens
        assert count is not None
        fields = self.spec.rank_fields or list(doc)
        strings = [f for f in fields if isinstance(doc.get(f), str)]
        if not strings:
            raise RerankInputError(
                f"documents[{index}] is over the token budget and has no text field to cut; "
                "shorten it or raise `max_tokens_per_doc`."
            )
        longest = max(strings, key=lambda f: len(doc[f]))
        rest = count(canonical({**doc, longest: ""}))  # the JSON around the field
        room = budget - rest
        if room < _MIN_DOC_TOKENS:
            raise RerankInputError(
                f"documents[{index}]: the fields other than {longest!r} already fill the "
                "token budget; shorten them or raise `max_tokens_per_doc`."
            )

        def as_sent(part: str) -> int:  # the field as it appears in the JSON sent
            return count(json.dumps(part, ensure_ascii=False)[1:-1])

        return [{**doc, longest: part} for part in self._cut(doc[longest], room, as_sent)]

    # -- answers -------------------------------------------------------------------------
    def absorb(self, request_no: int, payload: Any) -> None:
        """Check one answer and record its scores (best window per document)."""
        req = self._requests[request_no]
        sent = len(req.pieces)
        expected = sent if req.top_n is None else req.top_n
        for pos, score in parse_batch(payload, sent=sent, expected=expected):
            u = self._pieces[req.pieces[pos]].unique
            if u not in self.scores or score > self.scores[u]:
                self.scores[u] = score
            self._fresh.add(u)
        if isinstance(payload, Mapping):
            self._usage = self._usage + parse_usage(payload)

    def results(self) -> RerankResults:
        ranked = []
        blank = []
        for i, u in enumerate(self._unique_of):
            if self.options.dedupe and self._first_of[u] != i:
                continue
            score = self.scores.get(u)
            if u in self._blank:
                blank.append(i)
            elif score is not None:
                ranked.append(RerankResult(i, score))
        ranked.sort(key=lambda r: (-r.relevance_score, r.index))
        # blanks: input order, after every scored candidate, at 0.0 or below the lowest
        # score (a server may answer negative scores), so the ranking stays sorted
        floor = min([BLANK_SCORE, *(r.relevance_score for r in ranked)])
        ranked.extend(RerankResult(i, floor) for i in blank)
        if self.spec.top_n is not None:
            ranked = ranked[: self.spec.top_n]
        if self.spec.score_threshold is not None:
            ranked = [r for r in ranked if r.relevance_score >= self.spec.score_threshold]
        return RerankResults(
            ranked,
            usage=self._usage,
            requests=len(self._requests),
            documents_sent=len(self._pieces),
            cache_hits=self.cache_hits,
            duplicates=len(self._unique_of) - len(self._uniques),
        )

    def position_scores(self, results: Sequence[RerankResult] | None = None) -> list[float]:
        """One score per input position (copies share theirs); for a call planned with
        neither ``top_n`` nor ``score_threshold``. ``results``: the ranking of this call
        (default: this plan's; a failover endpoint's comes from its own plan)."""
        ranked = self.results() if results is None else results
        scores = {r.index: r.relevance_score for r in ranked}
        return [scores[self._first_of[u]] for u in self._unique_of]

    def fallback(self, error: Any) -> RerankResults:
        """The candidates in retrieval order, cut to ``top_n`` (scores unknown: NaN)."""
        order = [
            i
            for i, u in enumerate(self._unique_of)
            if not self.options.dedupe or self._first_of[u] == i
        ]
        if self.spec.top_n is not None:
            order = order[: self.spec.top_n]
        return RerankResults(
            [RerankResult(i, float("nan")) for i in order],
            usage=self._usage,
            requests=len(self._requests),
            fallback=True,
            error=error,
        )
