"""What the demo and the ``together-rerank`` command line share, in one home below both:
the embedded offline endpoint's settings, argument types, the one-line error format and the
console-script wrapper. Neither imports the other for these.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from ._errors import RerankError
from ._inputs import LONE_SURROGATE

__all__ = [
    "OFFLINE_API_KEY",
    "OFFLINE_BASE_URL",
    "OFFLINE_MODEL",
    "error_line",
    "is_test_endpoint",
    "probe_timeout",
    "json_line",
    "offline_client_options",
    "positive_int",
    "run_console",
    "test_endpoint_line",
]

#: Offline settings are explicit, so stray TOGETHER_* variables cannot affect an offline run.
#: The transport answers every request in process; the host is never resolved.
OFFLINE_API_KEY = "offline"
OFFLINE_BASE_URL = "http://embedded-lexical-endpoint.invalid"
OFFLINE_MODEL = "embedded-lexical-overlap"


def offline_client_options(
    model: str | None = None, scorer: Callable[[str, list[str]], list[float]] | None = None
) -> dict[str, Any]:
    """``RerankClient``/adapter keyword arguments for the embedded lexical test endpoint
    (``scorer``: another of its scorers, e.g. ``pointwise_lexical_scores``)."""
    from .testing import LexicalRerankEndpoint

    endpoint = LexicalRerankEndpoint()
    if scorer is not None:
        endpoint.scorer = scorer
    return {
        "api_key": OFFLINE_API_KEY,
        "base_url": OFFLINE_BASE_URL,
        "model": model or OFFLINE_MODEL,
        # explicit: TOGETHER_RERANK_MODEL_FAMILY is not read (the endpoint takes rank_fields)
        "model_family": "llama-rank",
        "transport": endpoint,
    }


#: how long the loopback check may take (it is one local GET)
PROBE_TIMEOUT = 2.0


def probe_timeout(timeout: float | None, deadline: float | None) -> float:
    """The bound of the test-endpoint check before a client's calls: :data:`PROBE_TIMEOUT`,
    or the client's ``timeout`` or ``deadline`` when shorter (the check never waits longer
    than the user lets one call wait)."""
    return min(b for b in (PROBE_TIMEOUT, timeout, deadline) if b is not None)


def is_test_endpoint(base_url: str, *, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when ``base_url`` (as the client sends to it: no ``/v1``) is the embedded test
    endpoint served by ``python -m together_rerank_plugins.testing`` (or ``serve_loopback``).

    Only a loopback host is asked (the test endpoint serves on 127.0.0.1 only, and nothing
    is sent to a remote service): one ``GET {base_url}/v1/rerank`` without the key (nor the
    credentials of a ``user:password@`` base_url), whose answer (a 404) names the endpoint
    in its ``X-Rerank-Test-Endpoint`` header; its body is not read. The check ends within
    ``timeout`` seconds in all, whatever the server does (a local gateway trickling its
    answer included). Any failure to ask means "not the test endpoint": the real call then
    reports its own error.
    """
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
    if not loopback:
        return False
    import httpx

    from ._transport import begin, build_probe_client, end
    from .testing import RERANK_PATH, TEST_ENDPOINT_HEADER

    token = begin(None, timeout)  # the whole request within `timeout`
    try:
        # no proxy from the environment: it must not see or answer the check
        # without `user:password@` (the test endpoint takes none): nothing sent or logged
        bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        url = bare.rstrip("/") + RERANK_PATH
        with build_probe_client(timeout) as http, http.stream("GET", url) as response:
            return TEST_ENDPOINT_HEADER in response.headers
    except httpx.HTTPError:
        return False
    finally:
        end(token)


def test_endpoint_line(base_url: str, model: str) -> str:
    """The first output line when ``TOGETHER_BASE_URL`` points at the embedded endpoint."""
    return (
        f"mode: test endpoint — the embedded lexical test endpoint at {base_url} (not "
        f"LlamaRank; word-overlap scores), model {model}"
    )


def whole_number(value: str, minimum: int) -> int:
    """An argparse type's body: ``value`` as an int >= ``minimum``."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {number}")
    return number


def positive_int(value: str) -> int:
    """argparse type: a whole number >= 1."""
    return whole_number(value, 1)


def error_line(exc: BaseException) -> str:
    """``error: <Type>: <message>`` for library errors, ``error: <message>`` otherwise; one line."""
    message = " ".join(str(exc).split())
    if isinstance(exc, RerankError):
        return f"error: {type(exc).__name__}: {message}"
    return f"error: {message}"


def json_line(record: Any) -> str:
    """``record`` as one line of JSON, non-ASCII text as is, except lone surrogates (text
    that is not valid Unicode, which JSON can carry as ``"\\ud83d"`` but UTF-8 cannot encode):
    written as the JSON escape, so the line can be written and reads back exactly."""
    text = json.dumps(record, ensure_ascii=False)
    if text.isascii() or not LONE_SURROGATE.search(text):
        return text
    # raw surrogates can only be inside JSON strings, where \uXXXX means that very character
    return LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def run_console(main: Callable[[], int]) -> int:
    """Run a console entry point; a reader that stops early (``| head``) is not an error trace.

    Standard output shows text that is not valid Unicode (a lone surrogate from a JSON
    escape, a file name that is not UTF-8) as a backslash escape instead of failing with
    ``UnicodeEncodeError`` (standard error already does).
    """
    stdout = sys.stdout
    errors = getattr(stdout, "errors", None)
    reconfigure = getattr(stdout, "reconfigure", None)
    if errors == "strict" and callable(reconfigure):
        reconfigure(errors="backslashreplace")
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    finally:
        if errors == "strict" and callable(reconfigure):
            reconfigure(errors="strict")  # as it was (main() may be called in process)
    return code
