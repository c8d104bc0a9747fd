"""The evaluation's errors, and the message for a missing optional dependency."""

from __future__ import annotations

from .._errors import RerankError

__all__ = ["EXTRA", "EvaluationError", "missing"]

#: the extra that installs everything the evaluation imports
EXTRA = "eval"


class EvaluationError(RerankError, ValueError):
    """The dataset, retriever or arguments of an evaluation cannot work (the message says
    what to change). Nothing was sent, or nothing more will be."""


def missing(module: str) -> ImportError:
    """The one-line error for a missing optional package (``.name`` is the module)."""
    from .._install import install_hint

    return ImportError(
        f"the evaluation needs the `{module}` package: run {install_hint(EXTRA)}",
        name=module,
    )
