"""The shared rerank client: one validated, planned, batched, cached call.

The framework adapters only translate their objects to :meth:`RerankClient.rerank` /
:meth:`RerankClient.arerank` calls and back; everything else happens here and in the pure
modules it drives (``_inputs``, ``_plan``, ``_results``, ``_longdocs``, ``_cache``).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ._batches import asend_batches, send_batches
from ._breaker import FAILURE, NEUTRAL, SUCCESS, CircuitBreaker
from ._cache import (
    GuardedStore,
    endpoint_identity,
    resolve_cache,
    tokenizer_identity,
)
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
    validate_deadline,
)
from ._deadline import Deadline
from ._errors import (
    CircuitOpenError,
    RerankConfigError,
    RerankError,
    RerankInputError,
    needs_fix,
    scrub_error,
    unknown_argument,
)
from ._extras import check_extra_body, read_only
from ._inputs import CallSpec, Document, validate_call
from ._longdocs import ESTIMATE_MAX_PER_CHAR, LONG_DOCUMENT_POLICIES, estimate_tokens
from ._plan import CallPlan, PlanOptions
from ._resilience import (
    afailover,
    check_one_breaker_per_endpoint,
    failover,
    failover_clients,
    fair_share,
    replan,
)
from ._results import Endpoint, RerankResults
from ._sdk import SDKClients

if TYPE_CHECKING:
    import httpx

__all__ = ["RerankClient"]


#: options of each ``rerank()`` call, not of the client
_PER_CALL = ("top_n", "rank_fields", "score_threshold")


@functools.cache
def _init_parameters() -> frozenset[str]:
    """The keywords ``RerankClient(...)`` takes (read once from its signature)."""
    params = inspect.signature(RerankClient.__init__).parameters.values()
    return frozenset(p.name for p in params if p.name != "self")


logger = logging.getLogger("together_rerank_plugins")

ON_ERROR = ("raise", "fallback")


class RerankClient:
    """Rerank documents against a query with Together's ``/v1/rerank`` (or a compatible server).

    Configuration: arguments win over environment variables (``TOGETHER_API_KEY``,
    ``TOGETHER_BASE_URL``, ``TOGETHER_RERANK_MODEL``), which win over defaults (model
    ``Salesforce/Llama-Rank-V1``, base URL ``https://api.together.ai``). ``base_url`` may end
    in ``/v1`` or not. Retries (``max_retries``, default 2) are the SDK's: 408, 409, 429, 5xx,
    timeouts and connection errors, with backoff that honours ``Retry-After``. ``timeout`` is
    seconds per attempt: an attempt ends within it whatever the server does. ``deadline``
    (seconds, default None) bounds one whole call: every batch, attempt, backoff and
    ``Retry-After`` wait; when it runs out the call raises :class:`RerankTimeoutError` (a
    retry whose wait does not fit ends the call with its answer's error instead: a 429 is a
    :class:`RateLimitError` with ``retry_after``), or, with ``on_error="fallback"``,
    returns the fallback at once.

    Scale and cost:

    - ``max_batch_size`` (default: the model's documented cap, 1,024 for Llama-Rank) and
      ``max_concurrency`` (requests in flight for one call, default 8): more candidates than
      one request takes are sent in concurrent batches and merged into one ranking (see
      ``_plan`` for why merging pointwise scores is sound).
    - Identical candidates are scored once. ``dedupe=True`` (default) returns only the first
      occurrence; ``dedupe=False`` returns every occurrence with the shared score.
    - ``cache``: ``True`` for an in-memory LRU of scores, or any store with
      ``mget``/``mset`` (:class:`RedisScoreStore` shares one across replicas); only
      documents that miss are sent. Keys hold everything that changes a score (endpoint,
      model, query, document, rank fields, long-document settings, tokenizer identity); a
      store's non-finite values, wrong-length answers and exceptions are misses (one
      WARNING until it works again), never a failed call.
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

    Resilience (see docs/production.md): ``circuit_breaker`` (a :class:`CircuitBreaker`,
    shareable) makes calls fail at once, without sending, while the endpoint keeps failing;
    ``failover`` (other ``RerankClient`` objects) are tried in order when this one fails
    with an error that fallback covers; each scores the whole call with its own
    configuration, and ``results.served_by`` says which endpoint answered.

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

    def __new__(cls, *args: Any, **kwargs: Any) -> RerankClient:
        """Refuse an unknown keyword naming the closest known one (``top_k`` -> ``top_n``),
        as a ``TypeError`` like Python's own, instead of Python's bare "unexpected keyword".
        (``__init__`` keeps the signature type checkers and IDEs read.)"""
        known = _init_parameters()
        for name in kwargs:
            if name not in known:
                raise TypeError(unknown_argument("RerankClient", name, known, _PER_CALL))
        return super().__new__(cls)

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
        deadline: float | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        failover: Sequence[RerankClient] = (),
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
        self._extra_body: dict[str, Any] | None = read_only(
            check_extra_body(extra_body), "extra_body"
        )
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
        if not isinstance(dedupe, bool):
            raise RerankConfigError(
                f"`dedupe` must be True or False, not {type(dedupe).__name__} ({dedupe!r})."
            )
        self.dedupe = dedupe
        self.cache = resolve_cache(cache)
        self.long_documents = long_documents
        self.tokenizer = tokenizer
        self.on_error = on_error
        self.deadline = validate_deadline(deadline)
        if circuit_breaker is not None and not isinstance(circuit_breaker, CircuitBreaker):
            raise RerankConfigError(
                "`circuit_breaker` must be a together_rerank_plugins.CircuitBreaker; got "
                f"{type(circuit_breaker).__name__}."
            )
        self.circuit_breaker = circuit_breaker
        self.failover = failover_clients(failover)
        check_one_breaker_per_endpoint(circuit_breaker, self.failover)
        self._sdk = SDKClients(settings, transport)
        #: False for :meth:`with_deadline` clones: they share the pool and never close it
        self._owns_connections = True
        #: the scorer a cache key names (route digest included; never credentials)
        self._endpoint_id = endpoint_identity(settings.base_url, settings.default_headers)
        #: who answers this client's calls, for ``RerankResults.served_by`` (no credentials)
        self.endpoint = Endpoint.of(settings.model, settings.base_url)
        self._tokenizer_id = tokenizer_identity(tokenizer)
        if self._tokenizer_id is None and long_documents != "error":
            if cache is True:  # a private store: this client's one tokenizer is identity enough
                self._tokenizer_id = "private"
            elif self.cache is not None:
                logger.warning(
                    "The score cache is off: `tokenizer` %r has no `cache_id`, so scores of "
                    "long documents cut by it cannot be told apart from other tokenizers' in "
                    "a shared store. Set `tokenizer.cache_id = '<name>'` to cache.",
                    getattr(tokenizer, "__name__", type(tokenizer).__name__),
                )
                self.cache = None
        self._store = GuardedStore(self.cache) if self.cache is not None else None
        if self._model_family is None and (max_batch_size is None or max_tokens_per_doc is None):
            note_assumed_family(settings.model, limits)
        self._sealed = True  # from here on, settings are read-only (see __setattr__)

    def __setattr__(self, name: str, value: Any) -> None:
        """Settings are fixed at construction: the client is shared across threads, and
        several settings shape what it derived from them (the store in use, the cache keys'
        tokenizer id, breaker checks), so a changed one would be shown but not applied."""
        if not name.startswith("_") and self.__dict__.get("_sealed"):
            raise AttributeError(
                f"RerankClient settings are fixed at construction, `{name}` included: build "
                f"a new RerankClient with {name}=..., or use with_deadline() for another "
                "deadline (cheap: it shares connections and cache). The adapters' settings "
                "can be assigned: they rebuild their client."
            )
        object.__setattr__(self, name, value)

    # -- configuration -------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self._sdk.settings.model

    @property
    def base_url(self) -> str:
        """The server root, with any credentials written into it redacted (``***@``)."""
        return self._sdk.settings.shown_base_url

    @property
    def model_family(self) -> str | None:
        """``"llama-rank"``, ``"mxbai"``, or ``None`` when neither the configuration nor
        the model's name says (conservative limits are then used)."""
        return self._model_family

    @property
    def extra_body(self) -> dict[str, Any] | None:
        """The fields merged into every request body (``None``: none), read-only."""
        return self._extra_body

    @property
    def timeout(self) -> float | None:
        return self._sdk.settings.timeout

    @property
    def max_retries(self) -> int:
        return self._sdk.settings.max_retries

    def __repr__(self) -> str:
        s = self._sdk.settings
        return (
            f"RerankClient(model={s.model!r}, base_url={self.base_url!r}, "
            f"timeout={s.timeout!r}, max_retries={s.max_retries!r}, "
            f"model_family={self.model_family!r}, max_batch_size={self.max_batch_size}, "
            f"max_concurrency={self.max_concurrency}, on_error={self.on_error!r}, "
            f"deadline={self.deadline!r})"
        )

    def warm_up(self) -> RerankClient:
        """Do now, for this client and its ``failover`` endpoints, everything the first
        call would do once per process: load the ``together`` SDK and the modules its first
        request imports, build the sync client, run one request through the sending path
        on an in-process stand-in; nothing is sent. Returns ``self``.

        Otherwise the first call in a process does it (about half a second, mostly the SDK's
        imports) inside that call's ``deadline``. After it, the first call (sync or async)
        costs what later calls cost, except opening the connection (and TLS session) to
        the endpoint, which only a real request can do. Call it at a service's start-up.
        """
        for client in (self, *self.failover):
            client._sdk.warm_up()
        return self

    def with_deadline(self, deadline: float | None) -> RerankClient:
        """A client with another ``deadline`` that shares this one's configuration,
        connections, cache, breaker and failover clients (cheap: use one per call).

        The connections stay this client's: closing the clone (``close()``, ``aclose()``,
        a ``with`` block) closes nothing, so calls on this client from other threads or
        tasks go on; close this client to close them."""
        return self._clone(deadline, owns_connections=False)

    def _clone(self, deadline: float | None, *, owns_connections: bool) -> RerankClient:
        clone = object.__new__(RerankClient)
        clone.__dict__.update(self.__dict__)
        clone.__dict__["deadline"] = validate_deadline(deadline)  # settings are read-only
        clone._owns_connections = owns_connections
        return clone

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
        or when their event loop shuts down). On a :meth:`with_deadline` clone (and the
        adapters' ``with_options`` copies' clients), which shares another client's
        connections, it does nothing: they stay open for that client."""
        if self._owns_connections:
            self._sdk.close()

    async def aclose(self) -> None:
        """Close the SDK client of the running event loop, and the sync one (nothing on a
        clone that shares another client's connections: see :meth:`close`)."""
        if self._owns_connections:
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
            fast_upper_bound=0 if self.tokenizer else ESTIMATE_MAX_PER_CHAR,
            endpoint=self._endpoint_id,
            tokenizer_id=self._tokenizer_id or "-",
            extra_body=self._extra_body,
        )

    def _own(self, plan: CallPlan) -> CallPlan:
        """``plan`` as this client would have planned it: a plan made by another client
        (another model, endpoint, limits or cache) is planned again for this one, so what
        is sent, what is cached and what ``served_by`` names always agree."""
        mine = replace(self._plan_options(plan.spec), dedupe=plan.options.dedupe)
        return plan if plan.options == mine else replan(plan, self)

    def _failed(self, plan: CallPlan, error: RerankError) -> RerankResults:
        scrub_error(error, self._sdk.secrets)  # logged or raised: never the key
        if self.on_error != "fallback" or needs_fix(error):
            raise error
        # an open breaker was announced once (WARNING) when it opened: not again per call
        logger.log(
            logging.INFO if isinstance(error, CircuitOpenError) else logging.WARNING,
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

    def execute(self, plan: CallPlan, deadline: Deadline | None = None) -> RerankResults:
        """Send a call planned by :meth:`plan` and return its ranking (from this endpoint,
        or a failover endpoint, or the fallback that ``on_error`` allows).

        ``deadline`` (default: one of this client's ``deadline`` seconds, from now) bounds
        every send of the call, failover endpoints included; pass one along to share a
        budget with other work.
        """
        deadline = deadline or Deadline.start(self.deadline)
        plan = self._own(plan)
        try:
            return self._attempt(plan, deadline, whole_deadline=fair_share(deadline))
        except RerankError as exc:
            if self.failover and not needs_fix(exc):
                return failover(self, plan, exc, deadline)
            return self._failed(plan, exc)

    def _attempt(
        self, plan: CallPlan, deadline: Deadline | None, *, whole_deadline: bool = True
    ) -> RerankResults:
        """Score ``plan`` on this endpoint alone (cache, breaker, requests), or raise.

        ``whole_deadline``: no other endpoint of the call sent anything before this one, so
        it had the call's whole ``deadline``, or it still had at least half of it (see
        :meth:`_record` and ``_resilience._fair_share``)."""
        keys: list[str] = []
        if self._store is not None and plan.spec.documents:
            keys = plan.cache_keys()
            plan.use_cached(self._store.mget(keys))
        requests = plan.requests()
        if requests:
            if deadline is not None and deadline.expired():
                # nothing sent (a failover reached with no time left): not the breaker's
                # business, and no half-open probe slot taken
                raise self._sdk.deadline_error(deadline)
            probe = self._admit()
            try:
                if len(requests) <= 1 or self.max_concurrency == 1:
                    answers = [self._sdk.send(kwargs, deadline) for kwargs in requests]
                else:
                    answers = send_batches(
                        lambda kw: self._sdk.send(kw, deadline), requests, self.max_concurrency
                    )
                for i, answer in enumerate(answers):
                    plan.absorb(i, answer)
            except BaseException as exc:
                self._record(probe, exc, whole_deadline)
                raise
            self._record(probe, None, whole_deadline)
        fresh = plan.fresh_scores(keys) if keys else []
        if fresh and self._store is not None:
            self._store.mset(fresh)
        return self._served(plan.results())

    # -- circuit breaker -----------------------------------------------------------------
    def _admit(self) -> bool:
        """Raise CircuitOpenError while the breaker is open; True for a half-open probe."""
        breaker = self.circuit_breaker
        return False if breaker is None else breaker.admit(str(self.endpoint))

    def _record(self, probe: bool, error: BaseException | None, whole_deadline: bool) -> None:
        """What the call says about this endpoint, for its breaker.

        A failure counts when the endpoint failed on its own: an error status, a connection
        error, a malformed answer, an attempt that ran out of its own ``timeout``. The
        call's ``deadline`` running out while the endpoint was tried counts only when the
        endpoint had that whole deadline (no other endpoint of the call sent anything
        first) or at least half of it: a failover endpoint left less than half by the
        endpoints before it is not charged for being cut short before its own
        ``timeout``."""
        breaker = self.circuit_breaker
        if breaker is None:
            return
        if error is None:
            outcome = SUCCESS
        elif isinstance(error, RerankError) and not needs_fix(error):
            cut_short = getattr(error, "_cut_short", False)
            outcome = NEUTRAL if cut_short and not whole_deadline else FAILURE
        else:  # an error to fix, a cancellation, a bug: says nothing about the endpoint
            # (a whole-call deadline that expires mid-request must surface here as a
            # RerankTimeoutError, not only as a cancellation, to count as a failure)
            outcome = NEUTRAL
        breaker.record(probe, outcome, str(self.endpoint))

    def _served(self, results: RerankResults) -> RerankResults:
        results.served_by = self.endpoint
        return results

    def score(self, query: str, documents: Sequence[Document]) -> list[float]:
        """One relevance score per document, in input order (identical documents share
        theirs): what cross-encoder interfaces need. It never falls back: with no scores
        to give, the error is raised whatever ``on_error`` says."""
        plan = self.plan(query, documents)
        results = self.execute(plan)
        if results.fallback:
            assert results.error is not None
            raise results.error
        return plan.position_scores(results)

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

    async def aexecute(self, plan: CallPlan, deadline: Deadline | None = None) -> RerankResults:
        """Async :meth:`execute`: batches run concurrently on the event loop."""
        deadline = deadline or Deadline.start(self.deadline)
        plan = self._own(plan)
        try:
            return await self._aattempt(plan, deadline, whole_deadline=fair_share(deadline))
        except RerankError as exc:
            if self.failover and not needs_fix(exc):
                return await afailover(self, plan, exc, deadline)
            return self._failed(plan, exc)

    async def _aattempt(
        self, plan: CallPlan, deadline: Deadline | None, *, whole_deadline: bool = True
    ) -> RerankResults:
        """Async :meth:`_attempt`."""
        keys: list[str] = []
        if self._store is not None and plan.spec.documents:
            keys = plan.cache_keys()
            plan.use_cached(await self._store.amget(keys))
        requests = plan.requests()
        if requests:
            if deadline is not None and deadline.expired():  # nothing sent: see _attempt
                raise self._sdk.deadline_error(deadline)
            probe = self._admit()
            try:
                if len(requests) <= 1:
                    answers = [await self._sdk.asend(kwargs, deadline) for kwargs in requests]
                else:
                    answers = await asend_batches(
                        lambda kw: self._sdk.asend(kw, deadline), requests, self.max_concurrency
                    )
                for i, answer in enumerate(answers):
                    plan.absorb(i, answer)
            except BaseException as exc:
                self._record(probe, exc, whole_deadline)
                raise
            self._record(probe, None, whole_deadline)
        fresh = plan.fresh_scores(keys) if keys else []
        if fresh and self._store is not None:
            await self._store.amset(fresh)
        return self._served(plan.results())
