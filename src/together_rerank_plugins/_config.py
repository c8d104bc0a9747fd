"""Configuration: constructor arguments, then environment variables, then defaults.

Both adapters hand their fields to :func:`resolve_settings`, so the precedence and the
validation rules are written once.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._errors import RerankConfigError
from ._extras import check_default_headers, check_header_text

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_CONCURRENCY",
    "ModelLimits",
    "model_limits",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_MODEL",
    "ENV_MODEL_FAMILY",
    "MODEL_FAMILIES",
    "Settings",
    "resolve_model_family",
    "normalize_base_url",
    "resolve_settings",
    "redact_url",
    "validate_deadline",
    "validate_score_threshold",
    "validate_top_n",
]

DEFAULT_MODEL = "Salesforce/Llama-Rank-V1"
DEFAULT_BASE_URL = "https://api.together.ai"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
ENV_API_KEY = "TOGETHER_API_KEY"
ENV_BASE_URL = "TOGETHER_BASE_URL"
ENV_MODEL = "TOGETHER_RERANK_MODEL"
ENV_MODEL_FAMILY = "TOGETHER_RERANK_MODEL_FAMILY"
DEFAULT_MAX_CONCURRENCY = 8


@dataclass(frozen=True)
class ModelLimits:
    """Documented per-request limits of a rerank model."""

    max_documents: int
    max_tokens_per_doc: int


#: The rerank model families Together documents. A dedicated endpoint's string
#: (``acme/rerank-prod``) does not say which family it serves: ``model_family`` does.
MODEL_FAMILIES = ("llama-rank", "mxbai")

# From Together's documentation (see docs/endpoints.md): Llama-Rank-V1 takes 1,024 documents
# per request and 8,192 tokens per document; Mxbai-Rerank-Large-V2 32,768 tokens per document
# (its per-request cap is not documented: Llama-Rank's is assumed).
_FAMILY_LIMITS = {
    "llama-rank": ModelLimits(1024, 8192),
    "mxbai": ModelLimits(1024, 32768),
}
#: For a model whose family is unknown: the smallest documented figure of each kind, so
#: no documented server limit is exceeded whichever family the endpoint serves. A smaller
#: budget only costs more windows (long documents) or more requests (large calls); a larger
#: one could send a document Llama-Rank has no documented way to handle.
CONSERVATIVE_LIMITS = ModelLimits(
    min(lim.max_documents for lim in _FAMILY_LIMITS.values()),
    min(lim.max_tokens_per_doc for lim in _FAMILY_LIMITS.values()),
)


#: Together's catalog names of each family (case-insensitive)
_CATALOG = {
    "salesforce/llama-rank-v1": "llama-rank",
    "mixedbread-ai/mxbai-rerank-large-v2": "mxbai",
}


def infer_model_family(model: str) -> str | None:
    """The family a model name reveals (``None``: it does not, as for endpoint strings).

    Only a catalog name, or a name that says Llama-Rank, reveals it. A name that merely
    contains ``mxbai`` does not: smaller Mxbai rerankers (self-hosted) have much smaller
    budgets than Mxbai-Rerank-Large-V2's 32,768 tokens. Such a name still never gets
    ``rank_fields`` (see :func:`accepts_rank_fields`).
    """
    name = model.strip().lower()
    if name in _CATALOG:
        return _CATALOG[name]
    if "llama-rank" in name or "llamarank" in name:
        return "llama-rank"
    return None


def resolve_model_family(model_family: Any, model: str, environ: Any = None) -> str | None:
    """``model_family`` argument > ``TOGETHER_RERANK_MODEL_FAMILY`` > the model's name.

    Returns a member of :data:`MODEL_FAMILIES`, or ``None`` when nothing says.
    """
    env = os.environ if environ is None else environ
    source = "`model_family`"
    if model_family is None and env.get(ENV_MODEL_FAMILY):
        model_family, source = env.get(ENV_MODEL_FAMILY), f"the {ENV_MODEL_FAMILY} variable"
    if model_family is None:
        return infer_model_family(model)
    family = model_family.strip().lower() if isinstance(model_family, str) else None
    if family not in MODEL_FAMILIES:
        raise RerankConfigError(
            f"{source} must be one of {MODEL_FAMILIES} (or unset to infer it from the model "
            f"name); got {model_family!r}."
        )
    return family


def model_limits(model: str, family: str | None = None) -> ModelLimits:
    """The documented limits of ``family`` (default: inferred from ``model``), or
    :data:`CONSERVATIVE_LIMITS` when the family is unknown."""
    family = family or infer_model_family(model)
    return _FAMILY_LIMITS.get(family or "", CONSERVATIVE_LIMITS)


def accepts_rank_fields(model: str, family: str | None = None) -> bool:
    """False for models documented not to take object documents with ``rank_fields``: the
    Mxbai family, or (family unknown) a name containing ``mxbai``. Any other unknown model
    is given the benefit of the doubt: the default family, Llama-Rank, takes them, and a
    server that does not take them answers 400 (whose message then names
    ``model_family``)."""
    family = family or infer_model_family(model)
    if family is None:
        return "mxbai" not in model.lower()
    return family != "mxbai"


_assumed_lock = threading.Lock()
_assumed: set[str] = set()


def note_assumed_family(model: str, limits: ModelLimits) -> None:
    """Say once per process per model, at INFO, what an unknown model is assumed to take."""
    with _assumed_lock:
        if model in _assumed:
            return
        _assumed.add(model)
    logging.getLogger("together_rerank_plugins").info(
        "Model %r does not name its family (Llama-Rank or Mxbai): assuming conservative "
        "limits (%d documents per request, %d tokens per document) and that it %s "
        "`rank_fields`. Set model_family='llama-rank' or 'mxbai' (or %s) to use the "
        "family's documented limits; `max_batch_size` and `max_tokens_per_doc` override.",
        model,
        limits.max_documents,
        limits.max_tokens_per_doc,
        "takes" if accepts_rank_fields(model) else "(named Mxbai) does not take",
        ENV_MODEL_FAMILY,
    )


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one client. The key, and any credentials written into
    ``base_url``, are kept out of ``repr`` (:attr:`shown_base_url` is what may be shown)."""

    model: str
    base_url: str = field(repr=False)
    timeout: float | None
    max_retries: int
    api_key: str = field(repr=False)
    #: sent with every request; may hold a gateway token, so kept out of ``repr``
    default_headers: Mapping[str, str] | None = field(default=None, repr=False)

    @property
    def shown_base_url(self) -> str:
        """``base_url`` with any ``user:password@`` replaced by ``***@``."""
        return redact_url(self.base_url)

    def __repr__(self) -> str:
        return (
            f"Settings(model={self.model!r}, base_url={self.shown_base_url!r}, "
            f"timeout={self.timeout!r}, max_retries={self.max_retries!r})"
        )


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _secret_value(value: Any) -> str | None:
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    if callable(getter):
        value = getter()
    if not isinstance(value, str):
        raise RerankConfigError(
            f"`api_key` must be a string or a pydantic SecretStr, not {type(value).__name__}."
        )
    return value


