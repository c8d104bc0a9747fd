"""The configuration fields both adapters share, as a pydantic mixin.

Both framework base classes are pydantic v2 models, so one mixin gives the LlamaIndex
postprocessor and the LangChain compressor the same fields with the same meaning, defaults and
validation, and builds their :class:`RerankClient`. pydantic is not a framework: it is already
a dependency of the ``together`` SDK.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator, Mapping
from enum import Enum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from typing_extensions import Self

from ._client import RerankClient
from ._config import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ENV_API_KEY,
    ENV_MODEL_FAMILY,
    validate_score_threshold,
    validate_top_n,
)
from ._errors import RerankConfigError, RerankInputError, unknown_argument
from ._extras import read_only
from ._inputs import check_rank_fields

__all__ = ["UNSET", "RerankFields"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


#: set in an adapter's pickled state (a boolean, never the key) when the key was an argument
_KEY_WAS_GIVEN = "together_rerank_key_was_given"
#: adapter classes whose "key taken from the environment on load" WARNING was logged
_WARNED_KEY_FROM_ENV: set[str] = set()
logger = logging.getLogger("together_rerank_plugins")


class RerankFields(BaseModel):
    """Fields shared by every adapter. The API key field is declared by each adapter, under
    the name its framework's users expect."""

    model_config = ConfigDict(defer_build=True)  # never instantiated itself

    model: str | None = Field(
        default=None,
        description="Rerank model, or your dedicated endpoint's model or endpoint string. "
        "Default: env TOGETHER_RERANK_MODEL, else 'Salesforce/Llama-Rank-V1'.",
    )
    model_family: str | None = Field(
        default=None,
        description="'llama-rank' or 'mxbai': sets the documented limits and whether "
        "rank_fields is accepted. Default: env TOGETHER_RERANK_MODEL_FAMILY, else read from "
        "the model name (an endpoint string reveals none: conservative limits).",
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
    deadline: float | None = Field(
        default=None,
        description="Seconds for one whole call: every batch, attempt and retry wait "
        "(None: no deadline). When it runs out: RerankTimeoutError, or the fallback.",
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
    circuit_breaker: Any = Field(
        default=None,
        exclude=True,
        repr=False,
        description="A together_rerank_plugins.CircuitBreaker (shared by every user of it): "
        "fail at once, without sending, while the endpoint keeps failing.",
    )
    failover: Any = Field(
        default=(),
        exclude=True,
        repr=False,
        description="RerankClient objects tried in order when this endpoint fails (the "
        "answering endpoint is in metadata['rerank_served_by']).",
    )
    extra_body: dict[str, Any] | None = Field(
        default=None,
        description="Fields merged into every request body, for compatible servers that take "
        "more (e.g. an instruction); Together's own fields are refused.",
    )
    default_headers: dict[str, str] | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="Headers sent with every request (e.g. a gateway's). Like the key: never "
        "in repr, model_dump, logs or pickles.",
    )

    _client: RerankClient = PrivateAttr()

    @field_validator(
        "top_n",
        "timeout",
        "max_retries",
        "deadline",
        "score_threshold",
        "max_batch_size",
        "max_concurrency",
        "max_tokens_per_doc",
        mode="before",
    )
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        """pydantic would read ``True`` as 1 (``top_n=True`` keeping one result, a
        ``score_threshold=True`` of 1.0 dropping all): a number is asked for, as the core,
        ``with_options`` and assignment already insist."""
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        return value

    def __init__(self, /, **data: Any) -> None:
        """Validate the fields, then build the client: a bad or unknown argument raises
        :class:`RerankConfigError` (a ``ValueError``) here, describing each of pydantic's
        errors (without their input values, which may include the key)."""
        problem = _given_twice(type(self), data)
        try:
            if problem is None:
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
    #: fields never pickled: the key, and objects that hold connections, locks, code or
    #: (failover clients) other keys; copies share them
    _NOT_PICKLED: ClassVar[frozenset[str]] = frozenset(
        {"transport", "cache", "tokenizer", "circuit_breaker", "failover", "default_headers"}
    )

    def _secret_key(self) -> Any:
        return getattr(self, self._KEY_FIELD)

    #: the adapter's own settings to show in ``repr`` when they differ from their defaults
    #: (beside the shared fields); a framework's fields (callbacks, ...) are not settings
    _REPR_EXTRA: ClassVar[tuple[str, ...]] = ()

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """What ``repr``/``str`` show, the same for both adapters: the resolved model (and
        family, when known) and host, then each setting that differs from its default,
        then whether a key is set and where it came from (never any part of it). Objects
        kept out of ``model_dump`` (transport, cache, breaker, failover, headers) are not
        shown."""
        private = getattr(self, "__pydantic_private__", None) or {}
        client: RerankClient | None = private.get("_client")
        if client is None:  # not built (a failed construction): nothing resolved to show
            return
        yield "model", client.model
        if client.model_family is not None:
            yield "model_family", client.model_family
        yield "base_url", client.base_url
        fields = type(self).model_fields
        shown = (*RerankFields.model_fields, *self._REPR_EXTRA)
        for name in shown:
            info = fields[name]
            if name in ("model", "model_family", "base_url") or not info.repr or info.exclude:
                continue
            value = getattr(self, name)
            if value == info.get_default(call_default_factory=True):
                continue
            yield name, value.value if isinstance(value, Enum) else value
        given = self._secret_key() is not None
        yield "api_key", _Shown("<set>" if given else f"<set, from {ENV_API_KEY}>")

    def __getstate__(self) -> dict[Any, Any]:
        """Pickle the configuration only: never the API key (it comes back from
        TOGETHER_API_KEY on load, as with ``to_dict``) nor the client and its connections."""
        # BaseModel's, not a framework's: LlamaIndex's would try (and log) each attribute
        state = dict(BaseModel.__getstate__(self))
        drop = self._NOT_PICKLED | {self._KEY_FIELD}
        state["__dict__"] = {k: v for k, v in state["__dict__"].items() if k not in drop}
        state["__pydantic_private__"] = None
        # whether the key was an argument (not its value): loading then says which key it
        # uses instead, rather than switching keys silently
        state[_KEY_WAS_GIVEN] = self._secret_key() is not None
        return state

    @classmethod
    def _field_of(cls, name: str) -> str:
        """The field ``name`` sets: the key's other name (LangChain's ``api_key`` for
        ``together_api_key``) is taken wherever the constructor takes it."""
        alias = cls.model_fields[cls._KEY_FIELD].alias
        return cls._KEY_FIELD if alias is not None and name == alias else name

    def __copy__(self) -> Self:
        """A shallow copy whose client shares this one's connections without owning them."""
        return self._plain_copy()

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        """Deep-copy the configuration; share the client, transport, cache and tokenizer
        (they hold connections, locks or stores that a copy must not duplicate)."""
        clone = self._plain_copy()  # shallow: shares the private client
        for name, value in self.__dict__.items():
            if name not in self._NOT_PICKLED:
                clone.__dict__[name] = copy.deepcopy(value, memo)
        return clone

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's copy, with the settings in ``update`` applied as :meth:`with_options`
        applies them: checked, through a new client for those the client is built from (a
        copy of ``top_n``, ``deadline``, ... shares the pool). pydantic's own copy would
        only *show* them: it keeps the original's client, which calls with the old model,
        key and deadline. Other fields (a framework's own) are copied as pydantic does."""
        if not update:
            return self._plain_copy(deep=deep)
        named = {self._field_of(k): v for k, v in update.items()}
        ours = {
            k: v for k, v in named.items() if k in RerankFields.model_fields or k == self._KEY_FIELD
        }
        rest = {k: v for k, v in named.items() if k not in ours}
        base = self._plain_copy(update=rest, deep=deep) if rest or deep else self
        return base.with_options(**ours) if ours else base

    def _plain_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's ``model_copy``: fields copied as they are, and a client that shares
        this one's connections without owning them (closing the copy's client, as ``with
        copy.client:`` does, must not cut this instance's calls in flight)."""
        # what pydantic's model_copy does, without calling our __copy__ (which calls this)
        clone = copy.deepcopy(self) if deep else super().__copy__()
        if update:
            clone.__dict__.update(update)
            clone.__pydantic_fields_set__.update(update)
        private = getattr(self, "__pydantic_private__", None)
        if private and "_client" in private:
            clone._client = self._client.with_deadline(self._client.deadline)
        return clone

    def __setstate__(self, state: dict[Any, Any]) -> None:
        """Rebuild through ``__init__``, so the client is recreated and validated. The key
        is never pickled: one that was passed as an argument is taken from this process's
        TOGETHER_API_KEY, said at WARNING (once per process), or refused naming the fix."""
        given = bool(state.get(_KEY_WAS_GIVEN))
        name = type(self).__name__
        if given and not os.environ.get(ENV_API_KEY, "").strip():
            raise RerankConfigError(
                f"This {name} was pickled with an `api_key` argument, and keys are never "
                f"pickled: set {ENV_API_KEY} in the process that loads it (a worker's "
                "environment or initializer), or build the adapter there."
            )
        type(self).__init__(self, **state["__dict__"])
        if given and name not in _WARNED_KEY_FROM_ENV:
            _WARNED_KEY_FROM_ENV.add(name)
            logger.warning(
                "A %s pickled with an `api_key` argument was loaded: keys are never pickled, "
                "so it uses this process's %s (logged once per process); if that is another "
                "key, pass api_key again after loading.",
                name,
                ENV_API_KEY,
            )

    def __setattr__(self, name: str, value: Any) -> None:
        """A setting assigned after construction is the one used, as :meth:`with_options`
        would apply it: call options (``top_n``, ``deadline``, ...) from the next call on,
        the others through a new client. A bad value raises and changes nothing. Any other
        attribute (a framework's own field, such as ``callback_manager``) is set as usual."""
        name = self._field_of(name)  # LangChain's key is also taken as `api_key`
        private = getattr(self, "__pydantic_private__", None)
        if (
            private
            and "_client" in private
            and (name in RerankFields.model_fields or name == self._KEY_FIELD)
        ):
            clone = self.with_options(**{name: value})
            self.__dict__.update(clone.__dict__)
            self.__pydantic_fields_set__.add(name)
            if name == "deadline":
                # this instance's own client with the new deadline: it keeps owning its
                # connections (a with_options copy's client does not)
                mine = private["_client"]
                private["_client"] = mine._clone(
                    clone._client.deadline, owns_connections=mine._owns_connections
                )
            elif name not in self._CALL_OPTIONS:
                private["_client"] = clone._client
            return
        super().__setattr__(name, value)

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
            deadline=self.deadline,
            circuit_breaker=self.circuit_breaker,
            failover=self.failover,
            model_family=self.model_family,
            extra_body=self.extra_body,
            default_headers=self.default_headers,
        )
        # Record what was resolved from the environment, so to_dict()/model_dump() describe
        # the endpoint actually used (credentials in base_url redacted, like the key).
        self.__dict__["model"] = self._client.model
        self.__dict__["base_url"] = self._client.base_url
        # Mappings and lists are what the client sends, read-only: changed in place, they
        # would show a value that is not sent (assigning a new one is applied, see __setattr__)
        self.__dict__["extra_body"] = self._client.extra_body
        headers = self._client._sdk.settings.default_headers
        self.__dict__["default_headers"] = read_only(headers, "default_headers")
        self.__dict__["rank_fields"] = read_only(self.rank_fields, "rank_fields")
        self.__dict__["failover"] = read_only(self._client.failover, "failover")
        if self.model_family is not None or os.environ.get(ENV_MODEL_FAMILY):
            self.__dict__["model_family"] = self._client.model_family  # as configured

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

    #: options that only change one call (how its results are cut, its deadline): a copy
    #: shares the client's connections
    _CALL_OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"top_n", "score_threshold", "rank_fields", "deadline"}
    )

    def with_options(self, **overrides: Any) -> Self:
        """A copy with some options changed, leaving this (shared) instance untouched.

        ``top_n``, ``score_threshold``, ``rank_fields`` and ``deadline`` copies share this
        instance's connection pool (cheap: use one per call), which closing the copy's
        client leaves open; other options build a new client. Unknown names raise
        :class:`RerankConfigError`.
        """
        overrides = {self._field_of(k): v for k, v in overrides.items()}
        unknown = set(overrides) - set(type(self).model_fields)
        if unknown:
            owner = f"{type(self).__name__}.with_options()"
            known = set(type(self).model_fields)
            raise RerankConfigError(
                "; ".join(unknown_argument(owner, name, known) for name in sorted(unknown))
            )
        if set(overrides) <= self._CALL_OPTIONS:
            self._check_call_options(
                overrides.get("top_n", self.top_n),
                overrides.get("score_threshold", self.score_threshold),
                overrides.get("rank_fields", self.rank_fields),
            )
            clone = self._plain_copy(update=overrides)
            if "rank_fields" in overrides:  # not shared with the caller's list
                clone.__dict__["rank_fields"] = read_only(clone.rank_fields, "rank_fields")
            # the copy's client shares this one's pool and never closes it (closing a
            # copy's client must not cut this instance's calls in flight)
            clone._client = self._client.with_deadline(
                overrides.get("deadline", self._client.deadline)
            )
            clone.__dict__["deadline"] = clone._client.deadline
            return clone
        data = {name: getattr(self, name) for name in type(self).model_fields}
        # the field shows base_url with its credentials redacted: rebuild with the real one
        data["base_url"] = self._client._sdk.settings.base_url
        return type(self)(**(data | overrides))


class _Shown:
    """A value shown in ``repr`` as its text, without quotes."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _given_twice(cls: type[RerankFields], data: dict[str, Any]) -> str | None:
    """A field passed under both its name and its alias (``api_key`` and
    ``together_api_key``): pydantic would call one of them unknown."""
    for name, info in cls.model_fields.items():
        if info.alias and info.alias != name and name in data and info.alias in data:
            what = "The API key" if name == cls._KEY_FIELD else f"`{name}`"
            return (
                f"{what} was given twice, as `{info.alias}` and as `{name}` (two names of one "
                f"setting of {cls.__name__}); pass only one."
            )
    return None


def _known_arguments(cls: type[BaseModel]) -> set[str]:
    """Every keyword the constructor takes: field names and their aliases."""
    return {n for name, f in cls.model_fields.items() for n in (name, f.alias) if n}


def _describe(exc: ValidationError, cls: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "extra_forbidden":
            lines.append(unknown_argument(cls.__name__, where, _known_arguments(cls)))
        else:
            lines.append(f"{where}: {err['msg']}")
    return f"Invalid {cls.__name__} configuration: " + "; ".join(lines)
