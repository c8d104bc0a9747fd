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
    """``send`` each request, ``max_concurrency`` at a time; answers in request order."""
    failed = threading.Event()

    def one(kwargs: dict[str, Any]) -> Any:
        if failed.is_set():  # dequeued after another batch failed: never sent
            return None
        try:
            return send(kwargs)
        except BaseException:
            failed.set()
            raise

    from concurrent.futures import ThreadPoolExecutor  # only when a call has batches

    workers = min(max_concurrency, len(requests))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="together-rerank")
    try:
        # map() re-raises the first error in order; a skipped None always comes after it
        return list(pool.map(one, requests))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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
