"""The ``together-rerank`` command line: ``rerank``, ``batch``, ``eval`` and ``demo``.

Installed as the ``together-rerank`` console script, also runnable as
``python -m together_rerank_plugins.cli``. See ``docs/cli.md``.

Every command but ``demo`` takes the library's configuration as flags (``--model``,
``--base-url``, ``--timeout``, ...) over the same environment variables; ``--offline`` uses
the embedded lexical test endpoint in process, and the first line of output says which mode
ran. Exit codes: 0 success, 1 a library or run-time error (one line on stderr), 2 a usage
error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import RerankError, __version__
from .._console import error_line, run_console
from ._common import CliError

__all__ = ["build_parser", "main"]

PROG = "together-rerank"

DEMO_HELP = (
    "the README's demo: retrieve 20 candidates per question through LlamaIndex and "
    "LangChain, rerank, compare (arguments are passed on: --offline, --questions N, --top-n N)"
)


def build_parser() -> argparse.ArgumentParser:
    from . import _batch, _eval, _rerank

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Rerank with Together (LlamaRank or your dedicated endpoint): rank "
        "documents, batch-rerank JSONL with resume, and measure what reranking buys on your "
        "own data. Add --offline to any command to use the embedded lexical test endpoint.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _rerank.add_parser(sub)
    _batch.add_parser(sub)
    _eval.add_parser(sub)
    sub.add_parser("demo", help=DEMO_HELP, add_help=False)  # dispatched before parsing
    return parser


def _demo(argv: list[str]) -> int:
    """The README's main job, as `python -m together_rerank_plugins.demo`: without a key it
    runs offline against the embedded endpoint and says so on its first line (a demo must
    run on a fresh machine); the other commands refuse instead, as they process your data."""
    from .. import demo

    return demo.main(argv, prog=f"{PROG} demo")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (the console script exits with it)."""
    return run_console(lambda: _run(argv))


def _run(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] == "demo":
            return _demo(args_list[1:])
        args = build_parser().parse_args(args_list)
        code: int = args.handler(args)
        return code
    except CliError as exc:
        print(error_line(exc), file=sys.stderr)
        return exc.code
    except RerankError as exc:
        print(error_line(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
