"""Sending a call's batches concurrently: threads for the sync path, tasks for the async.

Used only when one call has more documents than one request takes. A batch that fails stops
the call: batches not yet sent are never sent, and (async) those in flight are cancelled.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["asend_batches", "send_batches"]


def send_batches(
    send: Callable[[dict[str, Any]], Any], requests: list[dict[str, Any]], max_concurrency: int
) -> list[Any]:
    """``send`` each request, ``max_concurrency`` at a time; answers in request order.

    On failure it raises the error that happened first (as the async path does), not the
    first in request order: a batch cut off by the deadline after another batch's 503 must
    not hide the 503 (from the caller, and from the endpoint's breaker). A batch already in
    flight cannot be interrupted on this path: the call returns when it ends, within its
    attempt's ``timeout`` and the call's deadline, so no thread is left running."""
    lock = threading.Lock()
    errors: list[BaseException] = []  # in the order they happened

    def one(kwargs: dict[str, Any]) -> Any:
        if errors:  # dequeued after another batch failed: never sent
            return None
        try:
            return send(kwargs)
        except BaseException as exc:
            with lock:
                errors.append(exc)
            raise

    from concurrent.futures import ThreadPoolExecutor, wait  # only when a call has batches

    workers = min(max_concurrency, len(requests))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="together-rerank")
    try:
        futures = [pool.submit(one, kwargs) for kwargs in requests]
        wait(futures)  # after a failure the batches not yet sent return at once
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        raise errors[0]
    return [f.result() for f in futures]


async def asend_batches(
    asend: Callable[[dict[str, Any]], Awaitable[Any]],
    requests: list[dict[str, Any]],
    max_concurrency: int,
) -> list[Any]:
    """Async :func:`send_batches`, on the running loop (no thread)."""
    gate = asyncio.Semaphore(max_concurrency)
    failed = False

    async def one(kwargs: dict[str, Any]) -> Any:
        nonlocal failed
        async with gate:
            if failed:  # waited for a slot while another batch failed: never sent
                return None
            try:
                return await asend(kwargs)
            except BaseException:
                failed = True
                raise

    tasks = [asyncio.ensure_future(one(kwargs)) for kwargs in requests]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:  # on the first error (or cancellation), stop the others
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
