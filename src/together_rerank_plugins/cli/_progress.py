"""The progress bar of the long-running commands (``batch``, ``eval``): tqdm on stderr, only
when stderr is a terminal (so logs and pipes stay clean), off with ``--no-progress``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._install import install_hint

__all__ = ["add_progress_flag", "progress_bar"]


class _NoBar:
    def update(self, n: int = 1) -> None:
        return

    def close(self) -> None:
        return


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is also off when stderr is not a terminal)",
    )


def progress_bar(enabled: bool, total: int, initial: int = 0, *, unit: str) -> Any:
    """A tqdm bar on stderr, or an object with the same ``update``/``close`` that shows nothing."""
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        print(
            f"note: no progress bar (tqdm is not installed; run {install_hint('cli')})",
            file=sys.stderr,
        )
        return _NoBar()
    return tqdm(
        total=total, initial=initial, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True
    )
