"""The shared rerank client: configuration, SDK clients, one validated call.

Only this module imports the ``together`` SDK, and only on first use (it costs about half a
second to import). The sync SDK client is built once per :class:`RerankClient`; an async one is
built lazily for each running event loop, because an ``httpx.AsyncClient``'s connections are
bound to the loop that opened them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import weakref
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

from ._config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    Settings,
    resolve_settings,
)
from ._errors import MalformedResponseError, RerankError, translate_sdk_error
from ._planning import Document, RequestPlan, RerankResult, parse_response, plan_request

if TYPE_CHECKING:
    import httpx
    from together import AsyncTogether, Together

__all__ = ["RerankClient"]


class RerankClient:
    """Rerank documents against a query with Together's ``/v1/rerank`` (or a compatible server).

    Configuration: arguments win over environment variables (``TOGETHER_API_KEY``,
    ``TOGETHER_BASE_URL``, ``TOGETHER_RERANK_MODEL``), which win over defaults (model
    ``Salesforce/Llama-Rank-V1``, base URL ``https://api.together.ai``). ``base_url`` may end
    in ``/v1`` or not. Retries (``max_retries``, default 2) are the SDK's: 408, 409, 429, 5xx,
    timeouts and connection errors, with backoff that honours ``Retry-After``. ``timeout`` is
    seconds per attempt.

    ``transport`` (an ``httpx`` transport such as ``httpx.MockTransport`` or
    :class:`together_rerank_plugins.testing.LexicalRerankEndpoint`) replaces the network for
    both the sync and async clients: use it for tests and proxies.

    Example::

        >>> from together_rerank_plugins import RerankClient
        >>> from together_rerank_plugins.testing import LexicalRerankEndpoint
        >>> client = RerankClient(api_key="offline", transport=LexicalRerankEndpoint())
        >>> docs = ["Berlin is in Germany", "Paris is the capital of France"]
        >>> client.rerank("capital of France", docs)
        [RerankResult(index=1, relevance_score=1.0), RerankResult(index=0, relevance_score=0.0)]
    """

    def __init__(
        self,
        model: str | None = None,
        api_key: Any = None,
        base_url: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        *,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings: Settings = resolve_settings(
            model=model,
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
        )
        self._transport = transport
        self._lock = threading.Lock()
        self._sync: Together | None = None
        # one async SDK client per event loop, with the generator that closes it (see below)
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[AsyncTogether, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    # -- configuration -------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self._settings.model

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    @property
    def timeout(self) -> float | None:
        return self._settings.timeout

    @property
    def max_retries(self) -> int:
        return self._settings.max_retries

    def __repr__(self) -> str:
        s = self._settings
        return (
            f"RerankClient(model={s.model!r}, base_url={s.base_url!r}, timeout={s.timeout!r}, "
            f"max_retries={s.max_retries!r})"
        )

    def __reduce__(self) -> Any:
        raise TypeError(
            "RerankClient holds an API key and open connections and is not picklable; "
            "pickle the adapter (which rebuilds its client) or build a new client."
        )

    # -- SDK clients ---------------------------------------------------------------------
    def _sdk_kwargs(self) -> dict[str, Any]:
        s = self._settings
        return {
            "api_key": s.api_key,
            "base_url": s.base_url,
            "timeout": s.timeout,
            "max_retries": s.max_retries,
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
        client._platform = _sdk_platform()
        closer = _close_at_loop_shutdown(client, weakref.ref(self))
        with self._lock:
            entry = self._async.get(loop)
            if entry is not None:  # another task of this loop won the race: use its client
                return entry[0]
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

    def __enter__(self) -> RerankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RerankClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- calls ---------------------------------------------------------------------------
    def plan(
        self,
        query: Any,
        documents: Sequence[Document],
        *,
        top_n: int | None = None,
        rank_fields: Sequence[str] | None = None,
        score_threshold: float | None = None,
    ) -> RequestPlan:
        """Validate a call without sending it (raises :class:`RerankInputError`)."""
        return plan_request(
            model=self._settings.model,
            query=query,
            documents=documents,
            top_n=top_n,
            rank_fields=rank_fields,
            score_threshold=score_threshold,
        )

    def _error(self, exc: BaseException) -> RerankError:
        return translate_sdk_error(
            exc,
            model=self._settings.model,
            base_url=self._settings.base_url,
            secret=self._settings.api_key,
        )

    @staticmethod
    def _decode(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError
            raise MalformedResponseError(
                f"The rerank server's answer is not valid JSON ({exc}; {len(raw)} bytes). "
                "No ranking was returned; check `base_url`."
            ) from None

    def rerank(
        self,
        query: str,
        documents: Sequence[Document],
        *,
        top_n: int | None = None,
        rank_fields: Sequence[str] | None = None,
        score_threshold: float | None = None,
    ) -> list[RerankResult]:
        """Rank ``documents`` (strings or mappings) against ``query``, best first.

        ``top_n=None`` keeps every document; ``score_threshold`` then drops results scoring
        below it. No request is sent for an empty ``documents``.
        """
        return self.execute(
            self.plan(
                query,
                documents,
                top_n=top_n,
                rank_fields=rank_fields,
                score_threshold=score_threshold,
            )
        )

    def execute(self, plan: RequestPlan) -> list[RerankResult]:
        """Send a call validated by :meth:`plan` and return its ranking."""
        if plan.n_documents == 0:
            return []
        import together

        client = self._sync_client()
        try:
            raw = client.rerank.with_raw_response.create(**plan.kwargs).read()
        except together.TogetherError as exc:
            raise self._error(exc) from exc
        return parse_response(plan, self._decode(raw))

    async def arerank(
        self,
        query: str,
        documents: Sequence[Document],
        *,
        top_n: int | None = None,
        rank_fields: Sequence[str] | None = None,
        score_threshold: float | None = None,
    ) -> list[RerankResult]:
        """Async :meth:`rerank`: awaits the async SDK client (no worker thread)."""
        return await self.aexecute(
            self.plan(
                query,
                documents,
                top_n=top_n,
                rank_fields=rank_fields,
                score_threshold=score_threshold,
            )
        )

    async def aexecute(self, plan: RequestPlan) -> list[RerankResult]:
        """Async :meth:`execute`."""
        if plan.n_documents == 0:
            return []
        import together

        client = await self._async_client()
        try:
            response = await client.rerank.with_raw_response.create(**plan.kwargs)
            raw = await response.read()
        except together.TogetherError as exc:
            raise self._error(exc) from exc
        return parse_response(plan, self._decode(raw))


@functools.cache
def _sdk_platform() -> Any:
    from together._base_client import get_platform

    return get_platform()


async def _close_at_loop_shutdown(
    client: AsyncTogether, owner: weakref.ref[RerankClient]
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
