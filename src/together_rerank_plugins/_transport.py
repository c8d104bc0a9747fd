"""The httpx clients under the SDK: call deadline, attempt bound, origin check, fork safety.

We build the SDK's ``httpx.Client`` / ``httpx.AsyncClient`` ourselves (with the SDK's own
defaults for limits, redirects and timeouts) so that one place enforces four promises:

- **Attempt bound.** httpx/httpcore timeouts bound each socket operation, so a server that
  trickles a byte every half second resets the read timeout forever. Our network backend
  wraps httpcore's and gives every connect/read/write ``min(timeout, time left in the
  attempt)``, and fails at once when nothing is left: an attempt ends within ``timeout``
  (and the call within its :class:`Deadline`) whatever the server does, sync and async,
  without a watchdog thread or task. The attempt's expiry travels in a context variable
  that :func:`begin` sets per call and the request hook resets per SDK attempt (it reads
  the SDK's ``x-stainless-retry-count`` header, so a followed redirect stays in its attempt).
- **Call deadline.** The same expiry is capped by the call's :class:`Deadline`; the SDK's
  retry sleep is capped too (:func:`cap_retry_sleep`): a sleep (``Retry-After`` included)
  longer than what is left is not taken, the call ends at once with :class:`DeadlineExceeded`.
- **Origin check.** A redirect to another scheme, host or port is never followed: the
  response hook strips its ``Location`` (httpx then hands the 3xx to the SDK), marks it
  not-to-retry (``x-should-retry: false``, honoured by the SDK) and names the target in
  :data:`REFUSED_REDIRECT_HEADER`, from which ``_errors`` builds a
  :class:`~together_rerank_plugins.CrossOriginRedirectError`. Nothing is sent there.
- **Fork.** Sockets opened by the sync backend are tracked; :func:`forget_sync_sockets`
  (called in a forked child) closes the child's copies of their file descriptors without
  any protocol traffic, so the parent's connections (and TLS sessions) are untouched.

Why by hand: httpx offers per-operation timeouts only, and no library bounds a whole
request over httpcore; the backend interface (``httpcore.NetworkBackend``) is the seam
httpcore itself offers for this. The one private hop is installing it into httpx's
transport (``HTTPTransport._pool._network_backend``): feature-detected, and when absent the
attempt bound degrades to per-operation timeouts (the deadline still caps each of them).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import threading
import time
import weakref
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from ._config import redact_url
from ._deadline import Deadline, DeadlineExceeded
from ._errors import REFUSED_REDIRECT_HEADER

__all__ = [
    "begin",
    "build_async_http_client",
    "build_probe_client",
    "build_sync_http_client",
    "cap_retry_sleep",
    "cut_short",
    "end",
    "forget_sync_sockets",
]

_RETRY_COUNT_HEADER = "x-stainless-retry-count"
# the SDK's own defaults (together._constants), restated: we build the client it would build
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


@dataclass
class _Attempt:
    deadline: Deadline | None
    timeout: float | None
    retry: str | None = None  # the SDK's retry count of the current attempt
    expires_at: float | None = None
    started: bool = field(default=False)
    #: the current attempt's bound is the call's deadline, not its own ``timeout``
    by_deadline: bool = False
    #: the current attempt's last answer (an error status, before the SDK retries it)
    response: httpx.Response | None = None
    #: an attempt failed on its own: an error status, a connection error, or its own
    #: ``timeout`` (not the call's deadline cutting it short)
    own_failure: bool = False


_CURRENT: ContextVar[_Attempt | None] = ContextVar("together_rerank_attempt", default=None)


def begin(deadline: Deadline | None, timeout: float | None) -> Token[_Attempt | None]:
    """Enter one SDK request (all its attempts); :func:`end` with the returned token."""
    return _CURRENT.set(_Attempt(deadline, timeout))


def end(token: Token[_Attempt | None]) -> None:
    _CURRENT.reset(token)


def _start_attempt(request: httpx.Request) -> None:
    state = _CURRENT.get()
    if state is None:
        return
    retry = request.headers.get(_RETRY_COUNT_HEADER)
    if state.started and retry is not None and retry == state.retry:
        return  # a followed redirect: same attempt, same budget
    state.started, state.retry, state.response = True, retry, None
    now = time.monotonic()
    expiry = None if state.timeout is None else now + state.timeout
    state.by_deadline = False
    if state.deadline is not None and (expiry is None or state.deadline.expires_at < expiry):
        expiry, state.by_deadline = state.deadline.expires_at, True
    state.expires_at = expiry
    if expiry is not None:
        # also caps waiting for a pooled connection, which the backend never sees
        left = max(expiry - now, 0.0)
        timeouts = request.extensions.get("timeout")
        if isinstance(timeouts, dict):
            request.extensions["timeout"] = {
                k: left if v is None else min(v, left) for k, v in timeouts.items()
            }


def _left(timeout: float | None, exc: type[Exception]) -> float | None:
    state = _CURRENT.get()
    if state is None or state.expires_at is None:
        return timeout
    left = state.expires_at - time.monotonic()
    if left <= 0:
        raise exc("the attempt's time is up")
    return left if timeout is None else min(timeout, left)


def cap_retry_sleep(client: Any) -> bool:
    """Cap the SDK's retry sleep by the call's deadline (False if this SDK has no hook).

    Wraps the SDK's private ``_calculate_retry_timeout`` (which honours ``Retry-After`` up
    to 60 s) on this client instance only; tests check the hook exists in the pinned SDK.
    """
    original = getattr(client, "_calculate_retry_timeout", None)
    if not callable(original):
        return False

    def capped(*args: Any, **kwargs: Any) -> float:
        seconds: float = original(*args, **kwargs)
        state = _CURRENT.get()
        if state is None:
            return seconds
        # called only after an attempt failed: on its own, or cut by the call's deadline
        deadline = state.deadline
        cut = state.response is None and state.by_deadline and _expired(deadline)
        state.own_failure = state.own_failure or not cut
        if deadline is not None and seconds >= deadline.remaining():
            raise DeadlineExceeded(seconds, state.response)
        return seconds

    client._calculate_retry_timeout = capped
    return True


def _expired(deadline: Deadline | None) -> bool:
    return deadline is not None and deadline.expired()


def cut_short() -> bool:
    """In the SDK request that just failed (between :func:`begin` and :func:`end`): True
    when the call's deadline cut it short with no failure of the endpoint's own (no
    attempt got an error status or a connection error or ran out of its own ``timeout``,
    or nothing was sent). What a circuit breaker may not count against the endpoint when
    another endpoint spent the deadline first (see ``RerankClient._record``)."""
    state = _CURRENT.get()
    if state is None or not state.started:
        return True
    return not state.own_failure and state.response is None and state.by_deadline


def _note_response(response: httpx.Response) -> None:
    state = _CURRENT.get()
    if state is not None:
        state.response = response if response.is_error else None


# -- origin ---------------------------------------------------------------------------------
def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host.lower(), url.port or default


def _refuse_foreign_redirect(origin: tuple[str, str, int | None], response: httpx.Response) -> None:
    if not response.has_redirect_location:
        return
    try:
        target = response.request.url.join(response.headers["location"])
    except (httpx.InvalidURL, ValueError):
        target = None
    if target is not None and _origin(target) == origin:
        return  # same origin: httpx follows it (a new request through the same checks)
    shown = redact_url(str(target)) if target is not None else response.headers["location"]
    del response.headers["location"]
    response.headers["x-should-retry"] = "false"
    response.headers[REFUSED_REDIRECT_HEADER] = shown


# -- network backends -----------------------------------------------------------------------
_SYNC_STREAMS: weakref.WeakSet[_Stream] = weakref.WeakSet()


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        self._pid = os.getpid()
        _SYNC_STREAMS.add(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)
        )
        _SYNC_STREAMS.discard(self)
        return _Stream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def forget(self) -> None:
        """In a forked child: close our copy of the descriptor, sending nothing."""
        sock = self._inner.get_extra_info("socket")
        if sock is not None and self._pid != os.getpid():
            with contextlib.suppress(OSError, ValueError):
                os.close(sock.detach())


#: resolver threads that may wait at once (lookups of distinct hosts); calls for a host
#: whose lookup is already in flight share it
MAX_LOOKUPS = 8


class _Lookup:
    """One ``getaddrinfo`` in flight, in its own daemon thread; every call resolving the
    same host and port waits for it rather than starting another."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None


