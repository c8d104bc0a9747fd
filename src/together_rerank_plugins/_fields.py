"""The configuration fields both adapters share, as a pydantic mixin.

Both framework base classes are pydantic v2 models, so one mixin gives the LlamaIndex
postprocessor and the LangChain compressor the same fields with the same meaning, defaults and
validation, and builds their :class:`RerankClient`. pydantic is not a framework: it is already
a dependency of the ``together`` SDK.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from typing_extensions import Self

from ._client import RerankClient
from ._config import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    validate_score_threshold,
    validate_top_n,
)
from ._errors import RerankConfigError, RerankInputError
from ._inputs import check_rank_fields

__all__ = ["UNSET", "RerankFields"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class RerankFields(BaseModel):
    """Fields shared by every adapter. The API key field is declared by each adapter, under
    the name its framework's users expect."""

    model_config = ConfigDict(defer_build=True)  # never instantiated itself

    model: str | None = Field(
        default=None,
        description="Rerank model, or your dedicated endpoint's model name. "
        "Default: env TOGETHER_RERANK_MODEL, else 'Salesforce/Llama-Rank-V1'.",
    )
    top_n: int | None = Field(
        default=5, description="How many candidates to keep (None keeps all, reordered)."
    )
    base_url: str | None = Field(
        default=None,
        description="Server root, with or without '/v1'. Default: env TOGETHER_BASE_URL, else "
        "'https://api.together.ai'.",
    )
    timeout: float | None = Field(
        default=DEFAULT_TIMEOUT, description="Seconds per attempt (None: no limit)."
    )
    max_retries: int = Field(
        default=DEFAULT_MAX_RETRIES,
        description="Retries of 408/409/429/5xx, timeouts and connection errors (the SDK's).",
    )
    score_threshold: float | None = Field(
        default=None, description="Drop results scoring below this (applied after top_n)."
    )
    rank_fields: list[str] | None = Field(
        default=None,
        description="Rank by these fields (metadata plus the text under 'text'); Llama-Rank "
        "endpoints only. None: send the text alone.",
    )
    max_batch_size: int | None = Field(
        default=None, description="Documents per request (default: the model's cap, 1,024)."
    )
    max_concurrency: int = Field(
        default=DEFAULT_MAX_CONCURRENCY, description="Requests in flight for one call."
    )
    dedupe: bool = Field(
        default=True,
        description="Return only the first of identical candidates (all are scored once).",
    )
    long_documents: str = Field(
        default="chunk", description="'chunk' (best window), 'truncate' or 'error'."
    )
    max_tokens_per_doc: int | None = Field(
        default=None,
        description="Token budget per document, query included (default: the model's).",
    )
    on_error: str = Field(
        default="raise",
        description="'raise', or 'fallback' to keep the retrieval order when reranking fails "
        "(logged, and flagged in metadata['rerank_fallback']).",
    )
    cache: Any = Field(
        default=None,
        exclude=True,
        repr=False,
        description="True (in-memory LRU), a score store, or this framework's key-value store.",
    )
    tokenizer: Any = Field(
        default=None,
        exclude=True,
        repr=False,
        description="A function str -> token count, to replace the built-in estimate.",
    )
    transport: Any = Field(
        default=None,
        exclude=True,
        repr=False,
        description="An httpx transport used instead of the network (tests, proxies).",
    )

    _client: RerankClient = PrivateAttr()

    def __init__(self, /, **data: Any) -> None:
        """Validate the fields, then build the client: a bad or unknown argument raises
        :class:`RerankConfigError` (a ``ValueError``) here, describing each of pydantic's
        errors (without their input values, which may include the key)."""
        problem = None
        try:
            super().__init__(**data)
        except ValidationError as exc:
            problem = _describe(exc, type(self))
        if problem is not None:
            # raised outside the `except`: neither chained nor as __context__, because
            # pydantic's error quotes the input values, the key among them
            raise RerankConfigError(problem)
        self._init_client(self._secret_key())

    #: the adapter's API key field (each framework names it its own way)
    _KEY_FIELD: ClassVar[str] = "api_key"
    #: fields never pickled: the key, and objects that hold connections or code
    _NOT_PICKLED: ClassVar[frozenset[str]] = frozenset({"transport", "cache", "tokenizer"})

    def _secret_key(self) -> Any:
        return getattr(self, self._KEY_FIELD)

    def __getstate__(self) -> dict[Any, Any]:
        """Pickle the configuration only: never the API key (it comes back from
        TOGETHER_API_KEY on load, as with ``to_dict``) nor the client and its connections."""
        # BaseModel's, not a framework's: LlamaIndex's would try (and log) each attribute
        state = dict(BaseModel.__getstate__(self))
        drop = self._NOT_PICKLED | {self._KEY_FIELD}
        state["__dict__"] = {k: v for k, v in state["__dict__"].items() if k not in drop}
        state["__pydantic_private__"] = None
        return state

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        """Deep-copy the configuration; share the client, transport, cache and tokenizer
        (they hold connections, locks or stores that a copy must not duplicate)."""
        clone = self.model_copy()  # shallow: shares the private client
        for name, value in self.__dict__.items():
            if name not in self._NOT_PICKLED:
                clone.__dict__[name] = copy.deepcopy(value, memo)
        return clone

    def __setstate__(self, state: dict[Any, Any]) -> None:
        """Rebuild through ``__init__``, so the client is recreated and validated."""
        type(self).__init__(self, **state["__dict__"])

    def _init_client(self, api_key: Any) -> None:
        self._check_call_options(self.top_n, self.score_threshold, self.rank_fields)
        self._client = RerankClient(
            model=self.model,
            api_key=api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
            max_batch_size=self.max_batch_size,
            max_concurrency=self.max_concurrency,
            dedupe=self.dedupe,
            cache=self.cache,
            long_documents=self.long_documents,
            max_tokens_per_doc=self.max_tokens_per_doc,
            tokenizer=self.tokenizer,
            on_error=self.on_error,
            transport=self.transport,
        )
        # Record what was resolved from the environment, so to_dict()/model_dump() describe
        # the endpoint actually used.
        self.__dict__["model"] = self._client.model
        self.__dict__["base_url"] = self._client.base_url

    @staticmethod
    def _check_call_options(top_n: Any, score_threshold: Any, rank_fields: Any) -> None:
        validate_top_n(top_n)
        validate_score_threshold(score_threshold)
        try:
            check_rank_fields(rank_fields)
        except RerankInputError as exc:
            raise RerankConfigError(str(exc)) from None

    @property
    def client(self) -> RerankClient:
        """The shared core client this adapter calls."""
        return self._client

    def _call_options(self, top_n: Any = UNSET, rank_fields: Any = UNSET) -> dict[str, Any]:
        return {
            "top_n": self.top_n if top_n is UNSET else top_n,
            "rank_fields": self.rank_fields if rank_fields is UNSET else rank_fields,
            "score_threshold": self.score_threshold,
        }

    #: options that only change how a call's results are cut: a copy shares the client
    _CALL_OPTIONS: ClassVar[frozenset[str]] = frozenset({"top_n", "score_threshold", "rank_fields"})

    def with_options(self, **overrides: Any) -> Self:
        """A copy with some options changed, leaving this (shared) instance untouched.

        ``top_n``, ``score_threshold`` and ``rank_fields`` copies share this instance's
        client and connection pool (cheap: use one per call); other options build a new
        client. Unknown names raise :class:`RerankConfigError`.
        """
        unknown = set(overrides) - set(type(self).model_fields)
        if unknown:
            raise RerankConfigError(
                f"Unknown option(s) {sorted(unknown)} for {type(self).__name__}.with_options()."
            )
        if set(overrides) <= self._CALL_OPTIONS:
            self._check_call_options(
                overrides.get("top_n", self.top_n),
                overrides.get("score_threshold", self.score_threshold),
                overrides.get("rank_fields", self.rank_fields),
            )
            return self.model_copy(update=overrides)  # shares the private client
        data = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**(data | overrides))


def _describe(exc: ValidationError, cls: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "extra_forbidden":
            known = ", ".join(
                sorted(f.alias or name for name, f in cls.model_fields.items() if not f.exclude)
                + sorted(name for name, f in cls.model_fields.items() if f.exclude)
            )
            lines.append(f"unknown argument {where!r} (is it misspelled?); known: {known}")
        else:
            lines.append(f"{where}: {err['msg']}")
    return f"Invalid {cls.__name__} configuration: " + "; ".join(lines)
