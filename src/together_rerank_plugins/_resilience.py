"""Failover: when the primary endpoint fails, score the same call on the next endpoint.

:meth:`RerankClient.execute` calls :func:`failover` (or :func:`afailover`) once the primary
has failed with an error that fallback covers (a timeout, a connection error, 429 or 5xx
after retries, a malformed answer, an open circuit breaker). Each ``failover=`` client is
tried in order; the first that answers scores the call. If every one fails, the primary's
``on_error`` decides: raise the last error, or fall back to the retrieval order.

What a failover endpoint takes from where:

- **its own configuration**: key, ``base_url``, ``model``, ``timeout``, ``max_retries``,
  ``circuit_breaker``, ``transport``, batch size and concurrency, long-document policy and
  token budget (they belong to its model), its ``cache``, and its ``deadline`` (its part
  of the call ends within it, counted from its turn, and within what is left of the
  primary's);
- **the call**: query, documents, ``top_n``, ``rank_fields``, ``score_threshold``, and the
  primary's ``dedupe`` (it shapes the answer the caller gets back);
- not used: its own ``on_error`` and ``failover`` (the chain is the primary's, one level).

A failover endpoint that cannot serve a call (an Mxbai model and ``rank_fields``) is
skipped for that call, nothing sent (a WARNING the first time): the chain goes on to the
next endpoint, then to the primary's ``on_error`` with the last real failure.

Scores are never mixed: the call is planned afresh for the failover endpoint, so every
score of the ranking comes from that endpoint (or its own cache). Scores of a primary
batch that answered before another batch failed, and the primary's cached scores, are
dropped. Failover scores are written to the failover client's own cache (its keys carry its
model), never to the primary's.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ._breaker import CircuitBreaker
from ._config import accepts_rank_fields
from ._deadline import Deadline
from ._errors import (
    CircuitOpenError,
    RerankConfigError,
    RerankError,
    RerankInputError,
    needs_fix,
)
from ._plan import CallPlan
from ._results import RerankResults

if TYPE_CHECKING:
    from ._client import RerankClient

__all__ = [
    "afailover",
    "check_one_breaker_per_endpoint",
    "failover",
    "failover_clients",
    "fair_share",
    "replan",
]

logger = logging.getLogger("together_rerank_plugins")


def replan(plan: CallPlan, client: RerankClient) -> CallPlan:
    """The same call, planned from scratch for ``client`` (its model, limits and cache)."""
    spec = plan.spec
    if spec.rank_fields and not accepts_rank_fields(client.model, client.model_family):
        raise RerankInputError(
            f"The failover endpoint {client.endpoint} cannot rank object documents with "
            "`rank_fields` (Llama-Rank endpoints only); give it a Llama-Rank model or call "
            "without `rank_fields`."
        )
    options = replace(client._plan_options(spec), dedupe=plan.options.dedupe)
    return CallPlan(spec, options)


#: failover clients already reported as unable to serve some calls (one WARNING each)
_NOTED_UNABLE: weakref.WeakSet[Any] = weakref.WeakSet()


def _planned_for(plan: CallPlan, client: RerankClient) -> CallPlan | None:
    """``plan`` planned for the failover ``client``, or None when that endpoint cannot
    serve this call (an Mxbai endpoint and ``rank_fields``): it is skipped, and the chain
    goes on to the next endpoint or to ``on_error``. Said once per client at WARNING (it
    is a configuration the caller may want to change), then at DEBUG."""
    try:
        return replan(plan, client)
    except RerankInputError as exc:
        _unable(client, exc)
        return None


def _unable(client: RerankClient, exc: RerankInputError) -> None:
    """Say that the failover ``client`` is skipped because it cannot serve this call."""
    sdk = client._sdk  # one per configuration: with_deadline clones share it
    first = sdk not in _NOTED_UNABLE
    _NOTED_UNABLE.add(sdk)
    logger.log(
        logging.WARNING if first else logging.DEBUG,
        "Skipping the failover endpoint %s, which cannot serve this call: %s",
        client.endpoint,
        exc,
    )


def _moving_on(source: RerankClient, target: RerankClient, error: RerankError) -> None:
    # an open breaker was already announced once, when it opened: do not repeat it per call
    level = logging.INFO if isinstance(error, CircuitOpenError) else logging.WARNING
    logger.log(
        level,
        "Rerank failed on %s (%s: %s); trying the failover endpoint %s",
        source.endpoint,
        type(error).__name__,
        error,
        target.endpoint,
    )


def _answered(results: RerankResults, client: RerankClient) -> RerankResults:
    results.failed_over = True
    logger.debug("Rerank served by the failover endpoint %s", client.endpoint)
    return results


def _budget(client: RerankClient, deadline: Deadline | None) -> tuple[Deadline | None, bool]:
    """The deadline the failover ``client`` is tried under, and whether its breaker is
    charged when that runs out: the call's ``deadline``, or the client's own ``deadline``
    (from now) when that ends sooner (then it had its whole own deadline: charged)."""
    own = Deadline.start(client.deadline)
    if own is not None and (deadline is None or own.expires_at <= deadline.expires_at):
        return own, True
    return deadline, fair_share(deadline)


def fair_share(deadline: Deadline | None) -> bool:
    """Whether an endpoint tried now is charged (by its breaker) if ``deadline`` runs out
    while it is tried: when it still has at least half of it. The first endpoint of a call
    has it whole, unless the caller shares the deadline with other work
    (``execute(plan, deadline)``) that left it nearly spent: an endpoint given 20 ms and
    cut short is not at fault. A failover endpoint left less than half, behind an endpoint
    that used the rest (a hanging primary whose ``timeout`` is half the deadline, as
    docs/production.md recommends), is not charged for being cut short; one given most of
    the deadline that still did not answer is (else a hanging failover whose ``timeout``
    exceeds the deadline, behind a primary failing fast, would never open its breaker, and
    every call would wait the deadline out on it)."""
    return deadline is None or deadline.remaining() >= deadline.seconds / 2


def failover(
    primary: RerankClient, plan: CallPlan, error: RerankError, deadline: Deadline | None = None
) -> RerankResults:
    """Try each of ``primary.failover`` in order after the primary failed with ``error``.

    The whole chain runs inside the primary's ``execute`` call, so a whole-call deadline
    around it covers every endpoint; an endpoint reached with no time left fails like any
    other (and its breaker counts it only if it was sent something).
    """
    source = primary
    for client in primary.failover:
        own = _planned_for(plan, client)
        if own is None:
            continue
        _moving_on(source, client, error)
        budget, charged = _budget(client, deadline)
        try:
            results = client._attempt(own, budget, whole_deadline=charged)
            return _answered(results, client)
        except RerankInputError as exc:
            # its own limits refuse what the primary took (a smaller token budget with
            # long_documents="error"), raised while planning, before anything is sent:
            # an endpoint that cannot serve this call, skipped like one in _planned_for
            _unable(client, exc)
        except RerankError as exc:
            if needs_fix(exc):  # this endpoint's configuration is wrong: say so
                raise
            source, error = client, exc
    return primary._failed(plan, error)


async def afailover(
    primary: RerankClient, plan: CallPlan, error: RerankError, deadline: Deadline | None = None
) -> RerankResults:
    """Async :func:`failover`."""
    source = primary
    for client in primary.failover:
        own = _planned_for(plan, client)
        if own is None:
            continue
        _moving_on(source, client, error)
        budget, charged = _budget(client, deadline)
        try:
            results = await client._aattempt(own, budget, whole_deadline=charged)
            return _answered(results, client)
        except RerankInputError as exc:
            # its own limits refuse what the primary took (a smaller token budget with
            # long_documents="error"), raised while planning, before anything is sent:
            # an endpoint that cannot serve this call, skipped like one in _planned_for
            _unable(client, exc)
        except RerankError as exc:
            if needs_fix(exc):
                raise
            source, error = client, exc
    return primary._failed(plan, error)


def check_one_breaker_per_endpoint(
    breaker: CircuitBreaker | None, failover: tuple[RerankClient, ...]
) -> None:
    """Refuse one breaker for two endpoints of a failover chain: the endpoint that answers
    would reset the count of the one that fails, whose breaker then never opens (and every
    call would pay for its failure)."""
    seen = [] if breaker is None else [breaker]
    for i, client in enumerate(failover):
        other = client.circuit_breaker
        if other is not None and any(other is b for b in seen):
            raise RerankConfigError(
                f"failover[{i}] has the same circuit_breaker as an earlier endpoint of the "
                "chain; give each endpoint its own CircuitBreaker (one shared breaker would "
                "be kept closed by the endpoint that answers)."
            )
        if other is not None:
            seen.append(other)


def failover_clients(failover: Any) -> tuple[RerankClient, ...]:
    """The ``failover=`` argument as a tuple of clients, or :class:`RerankConfigError`."""
    from ._client import RerankClient  # at call time: _client imports this module

    if isinstance(failover, RerankClient):
        return (failover,)
    try:
        if isinstance(failover, (str, bytes)):
            raise TypeError
        clients = tuple(failover or ())
    except TypeError:
        raise RerankConfigError(
            f"`failover` must be a sequence of RerankClient; got {type(failover).__name__}."
        ) from None
    for i, client in enumerate(clients):
        if not isinstance(client, RerankClient):
            raise RerankConfigError(
                f"failover[{i}] is a {type(client).__name__}; pass RerankClient objects (each "
                "with its own key, base_url and model)."
            )
    return clients