_LOOKUPS_LOCK = threading.Lock()
_LOOKUPS: dict[tuple[str, int], _Lookup] = {}
_LOOKUP_SLOTS = threading.BoundedSemaphore(MAX_LOOKUPS)


def _forget_lookups() -> None:
    """In a forked child: the parent's resolver threads do not exist here."""
    global _LOOKUPS_LOCK, _LOOKUP_SLOTS
    _LOOKUPS_LOCK = threading.Lock()
    _LOOKUP_SLOTS = threading.BoundedSemaphore(MAX_LOOKUPS)
    _LOOKUPS.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_lookups)


def _lookup_of(host: str, port: int, expires_at: float) -> _Lookup | None:
    """The lookup in flight for ``host``/``port``, started if there is none and a slot
    frees up before ``expires_at``; None when none does."""
    key = (host, port)
    while True:
        with _LOOKUPS_LOCK:
            lookup = _LOOKUPS.get(key)
            if lookup is not None:
                return lookup
            if _LOOKUP_SLOTS.acquire(blocking=False):
                lookup = _LOOKUPS[key] = _Lookup()
                slots = _LOOKUP_SLOTS
                break
        left = expires_at - time.monotonic()
        if left <= 0 or not _LOOKUP_SLOTS.acquire(timeout=left):
            return None
        _LOOKUP_SLOTS.release()  # one freed: take it under the lock (or join a new lookup)

    def run() -> None:
        try:
            lookup.result = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except Exception as exc:
            lookup.result = exc
        finally:
            with _LOOKUPS_LOCK:
                if _LOOKUPS.get(key) is lookup:
                    del _LOOKUPS[key]
            slots.release()
            lookup.done.set()

    try:
        threading.Thread(target=run, name="together-rerank-resolve", daemon=True).start()
    except RuntimeError as exc:  # no thread to be had: this attempt fails, the next retries
        with _LOOKUPS_LOCK:
            if _LOOKUPS.get(key) is lookup:
                del _LOOKUPS[key]
        slots.release()
        raise httpcore.ConnectError(f"could not start a lookup of {host!r}: {exc}") from exc
    return lookup