def _shown_url(url: str) -> str:
    """``url`` as an error message may quote it, credentials hidden even in a malformed URL:
    everything from after the scheme (``https:/``, ``https://``; the start when there is no
    such scheme) to the last ``@`` is replaced by ``***``, and so is a query or fragment (a
    gateway's ``?code=`` or ``?api-key=`` token)."""
    shown = url
    if "@" in shown:
        scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:/+", shown)
        start = scheme.end() if scheme else 0
        shown = f"{shown[:start]}***@{shown.rpartition('@')[2]}"
    cut = re.search(r"[?#]", shown)
    if cut:
        shown = f"{shown[: cut.start() + 1]}***"
    return shown


_ENCODE_HINT = (
    "percent-encode a '/', '?', '#', '@' or space in the user name or password (%2F, %3F, %23, "
    "%40, %20: urllib.parse.quote(password, safe=''))"
)


def _check_url_text(text: str) -> None:
    """Refuse characters no URL may hold as written: a space or control character (a
    stray one from a config file), or a lone surrogate (cannot be encoded). The position is
    said unless it is inside ``user:password@``; the character's neighbours never are."""
    for position, char in enumerate(text):
        if char.isspace() or not char.isprintable() or "\ud800" <= char <= "\udfff":
            what = "a space" if char == " " else "a whitespace, control or invalid character"
            scheme, sep, rest = text.partition("://")
            credentials = len(scheme) + len(sep) + len(rest.rpartition("@")[0])
            if sep and "@" in rest and position < credentials:
                raise RerankConfigError(
                    f"`base_url` has {what} in its user name or password: {_ENCODE_HINT}. "
                    "(Not quoted: it holds credentials.)"
                )
            raise RerankConfigError(
                f"`base_url` has {what} at position {position}: remove it (or percent-encode "
                f"it, a space as %20); got {_shown_url(text)!r}."
            )


