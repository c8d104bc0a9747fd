"""A progress bar for long runs (the CLI's ``batch`` and ``eval``, the evaluation library):
tqdm on stderr, only when asked and stderr is a terminal (so logs and pipes stay clean)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar"]


class _NoBar:
    def update(self, n: int = 1) -> None:
        return

    def close(self) -> None:
        return


def progress_bar(enabled: bool, total: int, initial: int = 0, *, unit: str) -> Any:
    """A tqdm bar on stderr, or an object with the same ``update``/``close`` that shows nothing."""
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        from ._install import install_hint

        print(
            f"note: no progress bar (tqdm is not installed; run {install_hint('cli')})",
            file=sys.stderr,
        )
        return _NoBar()
    return tqdm(
        total=total, initial=initial, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True
    )