def _resolve(host: str, port: int, budget: float | None) -> list[str]:
    """The addresses of ``host``, looked up within ``budget`` seconds.

    ``socket.getaddrinfo`` takes no timeout (a slow resolver holds a sync connect for as
    long as it likes, past any ``timeout`` or deadline), so with a budget the lookup runs
    in a daemon thread and we stop waiting for it when the budget is spent: the attempt
    fails with a connect timeout, and the lookup finishes (or not) on its own, holding
    nothing of ours. Calls for the same host share the lookup in flight, and at most
    :data:`MAX_LOOKUPS` run at once (a call waits for a free one within its budget), so a
    hung resolver under a flood of calls holds a few threads, not one per call. An IP
    address, or no budget at all, needs no thread."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return [host]
    except ValueError:
        pass
    if budget is None:
        return [host]  # no bound asked for: the inner backend resolves as usual
    expires_at = time.monotonic() + budget
    lookup = _lookup_of(host, port, expires_at)
    if lookup is None or not lookup.done.wait(max(expires_at - time.monotonic(), 0.0)):
        raise httpcore.ConnectTimeout(f"resolving {host!r} took longer than the attempt's time")
    found = lookup.result
    if isinstance(found, Exception):
        raise httpcore.ConnectError(str(found)) from found
    return list(dict.fromkeys(str(info[4][0]) for info in found))


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        # resolved here, within the attempt's time (the async backend bounds its own
        # lookup with the connect timeout); then each address in turn, as
        # socket.create_connection does
        addresses = _resolve(host, port, _left(timeout, httpcore.ConnectTimeout))
        for i, address in enumerate(addresses):
            try:
                inner = self._inner.connect_tcp(
                    address,
                    port,
                    _left(timeout, httpcore.ConnectTimeout),
                    local_address,
                    socket_options,
                )
            except httpcore.ConnectError:
                if i == len(addresses) - 1:
                    raise
                continue
            return _Stream(inner)
        raise httpcore.ConnectError(f"no address found for {host!r}")  # getaddrinfo gave none

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        return _Stream(
            self._inner.connect_unix_socket(
                path, _left(timeout, httpcore.ConnectTimeout), socket_options
            )
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(
            await self._inner.start_tls(
                ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)
            )
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(
            await self._inner.connect_tcp(
                host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options
            )
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(
            await self._inner.connect_unix_socket(
                path, _left(timeout, httpcore.ConnectTimeout), socket_options
            )
        )

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def forget_sync_sockets() -> None:
    """In a forked child: drop every socket the parent's sync clients had open."""
    for stream in list(_SYNC_STREAMS):
        stream.forget()


