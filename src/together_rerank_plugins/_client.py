"""The shared rerank client: one validated, planned, batched, cached call.

The framework adapters only translate their objects to :meth:`RerankClient.rerank` /
:meth:`RerankClient.arerank` calls and back; everything else happens here and in the pure
modules it drives (``_inputs``, ``_plan``, ``_results``, ``_longdocs``, ``_cache``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._cache import InMemoryScoreStore, ScoreStore, amget, amset, wrap_framework_store
from ._config import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    Settings,
    accepts_rank_fields,
    model_limits,
    note_assumed_family,
    positive_int,
    resolve_model_family,
    resolve_settings,
)
from ._errors import (
    AuthenticationError,
    BadRequestError,
    EndpointNotFoundError,
    RerankConfigError,
    RerankError,
    RerankInputError,
)
from ._extras import check_extra_body
from ._inputs import CallSpec, Document, validate_call
from ._longdocs import LONG_DOCUMENT_POLICIES, estimate_tokens
from ._plan import CallPlan, PlanOptions
from ._results import RerankResults
from ._sdk import SDKClients

if TYPE_CHECKING:
    import httpx

__all__ = ["RerankClient"]

logger = logging.getLogger("together_rerank_plugins")

#: errors that fallback never masks: they are the caller's to fix, not the service's
#: (a wrong key, a bad request, a model or endpoint that does not exist, no credit)
_NEVER_MASKED = (
    AuthenticationError,
    BadRequestError,
    EndpointNotFoundError,
    RerankConfigError,
    RerankInputError,
)
ON_ERROR = ("raise", "fallback")


def _resolve_cache(cache: Any) -> ScoreStore | None:
    if cache is None or cache is False:
        return None
    if cache is True:
        return InMemoryScoreStore()
    framework_store = wrap_framework_store(cache)
    if framework_store is not None:
        return framework_store
    if callable(getattr(cache, "mget", None)) and callable(getattr(cache, "mset", None)):
        return cache  # type: ignore[no-any-return]
    raise RerankConfigError(
        "`cache` must be True (in-memory LRU), False/None, a store with mget(keys)/"
        "mset(items), a LlamaIndex BaseKVStore or a LangChain BaseStore[str, bytes]; got "
        f"{type(cache).__name__}."
    )


class RerankClient:
    """Rerank documents against a query with Together's ``/v1/rerank`` (or a compatible server).

    Configuration: arguments win over environment variables (``TOGETHER_API_KEY``,
    ``TOGETHER_BASE_URL``, ``TOGETHER_RERANK_MODEL``), which win over defaults (model
    ``Salesforce/Llama-Rank-V1``, base URL ``https://api.together.ai``). ``base_url`` may end
    in ``/v1`` or not. Retries (``max_retries``, default 2) are the SDK's: 408, 409, 429, 5xx,
    timeouts and connection errors, with backoff that honours ``Retry-After``. ``timeout`` is
    seconds per attempt.

    Scale and cost:

    - ``max_batch_size`` (default: the model's documented cap, 1,024 for Llama-Rank) and
      ``max_concurrency`` (requests in flight for one call, default 8): more candidates than
      one request takes are sent in concurrent batches and merged into one ranking (see
      ``_plan`` for why merging pointwise scores is sound).
    - Identical candidates are scored once. ``dedupe=True`` (default) returns only the first
      occurrence; ``dedupe=False`` returns every occurrence with the shared score.
    - ``cache``: ``True`` for an in-memory LRU of scores, or any store with
      ``mget``/``mset``; only documents that miss are sent.
    - ``long_documents``: ``"chunk"`` (default: overlapping windows, best window's score),
      ``"truncate"`` or ``"error"`` for documents over ``max_tokens_per_doc`` (default: the
      model's, 8,192 for Llama-Rank; the query counts against it). Counts are estimated
      without undercounting, or come from ``tokenizer`` (a function returning a count).

    Which model, and compatible servers:

    - ``model_family``: ``"llama-rank"`` or ``"mxbai"`` (env
      ``TOGETHER_RERANK_MODEL_FAMILY``; default: read from the model's name). It sets the
      documented limits and whether object documents with ``rank_fields`` are accepted. A
      dedicated endpoint's string (``acme/rerank-prod``) reveals no family: without one, the
      client uses conservative limits (1,024 documents, 8,192 tokens) and says so once at
      INFO. Explicit ``max_batch_size`` / ``max_tokens_per_doc`` win.
    - ``extra_body``: fields merged into every request body, for servers reached through
      ``base_url`` that take more than Together's documented fields (an instruction for an
      instruction-following reranker). Keys the client sets itself are refused. It is part
      of the score cache key.
    - ``default_headers``: headers sent with every request (a gateway's routing header).
      Kept out of ``repr`` and logs, like the key.

    Failure: ``on_error="raise"`` (default) raises a typed :class:`RerankError`;
    ``"fallback"`` logs a WARNING and returns the candidates in their original order cut to
    ``top_n`` (``results.fallback`` is True, scores are NaN) — except for errors that need
    a fix rather than a retry later (authentication, bad request, unknown model or
    endpoint, no credit), which always raise.

    ``transport`` (an ``httpx`` transport such as ``httpx.MockTransport`` or
    :class:`together_rerank_plugins.testing.LexicalRerankEndpoint`) replaces the network for
    both the sync and async clients: use it for tests and proxies.

    Example::

        >>> from together_rerank_plugins import RerankClient
        >>> from together_rerank_plugins.testing import LexicalRerankEndpoint
        >>> client = RerankClient(api_key="offline", transport=LexicalRerankEndpoint())
        >>> docs = ["Berlin is in Germany", "Paris is the capital of France"]
        >>> client.rerank("capital of France", docs)
        [RerankResult(index=1, relevance_score=1.0), RerankResult(index=0, relevance_score=0.0)]
    """

    def __init__(
        self,
        model: str | None = None,
        api_key: Any = None,
        base_url: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        *,
        max_batch_size: int | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        dedupe: bool = True,
        cache: Any = None,
        long_documents: str = "chunk",
        max_tokens_per_doc: int | None = None,
        tokenizer: Callable[[str], int] | None = None,
        on_error: str = "raise",
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        model_family: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        settings: Settings = resolve_settings(
            model=model,
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
        )
        self._model_family = resolve_model_family(model_family, settings.model)
        self._extra_body = check_extra_body(extra_body)
        limits = model_limits(settings.model, self._model_family)
        if long_documents not in LONG_DOCUMENT_POLICIES:
            raise RerankConfigError(
                f"`long_documents` must be one of {LONG_DOCUMENT_POLICIES}; got {long_documents!r}."
            )
        if on_error not in ON_ERROR:
            raise RerankConfigError(f"`on_error` must be one of {ON_ERROR}; got {on_error!r}.")
        if transport is not None and not (
            callable(getattr(transport, "handle_request", None))
            and callable(getattr(transport, "handle_async_request", None))
        ):
            raise RerankConfigError(
                "`transport` serves both the sync and the async client, so it needs "
                "handle_request and handle_async_request (httpx.MockTransport, "
                "LexicalRerankEndpoint); for a real network use `base_url` instead."
            )
        if tokenizer is not None and not callable(tokenizer):
            raise RerankConfigError("`tokenizer` must be a function str -> token count.")
        self.max_batch_size = positive_int(
            "max_batch_size", limits.max_documents if max_batch_size is None else max_batch_size
        )
        self.max_concurrency = positive_int("max_concurrency", max_concurrency)
        self.max_tokens_per_doc = positive_int(
            "max_tokens_per_doc",
            limits.max_tokens_per_doc if max_tokens_per_doc is None else max_tokens_per_doc,
        )
        self.dedupe = bool(dedupe)
        self.cache = _resolve_cache(cache)
        self.long_documents = long_documents
        self.tokenizer = tokenizer
        self.on_error = on_error
        self._sdk = SDKClients(settings, transport)
        if self._model_family is None and (max_batch_size is None or max_tokens_per_doc is None):
            note_assumed_family(settings.model, limits)

    # -- configuration -------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self._sdk.settings.model

    @property
    def base_url(self) -> str:
        return self._sdk.settings.base_url

    @property
    def model_family(self) -> str | None:
        """``"llama-rank"``, ``"mxbai"``, or ``None`` when neither the configuration nor
        the model's name says (conservative limits are then used)."""
        return self._model_family

    @property
    def extra_body(self) -> dict[str, Any] | None:
        """A copy of the fields merged into every request body (``None``: none)."""
        return None if self._extra_body is None else dict(self._extra_body)

    @property
    def timeout(self) -> float | None:
        return self._sdk.settings.timeout

    @property
    def max_retries(self) -> int:
        return self._sdk.settings.max_retries

    def __repr__(self) -> str:
        s = self._sdk.settings
        return (
            f"RerankClient(model={s.model!r}, base_url={s.base_url!r}, timeout={s.timeout!r}, "
            f"max_retries={s.max_retries!r}, model_family={self.model_family!r}, "
            f"max_batch_size={self.max_batch_size}, "
            f"max_concurrency={self.max_concurrency}, on_error={self.on_error!r})"
        )

    def __copy__(self) -> RerankClient:
        return self  # immutable configuration, thread-safe: copies share it

    def __deepcopy__(self, memo: dict[int, Any]) -> RerankClient:
        return self

    def __reduce__(self) -> Any:
        raise TypeError(
            "RerankClient holds an API key and open connections and is not picklable; "
            "pickle the adapter (which rebuilds its client) or build a new client."
        )

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the sync SDK client's connections (async ones close with :meth:`aclose`
        or when their event loop shuts down)."""
        self._sdk.close()

    async def aclose(self) -> None:
        """Close the SDK client of the running event loop, and the sync one."""
        await self._sdk.aclose()

    def __enter__(self) -> RerankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RerankClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- planning ------------------------------------------------------------------------
    def plan(
        self,
        query: Any,
        documents: Sequence[Document],
        *,
        top_n: int | None = None,
        rank_fields: Sequence[str] | None = None,
        score_threshold: float | None = None,
    ) -> CallPlan:
        """Validate a call and plan its requests without sending anything.

        Raises :class:`RerankInputError` for bad arguments. Adapters call this before they
        emit their start events, so a bad call leaves no dangling event.
        """
        spec = validate_call(
            query=query,
            documents=documents,
            top_n=top_n,
            rank_fields=rank_fields,
            score_threshold=score_threshold,
        )
        if spec.rank_fields and not accepts_rank_fields(self.model, self.model_family):
            why = f"model_family={self.model_family!r}" if self.model_family else "its name"
            raise RerankInputError(
                f"`rank_fields` works only with Llama-Rank endpoints, and {self.model!r} is "
                f"an Mxbai model ({why}); pass the documents as strings instead (or set "
                "model_family='llama-rank' if it serves Llama-Rank)."
            )
        return CallPlan(spec, self._plan_options(spec))

    def _plan_options(self, spec: CallSpec) -> PlanOptions:
        return PlanOptions(
            model=self.model,
            max_batch_size=self.max_batch_size,
            dedupe=self.dedupe,
            use_cache=self.cache is not None,
            long_documents=self.long_documents,
            max_tokens_per_doc=self.max_tokens_per_doc,
            count_tokens=self.tokenizer or estimate_tokens,
            fast_upper_bound=0 if self.tokenizer else 3,
            extra_body=self._extra_body,
        )

    def _failed(self, plan: CallPlan, error: RerankError) -> RerankResults:
        if (
            self.on_error != "fallback"
            or isinstance(error, _NEVER_MASKED)
            or getattr(error, "status_code", None) == 402
        ):
            raise error
        logger.warning(
            "Rerank failed; returning %d candidates in retrieval order (on_error='fallback'): "
            "%s: %s",
            len(plan.spec.documents),
            type(error).__name__,
            error,
        )
        return plan.fallback(error)

    # -- calls ---------------------------------------------------------------------------
    def rerank(
        self,
        query: str,
        documents: Sequence[Document],
        *,
        top_n: int | None = None,
        rank_fields: Sequence[str] | None = None,
        score_threshold: float | None = None,
    ) -> RerankResults:
        """Rank ``documents`` (strings or mappings) against ``query``, best first.

        ``top_n=None`` keeps every document; ``score_threshold`` then drops results scoring
        below it. No request is sent for an empty ``documents``. Returns a list of
        :class:`RerankResult` with the call's ``usage`` and counters as attributes.
        """
        return self.execute(
            self.plan(
                query,
                documents,
                top_n=top_n,
                rank_fields=rank_fields,
                score_threshold=score_threshold,
            )
        )

    def execute(self, plan: CallPlan) -> RerankResults:
        """Send a call planned by :meth:`plan` and return its ranking."""
        keys: list[str] = []
        if self.cache is not None and plan.spec.documents:
            keys = plan.cache_keys()
            plan.use_cached(self.cache.mget(keys))
        try:
            requests = plan.requests()
            if len(requests) <= 1 or self.max_concurrency == 1:
                answers = [self._sdk.send(kwargs) for kwargs in requests]
            else:
                answers = self._send_concurrently(requests)
            for i, answer in enumerate(answers):
                plan.absorb(i, answer)
        except RerankError as exc:
            return self._failed(plan, exc)
        fresh = plan.fresh_scores(keys) if keys else []
        if fresh:
            self.cache.mset(fresh)  # type: ignore[union-attr]
        return plan.results()

    def score(self, query: str, documents: Sequence[Document]) -> list[float]:
        """One relevance score per document, in input order (identical documents share
        theirs): what cross-encoder interfaces need. It never falls back: with no scores
        to give, the error is raised whatever ``on_error`` says."""
        plan = self.plan(query, documents)
        results = self.execute(plan)
        if results.fallback:
            assert results.error is not None
            raise results.error
        return plan.position_scores()

    def _send_concurrently(self, requests: list[dict[str, Any]]) -> list[Any]:
        failed = threading.Event()

        def one(kwargs: dict[str, Any]) -> Any:
            if failed.is_set():  # dequeued after another batch failed: never sent
                return None
            try:
                return self._sdk.send(kwargs)
            except BaseException:
                failed.set()
                raise

        from concurrent.futures import ThreadPoolExecutor  # only when a call has batches

        workers = min(self.max_concurrency, len(requests))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="together-rerank")
        try:
            # map() re-raises the first error in order; a skipped None always comes after it
            return list(pool.map(one, requests))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    async def arerank(
        self,
        query: str,
        documents: Sequence[Document],
        *,
        top_n: int | None = None,
        rank_fields: Sequence[str] | None = None,
        score_threshold: float | None = None,
    ) -> RerankResults:
        """Async :meth:`rerank`: awaits the async SDK client (no worker thread)."""
        return await self.aexecute(
            self.plan(
                query,
                documents,
                top_n=top_n,
                rank_fields=rank_fields,
                score_threshold=score_threshold,
            )
        )

    async def aexecute(self, plan: CallPlan) -> RerankResults:
        """Async :meth:`execute`: batches run concurrently on the event loop."""
        keys: list[str] = []
        if self.cache is not None and plan.spec.documents:
            keys = plan.cache_keys()
            plan.use_cached(await amget(self.cache, keys))
        try:
            requests = plan.requests()
            if len(requests) <= 1:
                answers = [await self._sdk.asend(kwargs) for kwargs in requests]
            else:
                answers = await self._asend_concurrently(requests)
            for i, answer in enumerate(answers):
                plan.absorb(i, answer)
        except RerankError as exc:
            return self._failed(plan, exc)
        fresh = plan.fresh_scores(keys) if keys else []
        if fresh:
            await amset(self.cache, fresh)
        return plan.results()

    async def _asend_concurrently(self, requests: list[dict[str, Any]]) -> list[Any]:
        gate = asyncio.Semaphore(self.max_concurrency)
        failed = False

        async def one(kwargs: dict[str, Any]) -> Any:
            nonlocal failed
            async with gate:
                if failed:  # waited for a slot while another batch failed: never sent
                    return None
                try:
                    return await self._sdk.asend(kwargs)
                except BaseException:
                    failed = True
                    raise

        tasks = [asyncio.ensure_future(one(kwargs)) for kwargs in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:  # on the first error (or cancellation), stop the others
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
