"""What every ``together-rerank`` command shares: configuration flags, the mode line, the
client, input checks and the one-line error convention.

Exit codes: 0 success, 1 a library (``RerankError``) or run-time failure reported on one
line of stderr, 2 a usage error (bad flags, unreadable input, no key and no ``--offline``),
130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import RerankClient
from .._console import (
    OFFLINE_API_KEY,
    OFFLINE_BASE_URL,
    OFFLINE_MODEL,
    error_line,
    is_test_endpoint,
    offline_client_options,
    positive_int,
    probe_timeout,
    test_endpoint_line,
    whole_number,
)
from .._install import install_hint

__all__ = [
    "OFFLINE_API_KEY",
    "OFFLINE_BASE_URL",
    "OFFLINE_HEADER",
    "OFFLINE_MODEL",
    "CliError",
    "Mode",
    "UsageError",
    "add_config_flags",
    "add_output_flags",
    "check_output_file",
    "check_output_folder",
    "error_line",
    "make_client",
    "missing_extra",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "usage_tokens",
]

OFFLINE_HEADER = (
    "mode: offline — embedded lexical test endpoint (not LlamaRank; word-overlap scores, "
    "no network)"
)

ENV_API_KEY = "TOGETHER_API_KEY"
MODEL_FAMILIES = ("llama-rank", "mxbai")

NO_KEY_MESSAGE = (
    f"no API key: set {ENV_API_KEY} (and TOGETHER_RERANK_MODEL to your dedicated endpoint's "
    "model) to call Together, or pass --offline to use the embedded lexical test endpoint."
)


class CliError(Exception):
    """A failure to report on one line of stderr with exit code :attr:`code`."""

    code = 1


class UsageError(CliError):
    """The command was called wrongly (exit code 2)."""

    code = 2


def json_object(text: str, where: str) -> dict[str, Any]:
    """The JSON object on one input line; anything else is a usage error naming ``where``."""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object")
    return obj


def missing_extra(module: str) -> CliError:
    return CliError(f"this command needs the `{module}` package: run {install_hint('cli')}")


# -- argument types ------------------------------------------------------------------------
def non_negative_int(value: str) -> int:
    return whole_number(value, 0)


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {value}")
    return number


def finite_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value}")
    return number


def add_config_flags(parser: argparse.ArgumentParser, *, ranking: bool = True) -> None:
    """The library's configuration, as flags. ``ranking`` adds ``--top-n``/``--score-threshold``."""
    group = parser.add_argument_group(
        "endpoint",
        "Flags win over TOGETHER_API_KEY, TOGETHER_BASE_URL and TOGETHER_RERANK_MODEL, which "
        "win over the library's defaults.",
    )
    group.add_argument(
        "--offline",
        action="store_true",
        help="use the embedded lexical test endpoint in process (no network, not LlamaRank)",
    )
    group.add_argument(
        "--model",
        help="rerank model or dedicated endpoint model name (env TOGETHER_RERANK_MODEL; "
        "default Salesforce/Llama-Rank-V1)",
    )
    group.add_argument(
        "--base-url",
        help="server root, with or without /v1 (env TOGETHER_BASE_URL; "
        "default https://api.together.ai)",
    )
    group.add_argument(
        "--api-key",
        help="API key; prefer the TOGETHER_API_KEY environment variable (a flag shows up in "
        "process lists and shell history)",
    )
    group.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="seconds per attempt (default 60)",
    )
    group.add_argument(
        "--deadline",
        type=positive_float,
        metavar="SECONDS",
        help="wall-clock budget of each rerank call, retries and waits included "
        "(default: none; --timeout still bounds each attempt)",
    )
    group.add_argument(
        "--model-family",
        choices=MODEL_FAMILIES,
        help="the family of the model behind --model, which sets its limits and whether it "
        "takes --rank-fields: llama-rank (LlamaRank) or mxbai (Mxbai-Rerank); an endpoint "
        "name such as acme/rerank-prod does not tell (default: the library's)",
    )
    group.add_argument(
        "--max-retries",
        type=non_negative_int,
        metavar="N",
        help="retries on 408/409/429/5xx, timeouts and connection errors (default 2)",
    )
    if ranking:
        group.add_argument(
            "--top-n",
            type=positive_int,
            metavar="N",
            help="keep the N best documents (default: all, reordered)",
        )
        group.add_argument(
            "--score-threshold",
            type=finite_float,
            metavar="SCORE",
            help="drop results scoring below SCORE (applied after --top-n)",
        )


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout (the mode line then goes to stderr)",
    )


# -- mode and client -----------------------------------------------------------------------
@dataclass(frozen=True)
class Mode:
    offline: bool
    header: str
    model: str
    base_url: str
    #: the base URL is the embedded test endpoint served on loopback (word overlap scores)
    test_endpoint: bool = False

    @property
    def label(self) -> str:
        """The header without its ``mode: `` prefix (for JSON output and plot titles)."""
        return self.header.removeprefix("mode: ")

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.label,
            "offline": self.offline,
            "test_endpoint": self.offline or self.test_endpoint,
            "model": self.model,
            "base_url": None if self.offline else self.base_url,
        }


