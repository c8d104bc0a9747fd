"""The ``together`` SDK clients of one :class:`RerankClient`, and one request through them.

Only this module imports the SDK, and only on first use (it costs about half a second to
import). The sync client is built once; an async one is built lazily for each running event
loop, because an ``httpx.AsyncClient``'s connections are bound to the loop that opened
them, and closed when that loop shuts down. Retries (408, 409, 429, 5xx, timeouts,
connection errors, honouring ``Retry-After``) are the SDK's own.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from ._config import Settings
from ._errors import MalformedResponseError, RerankError, translate_sdk_error

if TYPE_CHECKING:
    import httpx
    from together import AsyncTogether, Together

__all__ = ["SDKClients"]


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

    def _sdk_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            "api_key": s.api_key,
            "base_url": s.base_url,
            "timeout": s.timeout,
            "max_retries": s.max_retries,
            "default_headers": s.default_headers,
        }

    def _sync_client(self) -> Together:
        client = self._sync
        if client is None:
            with self._lock:
                client = self._sync
                if client is None:
                    from together import Together

                    kwargs = self._sdk_kwargs()
                    if self._transport is not None:
                        import httpx

                        kwargs["http_client"] = httpx.Client(
                            transport=self._transport  # type: ignore[arg-type]
                        )
                    client = self._sync = Together(**kwargs)
                    # close its pooled connections when this object is collected: without
                    # it, a dropped client's keep-alive socket is GC'd open (ResourceWarning)
                    weakref.finalize(self, client.close)
        return client

    async def _async_client(self) -> AsyncTogether:
        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is not None:
            return entry[0]
        from together import AsyncTogether

        kwargs = self._sdk_kwargs()
        if self._transport is not None:
            import httpx

            kwargs["http_client"] = httpx.AsyncClient(
                transport=self._transport  # type: ignore[arg-type]
            )
        client = AsyncTogether(**kwargs)
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
    def error(self, exc: BaseException, *, rank_fields: bool = False) -> RerankError:
        return translate_sdk_error(
            exc,
            model=self.settings.model,
            base_url=self.settings.base_url,
            secret=(self.settings.api_key, *(self.settings.default_headers or {}).values()),
            rank_fields=rank_fields,
        )

    @staticmethod
    def decode(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError
            raise MalformedResponseError(
                f"The rerank server's answer is not valid JSON ({exc}; {len(raw)} bytes). "
                "No ranking was returned; check `base_url`."
            ) from None

    def send(self, kwargs: dict[str, Any]) -> Any:
        """POST one rerank request; return the decoded JSON answer."""
        import together

        client = self._sync_client()
        try:
            raw = client.rerank.with_raw_response.create(**kwargs).read()
        except together.TogetherError as exc:
            raise self.error(exc, rank_fields="rank_fields" in kwargs) from exc
        return self.decode(raw)

    async def asend(self, kwargs: dict[str, Any]) -> Any:
        """Async :meth:`send`, on the running loop's client (no worker thread)."""
        import together

        client = await self._async_client()
        try:
            response = await client.rerank.with_raw_response.create(**kwargs)
            raw = await response.read()
        except together.TogetherError as exc:
            raise self.error(exc, rank_fields="rank_fields" in kwargs) from exc
        return self.decode(raw)


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
    ``asyncio.run`` per request leaks no sockets. No library offers this, hence by hand.
    """
    try:
        yield
    finally:
        await client.close()
        parent = owner()
        if parent is not None:
            with parent._lock:
                entry = parent._async.get(asyncio.get_running_loop())
                if entry is not None and entry[0] is client:
                    del parent._async[asyncio.get_running_loop()]
