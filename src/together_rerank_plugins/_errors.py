"""Errors raised by together-rerank-plugins.

Every exception the package raises derives from :class:`RerankError`. Errors about the
caller's arguments also derive from :class:`ValueError`; a timeout also derives from the
built-in :class:`TimeoutError`. When the ``together`` SDK raised first, its exception is
chained as ``__cause__``.

The tree::

    RerankError
    ├── RerankConfigError (ValueError)   bad configuration: no/empty key, bad base_url, top_n < 1
    ├── RerankInputError (ValueError)    bad call arguments: empty query, mixed documents, ...
    ├── APIStatusError                   an error status from the server (.status_code)
    │   ├── AuthenticationError          401, 403: key missing, wrong or without access
    │   ├── EndpointNotFoundError        404: model / dedicated endpoint not found
    │   ├── BadRequestError              400, 422: request rejected (server's message quoted)
    │   ├── RateLimitError               429, after the SDK's retries (.retry_after)
    │   ├── ServerError                  5xx, after the SDK's retries
    │   └── CrossOriginRedirectError     3xx to another origin: refused, not followed
    ├── RerankConnectionError            could not reach the server, after retries
    │   ├── RerankTimeoutError (TimeoutError)   attempts timed out, or `deadline` reached
    │   └── CircuitOpenError             the circuit breaker is open: nothing was sent
    └── MalformedResponseError           untrustworthy answer: bad JSON, indices or scores

Messages never contain the API key nor `default_headers` values: :func:`translate_sdk_error`
scrubs them.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "CrossOriginRedirectError",
    "CircuitOpenError",
    "EndpointNotFoundError",
    "MalformedResponseError",
    "RateLimitError",
    "RerankConfigError",
    "RerankConnectionError",
    "RerankError",
    "RerankInputError",
    "RerankTimeoutError",
    "ServerError",
]


class RerankError(Exception):
    """Base class of every error raised by together-rerank-plugins.

    Every one pickles with its message and fields (``status_code``, ``location``, ...), so
    an error raised in a worker process (``ProcessPoolExecutor``, ``multiprocessing``)
    reaches the parent typed. Like every exception, its cause and traceback are not pickled.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own reduce calls ``cls(*args)``, which subclasses with keyword-only
        # fields (APIStatusError's status_code) cannot take: rebuild without __init__, then
        # restore the fields from __dict__ (pickle's default __setstate__ does that).
        return (_rebuild_error, (type(self), self.args), self.__dict__)


class RerankConfigError(RerankError, ValueError):
    """The configuration cannot work (missing key, bad ``base_url``, ``top_n < 1``, ...)."""


class RerankInputError(RerankError, ValueError):
    """The arguments of one rerank call are invalid (empty query, mixed documents, ...)."""


