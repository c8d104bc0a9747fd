"""The wall-clock budget of one call (``deadline=``), as one explicit value.

``RerankClient.execute``/``aexecute`` compute a :class:`Deadline` once per call and pass it
to every send, so one budget covers every batch, attempt, backoff and ``Retry-After`` wait
of the call (and can be handed along to whatever else the call tries). Kept apart from
``_transport`` so that computing it imports no HTTP library.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Deadline", "DeadlineExceeded"]


@dataclass(frozen=True)
class Deadline:
    """``seconds`` of budget, expiring at ``expires_at`` on the ``time.monotonic()`` clock."""

    seconds: float
    expires_at: float

    @classmethod
    def start(cls, seconds: float | None) -> Deadline | None:
        """A deadline ``seconds`` from now, or None (no budget) for None."""
        return None if seconds is None else cls(seconds, time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.expires_at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0


class DeadlineExceeded(Exception):  # an internal signal, translated before users see it
    """Raised (through the SDK's retry loop) when a call's deadline leaves no time.

    From the SDK's retry sleep, ``wait`` is the sleep that did not fit and ``response``
    the error answer (an ``httpx.Response``) of the attempt that would have been retried,
    or None when that attempt got no answer (a timeout, a connection error)."""

    def __init__(self, wait: float | None = None, response: Any = None) -> None:
        super().__init__("the call's deadline leaves no time")
        self.wait = wait
        self.response = response