def make_client(
    args: argparse.Namespace,
    *,
    offline_scorer: Callable[[str, list[str]], list[float]] | None = None,
    **options: Any,
) -> tuple[RerankClient, Mode]:
    """Build the client the flags ask for, and the mode line that says what it talks to
    (``offline_scorer``: the embedded endpoint's scorer with ``--offline``).

    Raises :class:`UsageError` without ``--offline`` and without any key, and for flags that
    make no sense offline; :class:`RerankError` for a configuration the library rejects.
    """
    kwargs: dict[str, Any] = dict(options)
    if args.timeout is not None:
        kwargs["timeout"] = args.timeout
    if args.max_retries is not None:
        kwargs["max_retries"] = args.max_retries
    # passed only when given, so a client without these options still works without the flags
    if args.deadline is not None:
        kwargs["deadline"] = args.deadline
    if args.model_family is not None:
        kwargs["model_family"] = args.model_family
    if args.offline:
        if args.base_url is not None or args.api_key is not None:
            raise UsageError(
                "--offline uses the embedded test endpoint; drop --base-url and --api-key "
                "(or drop --offline to call them)."
            )
        options = offline_client_options(args.model, offline_scorer)
        if kwargs.get("model_family") is None:  # explicit: the environment's is not read
            kwargs["model_family"] = options["model_family"]
        client = RerankClient(**(options | kwargs))
        return client, Mode(True, OFFLINE_HEADER, client.model, client.base_url)
    if args.api_key is not None:
        print(
            "warning: --api-key is visible in process lists and shell history; prefer the "
            f"{ENV_API_KEY} environment variable.",
            file=sys.stderr,
        )
    elif not os.environ.get(ENV_API_KEY, "").strip():
        raise UsageError(NO_KEY_MESSAGE)
    client = RerankClient(model=args.model, api_key=args.api_key, base_url=args.base_url, **kwargs)
    bound = probe_timeout(client.timeout, client.deadline)
    if is_test_endpoint(client._sdk.settings.base_url, timeout=bound):
        header = test_endpoint_line(client.base_url, client.model)
        return client, Mode(False, header, client.model, client.base_url, test_endpoint=True)
    header = f"mode: live — endpoint {client.base_url}, model {client.model}"
    return client, Mode(False, header, client.model, client.base_url)


def usage_tokens(results: object) -> int | None:
    """Total tokens of one call, if the client reports them (``results.usage``), else None.

    Works before and after the core returns a list with ``.usage``: a plain list has none.
    """
    usage = getattr(results, "usage", None)
    if usage is None:
        return None
    total: Any
    if isinstance(usage, Mapping):
        total = usage.get("total_tokens", usage.get("prompt_tokens"))
    else:
        total = getattr(usage, "total_tokens", None)
        if total is None:
            total = getattr(usage, "prompt_tokens", None)
    if isinstance(total, bool) or not isinstance(total, int):
        return None
    return total


def usage_json(results: object) -> dict[str, int] | None:
    """``{"prompt_tokens", "total_tokens"}`` of one call when reported, else None."""
    usage = getattr(results, "usage", None)
    if usage is None:
        return None
    out: dict[str, int] = {}
    for name in ("prompt_tokens", "total_tokens"):
        value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            out[name] = value
    return out or None


# -- output paths --------------------------------------------------------------------------
def _creatable_in(folder: Path, what: str, path: Path) -> None:
    """``folder`` exists, is a folder and is writable; else a usage error naming ``what``."""
    if not folder.exists():
        ancestor = folder
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if ancestor.exists() and not ancestor.is_dir():
            raise UsageError(f"cannot write {what} {path}: {ancestor} is not a folder")
        raise UsageError(f"cannot write {what} {path}: no such folder {folder}")
    if not folder.is_dir():
        raise UsageError(f"cannot write {what} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {what} {path}: no permission to write in {folder}")


def check_output_file(path: Path, what: str) -> None:
    """Refuse, before anything is sent, an output file that could not be written: one that
    is a folder, not writable, or in a folder that does not exist (or is a file)."""
    if path.is_dir():
        raise UsageError(f"cannot write {what} {path}: it is a folder; give a file name")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UsageError(f"cannot write {what} {path}: no permission")
        return
    _creatable_in(path.parent, what, path)


def check_output_folder(path: Path, what: str) -> None:
    """Refuse an output folder that is a file, or that could not be created."""
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write {what} into {path}: no permission")
        return
    if path.exists():
        raise UsageError(f"cannot write {what} into {path}: it is a file, not a folder")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"cannot write {what} into {path}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {what} into {path}: no permission to write in {ancestor}")