def _install_backend(client: httpx.Client | httpx.AsyncClient) -> None:
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        inner = getattr(pool, "_network_backend", None)
        if inner is None or isinstance(inner, (_Backend, _AsyncBackend)):
            continue  # not an httpcore pool (a test transport): nothing to wrap
        if isinstance(inner, httpcore.AsyncNetworkBackend):
            pool._network_backend = _AsyncBackend(inner)  # type: ignore[union-attr]
        elif isinstance(inner, httpcore.NetworkBackend):
            pool._network_backend = _Backend(inner)  # type: ignore[union-attr]


def _client_kwargs(timeout: float | None) -> dict[str, Any]:
    return {
        "timeout": httpx.Timeout(timeout),
        "limits": _LIMITS,
        "follow_redirects": True,
    }


def build_sync_http_client(
    base_url: str, timeout: float | None, transport: Any = None
) -> httpx.Client:
    origin = _origin(httpx.URL(base_url))

    def on_response(response: httpx.Response) -> None:
        _refuse_foreign_redirect(origin, response)
        _note_response(response)

    client = httpx.Client(
        transport=transport,
        event_hooks={"request": [_start_attempt], "response": [on_response]},
        **_client_kwargs(timeout),
    )
    _install_backend(client)
    return client


def build_probe_client(timeout: float) -> httpx.Client:
    """A plain client (no proxy from the environment, no redirects followed) for one
    request outside a rerank call, under the same attempt bound: between :func:`begin` and
    :func:`end`, a request ends within ``timeout`` whatever the server does (a server
    trickling its headers resets httpx's per-read timeout forever)."""
    client = httpx.Client(
        timeout=timeout,
        trust_env=False,
        follow_redirects=False,
        event_hooks={"request": [_start_attempt]},
    )
    _install_backend(client)
    return client


def build_async_http_client(
    base_url: str, timeout: float | None, transport: Any = None
) -> httpx.AsyncClient:
    origin = _origin(httpx.URL(base_url))

    async def on_request(request: httpx.Request) -> None:
        _start_attempt(request)

    async def on_response(response: httpx.Response) -> None:
        _refuse_foreign_redirect(origin, response)
        _note_response(response)

    client = httpx.AsyncClient(
        transport=transport,
        event_hooks={"request": [on_request], "response": [on_response]},
        **_client_kwargs(timeout),
    )
    _install_backend(client)
    return client
