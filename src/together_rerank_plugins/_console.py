"""What the demo and the ``together-rerank`` command line share, in one home below both:
the embedded offline endpoint's settings, argument types, the one-line error format and the
console-script wrapper. Neither imports the other for these.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from ._errors import RerankError

__all__ = [
    "OFFLINE_API_KEY",
    "OFFLINE_BASE_URL",
    "OFFLINE_MODEL",
    "error_line",
    "offline_client_options",
    "positive_int",
    "run_console",
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


def run_console(main: Callable[[], int]) -> int:
    """Run a console entry point; a reader that stops early (``| head``) is not an error trace."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    return code
