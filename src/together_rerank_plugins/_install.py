"""How to install an extra, as every message that suggests one says it (one place).

The package is not published on PyPI yet, so installing it by name finds nothing: the line
that works today installs from a clone of the repository. When it is published, this is the
one place to change.
"""

from __future__ import annotations

__all__ = ["install_hint", "install_line"]


def install_line(extra: str) -> str:
    """``pip install ".[extra]"``: the command, run from a clone of the repository."""
    return f'pip install ".[{extra}]"'


def install_hint(extra: str) -> str:
    """The command in backticks, and where to run it."""
    return f"`{install_line(extra)}` in your clone of together-rerank-plugins"
