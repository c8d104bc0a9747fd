"""A circuit breaker: stop calling an endpoint that keeps failing, probe it now and then.

States (``CircuitBreaker.state``)::

    closed ──(failure_threshold consecutive failed calls)──▶ open
    open ──(recovery_time elapsed: the next call is let through as a probe)──▶ half_open
    half_open ──(the probe succeeds)──▶ closed
    half_open ──(the probe fails)──▶ open (for another recovery_time)

While open, and while a half-open probe is in flight, calls raise :class:`CircuitOpenError`
before anything is sent, so ``on_error="fallback"`` (or ``failover=``) answers at once.

Only failures that fallback covers count (timeouts, connection errors, 429 and 5xx after the
SDK's retries, malformed answers). Errors that need a fix (401/403, 400/422, 404, 402, bad
input) neither count nor reset the count: they say nothing about whether the endpoint is up.
Nor does a call's ``deadline`` running out while a failover endpoint was tried with less
than half of it (an earlier endpoint used the rest), before any attempt reached the
endpoint's own ``timeout``:
the client reports that as neutral (``RerankClient._record``; docs/production.md, "What
counts against a breaker").

Written by hand (about 150 lines) because the breaker libraries on PyPI (pybreaker,
circuitbreaker, aiobreaker) each serve only sync or only async code, bind to one event
loop or hold state in module globals; this one is a plain object under one
``threading.Lock`` (never held across an ``await``), so one breaker can be shared by
threads, tasks and event loops alike.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ._errors import CircuitOpenError, RerankConfigError

__all__ = ["CircuitBreaker"]

logger = logging.getLogger("together_rerank_plugins")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
#: outcomes of one call, as the client reports them
SUCCESS, FAILURE, NEUTRAL = "success", "failure", "neutral"


class CircuitBreaker:
    """Fail fast while an endpoint is down; let one probe through every ``recovery_time``.

    Pass one to ``RerankClient(circuit_breaker=...)`` or to either adapter. Every client or
    adapter given the same object shares its state (so share one per endpoint, not one per
    request); it is safe to use from threads, tasks and several event loops at once. Copies
    (``copy.copy``/``deepcopy``, and so the adapters' copies) share it too; a pickled breaker
    comes back with its settings and a fresh, closed state.

    - ``failure_threshold`` (default 5): consecutive failed calls that open it. A call
      already includes the SDK's retries (3 attempts by default), so 5 failed calls are 15
      failed attempts in a row: an outage, not a blip. Lower it when each failed call is
      expensive for your users (say 3 with a large ``timeout``).
    - ``recovery_time`` (default 30 s): how long it stays open before one call probes the
      endpoint. Overloaded services typically shed load for tens of seconds; a probe every
      30 s costs at most one slow call per 30 s per breaker.
    - ``clock``: a function returning seconds (default ``time.monotonic``), for tests.

    Example::

        >>> from together_rerank_plugins import CircuitBreaker
        >>> now = [0.0]
        >>> breaker = CircuitBreaker(failure_threshold=2, recovery_time=10, clock=lambda: now[0])
        >>> for _ in range(2):  # what a client does around each call that fails
        ...     probe = breaker.admit()
        ...     breaker.record(probe, "failure")
        >>> breaker.state
        'open'
        >>> now[0] = 10.0
        >>> breaker.state  # the next call is let through as a probe
        'half_open'
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_time: float = 30.0,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int):
            raise RerankConfigError(
                f"`failure_threshold` must be an int >= 1; got {failure_threshold!r}."
            )
        if failure_threshold < 1:
            raise RerankConfigError(
                f"`failure_threshold` must be an int >= 1; got {failure_threshold!r}."
            )
        if (
            isinstance(recovery_time, bool)
            or not isinstance(recovery_time, (int, float))
            or not math.isfinite(recovery_time)
            or recovery_time < 0
        ):
            raise RerankConfigError(
                f"`recovery_time` must be a finite number of seconds >= 0; got {recovery_time!r}."
            )
        if clock is not None and not callable(clock):
            raise RerankConfigError("`clock` must be a function returning seconds.")
        self.failure_threshold = failure_threshold
        self.recovery_time = float(recovery_time)
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0  # consecutive failed calls while closed
        self._opened_at = 0.0
        self._probing = False  # a half-open probe is in flight
        _LIVE.add(self)

    def _after_fork_in_child(self) -> None:
        # a thread of the parent may have held the lock, or had a probe in flight, at the
        # fork: that thread does not exist here, so neither would ever be released
        self._lock = threading.Lock()
        self._probing = False

    # -- reading -------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (open, with ``recovery_time``
        elapsed: the next call probes, or a probe is in flight)."""
        with self._lock:
            return self._current()

    @property
    def failures(self) -> int:
        """Consecutive failed calls counted while closed."""
        return self._failures

    def _current(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.recovery_time:
            return HALF_OPEN
        return self._state

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(failure_threshold={self.failure_threshold}, "
            f"recovery_time={self.recovery_time}, state={self.state!r})"
        )

    # -- sharing -------------------------------------------------------------------------
    def __copy__(self) -> CircuitBreaker:
        return self  # shared state is the point: copies are the same breaker

    def __deepcopy__(self, memo: dict[int, Any]) -> CircuitBreaker:
        return self

    def __reduce__(self) -> Any:
        # the lock cannot cross processes, and neither can "the endpoint is down" (another
        # process may reach it fine): the settings travel, the state starts closed
        clock = None if self._clock is time.monotonic else self._clock
        return (_rebuild, (self.failure_threshold, self.recovery_time, clock))

    # -- the protocol a client follows around each call -----------------------------------
    def admit(self, where: str = "the rerank endpoint") -> bool:
        """Before sending: raise :class:`CircuitOpenError` while open (or while another
        call probes); return True when this call is the half-open probe. Every admitted
        call must be followed by one :meth:`record` with the value returned here."""
        message = None
        with self._lock:
            state = self._current()
            if state == CLOSED:
                return False
            if state == HALF_OPEN and not self._probing:
                self._state = HALF_OPEN
                self._probing = True
                message = "half-open: letting one call through to probe %s"
            else:
                wait = max(0.0, self._opened_at + self.recovery_time - self._clock())
        if message is not None:
            logger.info("Circuit breaker " + message, where)
            return True
        probing = "a probe call is in flight" if state == HALF_OPEN else f"probes in {wait:.1f} s"
        raise CircuitOpenError(
            f"The circuit breaker for {where} is open after {self.failure_threshold} "
            f"consecutive failed calls, so nothing was sent ({probing}). Use "
            'on_error="fallback" or failover= to answer meanwhile.'
        )

    def record(self, probe: bool, outcome: str, where: str = "the rerank endpoint") -> None:
        """After an admitted call: its ``outcome`` is ``"success"``, ``"failure"`` (a kind
        that fallback covers) or ``"neutral"`` (an error that needs a fix, a cancellation:
        neither counts). Only the probe's outcome moves a half-open breaker."""
        message = None
        with self._lock:
            if probe:
                self._probing = False
                if outcome == SUCCESS:
                    self._state, self._failures = CLOSED, 0
                    message = (logging.INFO, "Circuit breaker closed: %s answered the probe")
                elif outcome == FAILURE:
                    self._state, self._opened_at = OPEN, self._clock()
                    message = (
                        logging.WARNING,
                        "Circuit breaker reopened: the probe of %s failed; calls fail at "
                        f"once for {self.recovery_time:g} s",
                    )
                # neutral: stays half-open, and the next call probes
            elif self._state == CLOSED:
                if outcome == SUCCESS:
                    self._failures = 0
                elif outcome == FAILURE:
                    self._failures += 1
                    if self._failures >= self.failure_threshold:
                        self._state, self._opened_at = OPEN, self._clock()
                        message = (
                            logging.WARNING,
                            f"Circuit breaker opened after {self._failures} consecutive "
                            "failed calls to %s; calls fail at once for "
                            f"{self.recovery_time:g} s",
                        )
            # open or half-open: a call admitted earlier, finishing late, changes nothing
        if message is not None:
            logger.log(message[0], message[1], where)

    def reset(self) -> None:
        """Close the breaker and forget the failures (e.g. after fixing the endpoint)."""
        with self._lock:
            changed = self._state != CLOSED
            self._state, self._failures, self._probing = CLOSED, 0, False
        if changed:
            logger.info("Circuit breaker closed by reset()")


def _rebuild(
    failure_threshold: int, recovery_time: float, clock: Callable[[], float] | None
) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold, recovery_time, clock=clock)


#: every live breaker, for the fork hook
_LIVE: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for breaker in list(_LIVE):
        breaker._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
