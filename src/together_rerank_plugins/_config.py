"""Configuration: constructor arguments, then environment variables, then defaults.

Both adapters hand their fields to :func:`resolve_settings`, so the precedence and the
validation rules are written once.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._errors import RerankConfigError

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
    "Settings",
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
DEFAULT_MAX_CONCURRENCY = 8


@dataclass(frozen=True)
class ModelLimits:
    """Documented per-request limits of a rerank model."""

    max_documents: int
    max_tokens_per_doc: int


# From Together's model table (see docs/endpoints.md). Unknown names (dedicated endpoints,
# self-hosted servers) get Llama-Rank's limits: override them with `max_batch_size` and
# `max_tokens_per_doc`.
_LIMITS = {
    "salesforce/llama-rank-v1": ModelLimits(1024, 8192),
    "mixedbread-ai/mxbai-rerank-large-v2": ModelLimits(1024, 32768),
}
_DEFAULT_LIMITS = ModelLimits(1024, 8192)


def model_limits(model: str) -> ModelLimits:
    """The documented limits of ``model`` (case-insensitive), or Llama-Rank's."""
    return _LIMITS.get(model.strip().lower(), _DEFAULT_LIMITS)


def accepts_rank_fields(model: str) -> bool:
    """False for models documented not to take object documents with ``rank_fields``."""
    return "mxbai" not in model.lower()


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one client. The key, and any credentials written into
    ``base_url``, are kept out of ``repr`` (:attr:`shown_base_url` is what may be shown)."""

    model: str
    base_url: str = field(repr=False)
    timeout: float | None
    max_retries: int
    api_key: str = field(repr=False)

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


def normalize_base_url(url: str) -> str:
    """Return ``scheme://host[:port][/prefix]`` without a trailing ``/`` or ``/v1``.

    The SDK appends ``/v1/rerank`` itself, so ``https://api.together.ai/v1`` and
    ``https://api.together.ai`` mean the same endpoint.
    """
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RerankConfigError(
            f"`base_url` must be an http(s) URL such as 'https://api.together.ai' or "
            f"'http://localhost:8000/v1'; got {redact_url(url)!r}."
        )
    if parts.query or parts.fragment:
        raise RerankConfigError(
            f"`base_url` must not carry a query or fragment; got {redact_url(url)!r}."
        )
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


def _validate_timeout(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise RerankConfigError(
            f"`timeout` must be a number of seconds > 0 (or None for no limit); got {value!r}."
        )
    return float(value)


def validate_deadline(value: Any) -> float | None:
    """``deadline``: seconds > 0 for one whole call, or None (no budget beyond the
    attempts' ``timeout`` and ``max_retries``)."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not value > 0
    ):
        raise RerankConfigError(
            "`deadline` must be a number of seconds > 0 for a whole call (every batch, "
            f"attempt and retry wait), or None for no deadline; got {value!r}."
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
        api_key=key.strip(),
    )
