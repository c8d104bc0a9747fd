"""The progress bar of the long-running commands (``batch``, ``eval``): tqdm on stderr, only
when stderr is a terminal (so logs and pipes stay clean), off with ``--no-progress``."""

from __future__ import annotations

import argparse

from .._progress import progress_bar

__all__ = ["add_progress_flag", "progress_bar"]


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is also off when stderr is not a terminal)",
    )