class APIStatusError(RerankError):
    """The rerank server answered with an error status."""

    def __init__(self, message: str, *, status_code: int, server_message: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.server_message = server_message


class AuthenticationError(APIStatusError):
    """401 or 403: the API key is missing, wrong, or has no access to this endpoint."""


class EndpointNotFoundError(APIStatusError):
    """404: no model or dedicated endpoint answers to the configured ``model``."""


class BadRequestError(APIStatusError):
    """400 or 422: the server rejected the request; its message is quoted."""


class RateLimitError(APIStatusError):
    """429 after the configured retries, or a 429 whose retry would not fit in the call's
    ``deadline`` (then not retried; the message says so).

    ``retry_after`` is the wait the server asked for, in seconds (its ``Retry-After`` or
    ``retry-after-ms`` header; None when it sent neither): back off at least that long.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 429,
        server_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, server_message=server_message)
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """5xx after the configured retries."""


class CrossOriginRedirectError(APIStatusError):
    """The server redirected to another origin (scheme, host or port than ``base_url``'s).

    The redirect was not followed: nothing was sent there, and no ranking comes from it.
    ``location`` is the target (credentials redacted). Point ``base_url`` at the server
    that actually answers.
    """

    def __init__(self, message: str, *, status_code: int, location: str) -> None:
        super().__init__(message, status_code=status_code)
        self.location = location


def _rebuild_error(cls: type[RerankError], args: tuple[Any, ...]) -> RerankError:
    """Unpickle a :class:`RerankError`: ``cls`` with ``args``, its ``__init__`` skipped (the
    fields it would set come back from the pickled ``__dict__``)."""
    error = cls.__new__(cls)
    error.args = args
    return error


#: set by ``_transport`` on a redirect it refused; the value is the redacted target
REFUSED_REDIRECT_HEADER = "x-together-rerank-refused-redirect"


class RerankConnectionError(RerankError):
    """The server could not be reached (after the configured retries)."""


class RerankTimeoutError(RerankConnectionError, TimeoutError):
    """No answer within ``timeout`` seconds on every attempt, or the call's ``deadline``
    was reached (the message says which)."""


class CircuitOpenError(RerankConnectionError):
    """The endpoint's circuit breaker is open (it kept failing): the call failed at once,
    without sending anything. ``on_error="fallback"`` and ``failover=`` cover it."""


class MalformedResponseError(RerankError):
    """The server's answer cannot be turned into a trustworthy ranking."""


#: names other rerank integrations use for one of ours (difflib would not find these)
_OTHER_NAMES = {"top_k": "top_n", "model_name": "model", "request_timeout": "timeout"}


def unknown_argument(
    owner: str, name: str, known: Collection[str], per_call: Collection[str] = ()
) -> str:
    """The message for an argument ``owner`` does not take: the closest known name when one
    is close (``top_k`` -> ``top_n``), else the known names. ``per_call``: options given to
    each call rather than to ``owner``. Never the argument's value."""
    near = _OTHER_NAMES.get(name, name)
    if near in per_call:
        return (
            f"unknown argument {name!r} for {owner}: {near!r} is given per call, as in "
            f"rerank(query, documents, {near}=...)"
        )
    if near not in known:
        matches = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        near = matches[0] if matches else ""
    if near:
        return f"unknown argument {name!r} for {owner}: did you mean {near!r}?"
    takes = ", ".join(sorted(known))
    return f"unknown argument {name!r} for {owner} (is it misspelled?); it takes: {takes}"


def needs_fix(error: BaseException) -> bool:
    """True for errors that are the caller's to fix rather than the service's to recover
    from: bad configuration or input, 401/403, 400/422, 404, 402, and a refused
    cross-origin redirect. Fallback never hides them, failover does not move past them, and
    circuit breakers do not count them."""
    return isinstance(error, _NEEDS_FIX) or getattr(error, "status_code", None) == 402


_NEEDS_FIX = (
    AuthenticationError,
    BadRequestError,
    CrossOriginRedirectError,
    EndpointNotFoundError,
    RerankConfigError,
    RerankInputError,
)


#: the key, or the key and other secrets (header values that may hold a gateway token)
Secrets = str | Sequence[str] | None


def _secrets(secret: Secrets) -> list[str]:
    # Very short "keys" (test placeholders) would blank out ordinary words; real keys are long.
    items = [secret] if isinstance(secret, str) else list(secret or ())
    return sorted((s for s in items if s and len(s) >= 6), key=len, reverse=True)


def _scrub(text: str, secret: Secrets) -> str:
    for value in _secrets(secret):
        text = text.replace(value, "***")
    return text


def _server_message(exc: BaseException) -> str | None:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return None


def _scrub_value(value: Any, secret: Secrets) -> Any:
    if isinstance(value, str):
        return _scrub(value, secret)
    if isinstance(value, list):
        return [_scrub_value(v, secret) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_value(v, secret) for k, v in value.items()}
    return value


def scrub_exception(exc: BaseException, secret: Secrets) -> None:
    """Remove ``secret`` from an SDK exception we are about to chain as ``__cause__``: a
    server may echo the key in its error body, and tracebacks print the cause."""
    if not _secrets(secret):
        return
    exc.args = tuple(_scrub_value(a, secret) for a in exc.args)
    for name in ("message", "body"):
        if hasattr(exc, name):
            with contextlib.suppress(AttributeError):  # read-only: nothing we can change
                setattr(exc, name, _scrub_value(getattr(exc, name), secret))


def scrub_error(error: RerankError, secret: Secrets) -> RerankError:
    """Remove ``secret`` from a :class:`RerankError` built from a server's answer (its
    message and ``server_message``), before it is logged or raised: a server may echo the
    ``Authorization`` header anywhere, a 200 answer included."""
    if _secrets(secret):
        error.args = tuple(_scrub_value(a, secret) for a in error.args)
        if isinstance(getattr(error, "server_message", None), str):
            error.server_message = _scrub(error.server_message, secret)  # type: ignore[attr-defined]
    return error


def _retry_after(headers: Any) -> float | None:
    """The wait a 429 asks for, in seconds: ``retry-after-ms``, else ``Retry-After`` as
    seconds or as an HTTP date (the headers the SDK honours); None without a usable one."""
    import email.utils
    import math
    import time

    def seconds(value: Any, scale: float = 1.0) -> float | None:
        with contextlib.suppress(TypeError, ValueError):
            number = float(value) / scale
            return max(number, 0.0) if math.isfinite(number) else None
        return None

    found = seconds(headers.get("retry-after-ms"), 1000.0)
    if found is not None:
        return found
    value = headers.get("retry-after")
    found = seconds(value)
    if found is not None or value is None:
        return found
    when = email.utils.parsedate_tz(value)
    return None if when is None else max(float(email.utils.mktime_tz(when) - time.time()), 0.0)


def _after_retries(max_retries: int | None) -> str:
    """How many retries came before the error, in words (the SDK retries by itself)."""
    if max_retries is None:
        return "after the configured retries"
    if max_retries == 0:
        return "with no retry (max_retries=0)"
    return f"after {max_retries} {'retry' if max_retries == 1 else 'retries'}"


#: Together's two inference hosts: the classic API (serverless, older dedicated endpoints)
#: and Dedicated Model Inference (endpoint strings ``<project_slug>/<endpoint_name>``)
TOGETHER_API_HOSTS = frozenset({"api.together.ai", "api.together.xyz"})
DMI_HOST = "api-inference.together.ai"
DMI_BASE_URL = f"https://{DMI_HOST}/v1"
#: model names of Together's catalog: never endpoint strings
_CATALOG = frozenset({"salesforce/llama-rank-v1", "mixedbread-ai/mxbai-rerank-large-v2"})


def _other_host_hint(model: str, base_url: str) -> str:
    """After a 404 from one of Together's hosts, point at the other way to reach a
    dedicated model when the model string fits it."""
    host = (urlsplit(base_url).hostname or "").lower()
    slug, sep, name = model.partition("/")
    endpoint_like = bool(sep and slug and name and "/" not in name)
    if host in TOGETHER_API_HOSTS and endpoint_like and model.lower() not in _CATALOG:
        return (
            f" If {model!r} is a Dedicated Model Inference endpoint (<project_slug>/"
            f"<endpoint_name>), it is served at {DMI_BASE_URL}: set `base_url` (or "
            "TOGETHER_BASE_URL) to it."
        )
    if host == DMI_HOST:
        return (
            f" {DMI_HOST} serves Dedicated Model Inference endpoints, named "
            "<project_slug>/<endpoint_name> as the DMI API returns them; an older dedicated "
            "endpoint's model string is served at https://api.together.ai: set `base_url` "
            "(or TOGETHER_BASE_URL) to it."
        )
    return ""


def translate_sdk_error(
    exc: BaseException,
    *,
    model: str,
    base_url: str,
    secret: Secrets,
    rank_fields: bool = False,
    max_retries: int | None = None,
    not_retried: str | None = None,
) -> RerankError:
    """Turn a ``together`` SDK exception into the matching :class:`RerankError`.

    The caller raises the result ``from exc``. Only called after the SDK raised, so importing
    ``together`` here costs nothing. ``not_retried``: why an error status was not retried
    although retries were left (its next attempt would not fit in the call's deadline).
    """
    import together

    scrub_exception(exc, secret)
    where = f"{base_url}/v1/rerank"
    after = not_retried or _after_retries(max_retries)
    if isinstance(exc, together.APITimeoutError):
        return RerankTimeoutError(
            f"The rerank request to {where} timed out on every attempt. Raise `timeout` "
            "(seconds per attempt) or `max_retries`, or check that the endpoint is up."
        )
    if isinstance(exc, together.APIConnectionError):
        return RerankConnectionError(
            f"Could not connect to {where} ({_scrub(str(exc), secret)}) {after}. Check "
            "`base_url` (or TOGETHER_BASE_URL) and your network."
        )
    if isinstance(exc, together.APIStatusError):
        status = exc.status_code
        refused = exc.response.headers.get(REFUSED_REDIRECT_HEADER)
        if refused is not None:
            return CrossOriginRedirectError(
                f"{where} answered {status} redirecting to another origin, {refused!r}. "
                "The redirect was not followed (nothing was sent there) and no ranking was "
                "returned: set `base_url` to the server that answers.",
                status_code=status,
                location=refused,
            )
        server = _server_message(exc)
        server = _scrub(server, secret) if server else None
        quoted = f" Server said: {server!r}." if server else ""
        cls: type[APIStatusError]
        if status in (401, 403):
            cls = AuthenticationError
            hint = (
                "The API key was refused. Set TOGETHER_API_KEY (or pass `api_key`) to a key "
                "with access to this endpoint."
            )
        elif status == 404:
            cls = EndpointNotFoundError
            hint = (
                f"No rerank model or endpoint named {model!r} was found at {where}. Together "
                "serves rerank models on dedicated endpoints only: create one, then set "
                "`model` (or TOGETHER_RERANK_MODEL) to that endpoint's model or endpoint string."
                + _other_host_hint(model, base_url)
            )
        elif status in (400, 422):
            cls = BadRequestError
            hint = "The server rejected the request; fix the arguments it names."
            if rank_fields:
                hint += (
                    " Note: object documents with `rank_fields` work only with Llama-Rank "
                    "endpoints; for other models pass strings (and set model_family='mxbai' "
                    "so the client refuses them before sending)."
                )
        elif status == 402:
            cls = APIStatusError
            hint = "The account is out of credit (402): add credit or use another key."
        elif status == 429:
            retry_after = _retry_after(exc.response.headers)
            asked = "" if retry_after is None else f" The server asked to wait {retry_after:g} s."
            advice = (
                "back off (`retry_after`) or lower concurrency"
                if not_retried
                else "lower concurrency or raise `max_retries`"
            )
            return RateLimitError(
                f"Rate limited (429) {after}: {advice}.{asked}{quoted}",
                status_code=status,
                server_message=server,
                retry_after=retry_after,
            )
        elif status >= 500:
            cls = ServerError
            hint = f"The server failed ({status}) {after}; try again later."
        else:
            cls = APIStatusError
            hint = f"The server answered {status}."
        return cls(f"{hint}{quoted}", status_code=status, server_message=server)
    return RerankError(f"The rerank request failed: {_scrub(str(exc), secret)}")
