"""The ``together`` SDK clients of one :class:`RerankClient`, and one request through them.

Only this module imports the SDK, and only on first use (it costs about half a second to
import). The sync client is built once; an async one is built lazily for each running event
loop, because an ``httpx.AsyncClient``'s connections are bound to the loop that opened
them, and closed when that loop closes (see :func:`_close_at_loop_shutdown`). Retries (408,
409, 429, 5xx, timeouts, connection errors, honouring ``Retry-After``) are the SDK's own;
the httpx clients under it are ours (``_transport``): attempt bound, call deadline, origin
check on redirects.

After ``os.fork()`` the child forgets every client it inherited (their pooled keep-alive
sockets are the parent's: sharing one, parent and child would read each other's answers)
and opens its own connections on first use.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import functools
import json
import os
import sys
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ._config import Settings
from ._deadline import Deadline, DeadlineExceeded
from ._errors import (
    MalformedResponseError,
    RerankError,
    RerankTimeoutError,
    translate_sdk_error,
)

if TYPE_CHECKING:
    import httpx
    from together import AsyncTogether, Together

__all__ = ["SDKClients"]

#: every live SDKClients, for the fork and exit hooks
_LIVE: weakref.WeakSet[SDKClients] = weakref.WeakSet()
#: clients a forked child inherited: kept (never used, closed or collected) so that nothing
#: in the child touches the parent's connections
_INHERITED: list[Any] = []


class SDKClients:
    """Sync and per-loop async SDK clients sharing one configuration."""

    def __init__(
        self,
        settings: Settings,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._transport = transport
        self._lock = threading.Lock()
        self._sync: Together | None = None
        # one async SDK client per event loop, with the generator that closes it
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[AsyncTogether, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()
        self._sync_finalizer: weakref.finalize[Any, Any] | None = None
        _LIVE.add(self)

    def _forget_after_fork(self) -> None:
        """In a forked child: drop (never close) the inherited clients, new lock."""
        self._lock = threading.Lock()  # another thread may have held it at fork time
        if self._sync_finalizer is not None:
            self._sync_finalizer.detach()  # the child must not close the parent's pool
        _INHERITED.append((self._sync, dict(self._async)))
        self._sync, self._sync_finalizer = None, None
        self._async = weakref.WeakKeyDictionary()

    @property
    def secrets(self) -> tuple[str, ...]:
        """What no message or log line may show: the key, the header values, and the
        credentials of ``base_url`` (as written and as the Basic auth header sent)."""
        _, basic, password = _split_credentials(self.settings.base_url)
        # the token alone: a server may echo it without its "Basic " prefix
        extra = tuple(v for v in (basic and basic.removeprefix("Basic "), password) if v)
        return (self.settings.api_key, *(self.settings.default_headers or {}).values(), *extra)

    def _sdk_kwargs(self) -> dict[str, Any]:
        s = self.settings
        url, basic, _ = _split_credentials(s.base_url)
        headers = s.default_headers
        if basic is not None:
            # httpx turns a URL's user:password into Basic auth (in place of the Bearer key)
            # and logs the whole URL at INFO: send the same header ourselves and give the
            # SDK a URL without credentials, so no library logs them
            headers = {"Authorization": basic, **(headers or {})}
        return {
            "api_key": s.api_key,
            "base_url": url,
            "timeout": s.timeout,
            "max_retries": s.max_retries,
            "default_headers": headers,
        }

    def _new_client(self, cls: Any, build: Any) -> Any:
        from ._transport import cap_retry_sleep

        s = self.settings
        kwargs = self._sdk_kwargs()
        client = cls(**kwargs, http_client=build(kwargs["base_url"], s.timeout, self._transport))
        cap_retry_sleep(client)
        return client

    def _sync_client(self) -> Together:
        client = self._sync
        if client is None:
            with self._lock:
                client = self._sync
                if client is None:
                    from together import Together

                    from ._transport import build_sync_http_client

                    client = self._new_client(Together, build_sync_http_client)
                    self._sync = client
                    # close its pooled connections when this object is collected: without
                    # it, a dropped client's keep-alive socket is GC'd open (ResourceWarning)
                    self._sync_finalizer = weakref.finalize(self, client.close)
        return client

    def warm_up(self) -> None:
        """Build the sync client, and run one request through the whole sending path (the
        SDK's request building, its lazily imported ``together.resources``, our httpx hooks
        and backend, decoding) on a throwaway client whose transport answers in process:
        nothing is sent, and the first real call costs what later calls cost."""
        import httpx
        from together import Together

        from ._transport import build_sync_http_client

        self._sync_client()
        # a URL that says so in the one line httpx logs (at INFO) for the dry request
        kwargs = self._sdk_kwargs() | {"base_url": "http://warm-up.invalid/v1"}
        answer = b'{"results": [{"index": 0, "relevance_score": 0.0}]}'
        dry = httpx.MockTransport(lambda request: httpx.Response(200, content=answer))
        with build_sync_http_client(kwargs["base_url"], self.settings.timeout, dry) as http:
            client = Together(**kwargs, http_client=http)
            response = client.rerank.with_raw_response.create(
                model=self.settings.model, query="warm up", documents=["warm up"]
            )
            self.decode(response.read())

    async def _async_client(self) -> AsyncTogether:
        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is not None:
            return entry[0]
        from together import AsyncTogether

        from ._transport import build_async_http_client

        client: AsyncTogether = self._new_client(AsyncTogether, build_async_http_client)
        # The SDK's first async request computes its platform headers in a worker thread
        # (`asyncify(get_platform)`); give it the value (computed once per process, a few
        # microseconds of reading /etc/os-release) so the async path never starts a thread.
        platform = _sdk_platform()
        if platform is not None:
            client._platform = platform
        closer = _close_at_loop_shutdown(client, weakref.ref(self))
        # no await since the lookup above: no other task of this loop can have raced us
        with self._lock:
            for old in [lp for lp in self._async if lp.is_closed()]:
                del self._async[old]
            self._async[loop] = (client, closer)
        _close_clients_with_loop(loop)
        await closer.asend(None)  # registers with the loop's async-generator shutdown hook
        return client

    def close(self) -> None:
        """Close the sync SDK client's connections (async ones close with :meth:`aclose`)."""
        with self._lock:
            client, self._sync = self._sync, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the SDK client of the running event loop, and the sync one."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._async.pop(loop, None)
        if entry is not None:
            await entry[1].aclose()  # runs the closer's `finally`: closes the SDK client
        self.close()

    # -- one request ---------------------------------------------------------------------
    def error(
        self, exc: BaseException, *, rank_fields: bool = False, not_retried: str | None = None
    ) -> RerankError:
        return translate_sdk_error(
            exc,
            model=self.settings.model,
            base_url=self.settings.shown_base_url,
            secret=self.secrets,
            rank_fields=rank_fields,
            max_retries=self.settings.max_retries,
            not_retried=not_retried,
        )

    def deadline_error(self, deadline: Deadline, *, cut_short: bool = True) -> RerankTimeoutError:
        """The call's deadline ran out before this endpoint answered. ``cut_short``: the
        endpoint did nothing wrong that we saw (nothing sent, or an attempt still within
        its own ``timeout`` when the deadline cut it), which a circuit breaker counts only
        if this endpoint had the call's whole deadline (``RerankClient._record``)."""
        error = RerankTimeoutError(
            f"The rerank call's deadline ({deadline.seconds:g} s, `deadline`) was reached "
            f"before {self.settings.shown_base_url}/v1/rerank answered; no ranking was "
            "returned. Raise `deadline`, or lower `timeout`/`max_retries` so that an attempt "
            "fits in it."
        )
        error._cut_short = cut_short  # type: ignore[attr-defined]
        return error

    def _failure(self, exc: Exception, deadline: Deadline | None, kwargs: Any) -> RerankError:
        import together

        from ._transport import cut_short

        rank_fields = "rank_fields" in kwargs
        if isinstance(exc, DeadlineExceeded) and exc.response is not None and deadline:
            # an error status whose retry would not fit in the deadline: that status's
            # typed error (a 429 stays a RateLimitError, with the server's Retry-After)
            return self._not_retried(exc.response, exc.wait, deadline, rank_fields)
        if isinstance(exc, DeadlineExceeded) or (
            deadline is not None
            and deadline.expired()
            and isinstance(exc, together.APIConnectionError)  # timeouts included
        ):
            return self.deadline_error(deadline, cut_short=cut_short())  # type: ignore[arg-type]
        return self.error(exc, rank_fields=rank_fields)

    def _not_retried(
        self, response: httpx.Response, wait: float | None, deadline: Deadline, rank_fields: bool
    ) -> RerankError:
        import together

        try:
            body: Any = response.json()
        except Exception:  # not JSON, not read: the status alone says enough
            body = None
        status_error = together.APIStatusError(
            f"Error code: {response.status_code}", response=response, body=body
        )
        due = "" if wait is None else f" in {wait:.3g} s"
        note = (
            f"and not retried: the next attempt was due{due}, past what is left of the "
            f"call's deadline ({deadline.seconds:g} s, `deadline`)"
        )
        return self.error(status_error, rank_fields=rank_fields, not_retried=note)

    @staticmethod
    def decode(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a 5,000-digit int
            problem = f"not valid JSON ({exc}"
        except RecursionError:  # e.g. 100,000 nested brackets
            problem = "nested too deeply to decode ("
        # raised outside the `except`: no context chained (a RecursionError's is huge)
        raise MalformedResponseError(
            f"The rerank server's answer is {problem}; {len(raw)} bytes). "
            "No ranking was returned; check `base_url`."
        )

    def send(self, kwargs: dict[str, Any], deadline: Deadline | None = None) -> Any:
        """POST one rerank request; return the decoded JSON answer.

        Each attempt ends within ``timeout``, and all of them (with the retry waits) within
        ``deadline``, whatever the server does (see ``_transport``).
        """
        import together

        from ._transport import begin, end

        client = self._sync_client()
        if deadline is not None and deadline.expired():
            raise self.deadline_error(deadline)
        token = begin(deadline, self.settings.timeout)
        try:
            raw = client.rerank.with_raw_response.create(**kwargs).read()
        except (together.TogetherError, DeadlineExceeded) as exc:
            raise self._failure(exc, deadline, kwargs) from exc
        finally:
            end(token)
        return self.decode(raw)

    async def asend(self, kwargs: dict[str, Any], deadline: Deadline | None = None) -> Any:
        """Async :meth:`send`, on the running loop's client (no worker thread)."""
        import together

        from ._transport import begin, end

        client = await self._async_client()
        if deadline is not None and deadline.expired():
            raise self.deadline_error(deadline)
        token = begin(deadline, self.settings.timeout)
        try:
            response = await client.rerank.with_raw_response.create(**kwargs)
            raw = await response.read()
        except (together.TogetherError, DeadlineExceeded) as exc:
            raise self._failure(exc, deadline, kwargs) from exc
        finally:
            end(token)
        return self.decode(raw)


def _split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without ``user:password@``, the Basic auth header httpx would have built
    from them (or None), and the password as written (or None)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    pair = f"{unquote(user)}:{unquote(password)}".encode()
    basic = "Basic " + base64.b64encode(pair).decode("ascii")
    return urlunsplit(parts._replace(netloc=host)), basic, password or None


@functools.cache
def _sdk_platform() -> Any:
    """The SDK's platform header value; None if a future SDK moved it (then the SDK
    computes it itself, in a worker thread, once per event loop)."""
    try:
        from together._base_client import get_platform

        return get_platform()
    except (ImportError, AttributeError):
        return None


async def _close_at_loop_shutdown(
    client: AsyncTogether, owner: weakref.ref[SDKClients]
) -> AsyncGenerator[None, None]:
    """Close ``client`` when its event loop shuts down.

    asyncio has no "loop closing" callback, but ``asyncio.run`` (and every runner that calls
    ``loop.shutdown_asyncgens()``: pytest-asyncio, uvicorn, Jupyter) finalises the async
    generators started on the loop. Starting this one right after the client is built
    makes its ``finally`` close the client's connections on the loop that opened them, so
    ``asyncio.run`` per request leaks no sockets. Loops closed without that step (LlamaIndex's
    ``asyncio_run`` in a worker thread) or never closed (``nest_asyncio``) are covered by
    :func:`_close_clients_with_loop` and the exit hook, which run this generator to its end
    on its loop. No library offers this, hence by hand.
    """
    try:
        yield
    finally:
        # Finalised without a running loop (garbage-collected with no asyncgen hooks): an
        # await is impossible there, so leave the sockets to the hooks above.
        if _running_loop() is not None:
            await client.close()
            parent = owner()
            if parent is not None:
                with parent._lock:
                    entry = parent._async.get(asyncio.get_running_loop())
                    if entry is not None and entry[0] is client:
                        del parent._async[asyncio.get_running_loop()]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _finish_closers(loop: asyncio.AbstractEventLoop) -> None:
    """Close every client of ``loop``, on ``loop`` (which must be idle and open)."""
    closers = []
    for owner in list(_LIVE):
        with owner._lock:
            entry = owner._async.pop(loop, None)
        if entry is not None:
            closers.append(entry[1])
    for closer in closers:
        with contextlib.suppress(Exception):
            loop.run_until_complete(closer.aclose())


_PATCHED_LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _close_clients_with_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Make ``loop.close()`` close our clients first, on the loop, even when its runner
    skipped ``shutdown_asyncgens()`` (LlamaIndex's ``asyncio_run`` in a worker thread): a
    per-instance wrapper of ``close``. Loops whose ``close`` cannot be replaced (uvloop)
    rely on the async-generator hook alone."""
    if loop in _PATCHED_LOOPS:
        return
    own = loop.__dict__.get("close") if hasattr(loop, "__dict__") else None
    cls_close = type(loop).close
    ref = weakref.ref(loop)

    def close() -> None:
        lp = ref()
        if lp is not None and not lp.is_running() and not lp.is_closed():
            _finish_closers(lp)
        if own is not None:
            own()
        elif lp is not None:
            cls_close(lp)

    try:
        loop.close = close  # type: ignore[method-assign]
    except (AttributeError, TypeError):
        return
    _PATCHED_LOOPS.add(loop)


@atexit.register
def _close_at_exit() -> None:
    """At exit, close the clients of loops that were never closed (``nest_asyncio``'s
    ``asyncio.run`` reuses one loop and never closes it), on their loop, while it can run."""
    loops = {lp for owner in list(_LIVE) for lp in list(owner._async)}
    for loop in loops:
        if not loop.is_running() and not loop.is_closed():
            _finish_closers(loop)


def _after_fork_in_child() -> None:
    for owner in list(_LIVE):
        owner._forget_after_fork()
    transport = sys.modules.get(f"{__package__}._transport")
    if transport is not None:
        transport.forget_sync_sockets()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