def _check_host_and_port(netloc: str) -> None:
    """The host is not empty and the port, if any, is a whole number from 1 to 65535. The
    port is never quoted: in ``http://user:password`` (the host forgotten), it is the
    password."""
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):  # an IPv6 literal: [addr] or [addr]:port
        host, _, after = hostport[1:].partition("]")
        if after and not after.startswith(":"):
            after = ":x"  # text after the ']' that is not a port
        port = after[1:]
    else:
        host, _, port = hostport.partition(":")
    if not host:
        raise RerankConfigError(
            "`base_url` has no host (e.g. 'https://api.together.ai', "
            "'http://localhost:8000/v1'); add it before the ':' or '/'."
        )
    if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise RerankConfigError(
            "`base_url` has a port that is not a whole number from 1 to 65535 (the number "
            "after the host's ':'). Fix the port, or, if the ':' is in a password, write "
            f"'user:password@host': {_ENCODE_HINT}."
        )


def normalize_base_url(url: str) -> str:
    """Return ``scheme://host[:port][/prefix]`` without a trailing ``/`` or ``/v1``.

    The SDK appends ``/v1/rerank`` itself, so ``https://api.together.ai/v1`` and
    ``https://api.together.ai`` mean the same endpoint. A URL the HTTP client could not use
    raises :class:`RerankConfigError`, whose message never quotes a user name or password.
    """
    if not isinstance(url, str):
        raise RerankConfigError(
            f"`base_url` must be a string such as 'https://api.together.ai'; got "
            f"{type(url).__name__}."
        )
    text = url.strip()
    _check_url_text(text)
    try:
        parts = urlsplit(text)
    except ValueError:  # urllib's only complaint here: an unbalanced '[' or ']'
        raise RerankConfigError(
            "`base_url` has an unclosed '[' or a stray ']' in its host: an IPv6 address is "
            "written in brackets, as in 'http://[::1]:8000'; a '[' or ']' in a password is "
            f"percent-encoded (%5B, %5D). Got {_shown_url(text)!r}."
        ) from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RerankConfigError(
            f"`base_url` must be an http(s) URL such as 'https://api.together.ai' or "
            f"'http://localhost:8000/v1'; got {_shown_url(text)!r}."
        )
    if "@" in text[text.index(parts.netloc) + len(parts.netloc) :]:
        # a '/', '?' or '#' in a password ends the host part early: what follows (the rest
        # of the password among it) would be sent as path, query or fragment
        raise RerankConfigError(
            "`base_url` has an '@' after its host. If it holds 'user:password@host', "
            f"{_ENCODE_HINT}; an '@' in the path is written %40. (Not quoted: it may hold "
            "credentials.)"
        )
    if parts.query or parts.fragment:
        raise RerankConfigError(
            f"`base_url` must not carry a query or fragment; got {_shown_url(text)!r}."
        )
    if parts.netloc.startswith("***@"):  # what redact_url wrote: the credentials are gone
        raise RerankConfigError(
            f"`base_url` {text!r} had credentials (user:password@), which are never "
            "serialized or shown; pass `base_url` with them again (e.g. from your secret "
            "store) when you load or copy this configuration."
        )
    _check_host_and_port(parts.netloc)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def validate_top_n(top_n: Any) -> int | None:
    """``None`` means every candidate; otherwise an int >= 1."""
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        raise RerankConfigError(f"`top_n` must be an int >= 1 or None (all); got {top_n!r}.")
    if top_n < 1:
        raise RerankConfigError(
            f"`top_n` must be >= 1 (or None to keep every candidate); got {top_n}."
        )
    return top_n


def validate_score_threshold(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RerankConfigError(
            f"`score_threshold` must be a finite number or None; got {value!r}."
        )
    return float(value)


#: the longest ``timeout`` or ``deadline`` taken (about 11.6 days): the socket layer cannot
#: wait for much longer ones (1e10 s fails every call as "could not connect")
MAX_WAIT = 1e6


def _is_wait(value: Any) -> bool:
    """A number of seconds > 0 and at most MAX_WAIT (False for bools, NaN and infinities)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value <= MAX_WAIT


def _validate_timeout(value: Any) -> float | None:
    if value is None:
        return None
    if not _is_wait(value):
        raise RerankConfigError(
            f"`timeout` must be a number of seconds > 0 and at most {MAX_WAIT:,.0f} (or None "
            f"for no limit); got {value!r}."
        )
    return float(value)


def validate_deadline(value: Any) -> float | None:
    """``deadline``: seconds > 0 for one whole call, or None (no budget beyond the
    attempts' ``timeout`` and ``max_retries``)."""
    if value is None:
        return None
    if not _is_wait(value):
        raise RerankConfigError(
            f"`deadline` must be a number of seconds > 0 and at most {MAX_WAIT:,.0f} for a "
            "whole call (every batch, attempt and retry wait), or None for no deadline; got "
            f"{value!r}."
        )
    return float(value)


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RerankConfigError(f"`{name}` must be an int >= 1; got {value!r}.")
    return value


def _validate_max_retries(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RerankConfigError(f"`max_retries` must be an int >= 0; got {value!r}.")
    return value


def resolve_settings(
    *,
    model: str | None = None,
    api_key: Any = None,
    base_url: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    max_retries: int = DEFAULT_MAX_RETRIES,
    environ: Any = None,
    default_headers: Any = None,
) -> Settings:
    """Apply argument > environment > default and validate the result.

    Raises :class:`RerankConfigError` with the fix in the message.
    """
    env = os.environ if environ is None else environ

    if model is None:
        model = env.get(ENV_MODEL) or DEFAULT_MODEL
    if not isinstance(model, str) or not model.strip():
        raise RerankConfigError(
            f"`model` must be a non-empty string (a rerank model or your dedicated endpoint's "
            f"model name; env {ENV_MODEL}); got {model!r}."
        )

    key = _secret_value(api_key)
    source = "`api_key`"
    if key is None:
        key = env.get(ENV_API_KEY)
        source = ENV_API_KEY
    if key is None:
        raise RerankConfigError(
            f"No Together API key: set the {ENV_API_KEY} environment variable or pass "
            "`api_key=...`. (For offline tests use together_rerank_plugins.testing.)"
        )
    if not key.strip():
        raise RerankConfigError(
            f"The API key from {source} is empty: set {ENV_API_KEY} to your Together key."
        )
    # surrounding whitespace (a key file's newline) is stripped; what HTTP cannot carry is
    # refused here rather than failing every call with the key in the encoding error
    key = check_header_text(key, f"The API key from {source}")

    from_env = base_url is None and bool(env.get(ENV_BASE_URL))
    raw_url = base_url if base_url is not None else env.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    try:
        url = normalize_base_url(raw_url)
    except RerankConfigError as exc:
        if not from_env:
            raise
        raise RerankConfigError(f"{exc} (from the {ENV_BASE_URL} environment variable)") from None
    return Settings(
        model=model.strip(),
        base_url=url,
        timeout=_validate_timeout(timeout),
        max_retries=_validate_max_retries(max_retries),
        api_key=key,
        default_headers=check_default_headers(default_headers),
    )
