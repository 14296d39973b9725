"""``Client`` and ``AsyncClient``: the gateway (or any OpenAI-compatible server) over HTTP, or
the gateway's router in-process (``in_process()``: no HTTP hop).

The sync client runs its transport on a private event loop thread (started on first use), so
both clients share the same retries and timeouts. Retries happen before the first token only
(connection errors, 408/409/429/≥500), with exponential backoff and jitter, honouring
``Retry-After`` / ``retry-after-ms`` (capped at 30 s). In-process, the gateway's own
``routing`` settings (retries, fallbacks, timeouts) apply instead of ``max_retries``.
"""

from __future__ import annotations

import asyncio
import os
from types import TracebackType
from typing import Any, Self

from ..config import GatewayConfig
from ._http import HTTPTransport
from ._inprocess import InProcessTransport
from ._loop import LoopThread
from ._resources import AsyncChat, AsyncCompletions, Chat, Completions
from ._stream_core import Engine, StreamState
from .callbacks import StreamCallbacks
from .errors import APITimeoutError

__all__ = ["DEFAULT_BASE_URL", "AsyncClient", "Client"]

DEFAULT_BASE_URL = "http://127.0.0.1:8400/v1"
"""Used when neither ``base_url`` nor ``SLUICEGATE_BASE_URL`` is given."""

Transport = HTTPTransport | InProcessTransport


class _BaseClient:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | None = 600.0, connect_timeout: float | None = 10.0,
                 max_retries: int = 2, callbacks: StreamCallbacks | None = None,
                 _transport: InProcessTransport | None = None) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        self.base_url = (base_url or os.environ.get("SLUICEGATE_BASE_URL")
                         or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("SLUICEGATE_API_KEY")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.callbacks = callbacks
        self._transport: Transport = _transport or HTTPTransport(
            self.base_url, self.api_key, connect_timeout=connect_timeout,
            max_retries=max_retries)

    @property
    def is_in_process(self) -> bool:
        """True for a client made by ``in_process()``."""
        return isinstance(self._transport, InProcessTransport)

    def _callbacks_for(self, callbacks: StreamCallbacks | None) -> list[StreamCallbacks]:
        return [c for c in (self.callbacks, callbacks) if c is not None]

    def _engine(self, path: str, body: dict[str, Any], timeout: float | None,
                stall_timeout: float | None) -> Engine:
        transport = self._transport
        return Engine(lambda: transport.open_stream(path, body),
                      timeout=self.timeout if timeout is None else timeout,
                      stall_timeout=stall_timeout)

    async def _acreate(self, path: str, body: dict[str, Any], limit_s: float | None
                       ) -> dict[str, Any]:
        limit = self.timeout if limit_s is None else limit_s
        transport = self._transport
        try:
            async with asyncio.timeout(limit):
                if isinstance(transport, HTTPTransport):
                    return await transport.post_json(path, body)
                return await _accumulate(transport, path, body)
        except TimeoutError:
            raise APITimeoutError(f"The request did not finish within {limit} s.") from None


async def _accumulate(transport: InProcessTransport, path: str, body: dict[str, Any]
                      ) -> dict[str, Any]:
    """In-process non-streaming: run the stream and fold it (as the gateway does)."""
    streaming = {**body, "stream": True, "stream_options": {"include_usage": True}}
    engine = Engine(lambda: transport.open_stream(path, streaming), timeout=None,
                    stall_timeout=None)
    state = StreamState("chat" if path.endswith("chat/completions") else "text")
    try:
        state.opened(await engine.open(), engine.started)
        while (batch := await engine.next_batch()) is not None:
            for raw in batch:
                state.process(raw)
    finally:
        await engine.aclose()
    return state.final()


class Client(_BaseClient):
    """The sync client. ``base_url``: ``…/v1`` (default ``$SLUICEGATE_BASE_URL`` or
    ``http://127.0.0.1:8400/v1``); ``api_key``: sent as a bearer token (default
    ``$SLUICEGATE_API_KEY``); ``timeout``: whole request (s, None: no limit);
    ``connect_timeout`` (s); ``max_retries``: tries after the first, before the first token;
    ``callbacks``: ``StreamCallbacks`` for every stream. Close it with ``close()`` or ``with``.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | None = 600.0, connect_timeout: float | None = 10.0,
                 max_retries: int = 2, callbacks: StreamCallbacks | None = None,
                 _transport: InProcessTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout=timeout, connect_timeout=connect_timeout,
                         max_retries=max_retries, callbacks=callbacks, _transport=_transport)
        self._loop = LoopThread()
        self.chat = Chat(self)
        self.completions = Completions(self)

    @classmethod
    def in_process(cls, config: GatewayConfig | None = None, *, timeout: float | None = 600.0,
                   callbacks: StreamCallbacks | None = None) -> Self:
        """A client that serves requests itself with the gateway's router (``config``: a
        ``GatewayConfig``; None: defaults, i.e. the embedded model as ``default``)."""
        return cls(timeout=timeout, callbacks=callbacks,
                   _transport=InProcessTransport(config))

    def _create(self, path: str, body: dict[str, Any], timeout: float | None
                ) -> dict[str, Any]:
        return self._loop.run(self._acreate(path, body, timeout))

    def close(self) -> None:
        """Close connections (and, in-process, the router's providers). Idempotent."""
        self._loop.stop(self._transport.aclose())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class AsyncClient(_BaseClient):
    """The async client; arguments as ``Client``. Use it on one event loop; close it with
    ``await aclose()`` or ``async with``."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | None = 600.0, connect_timeout: float | None = 10.0,
                 max_retries: int = 2, callbacks: StreamCallbacks | None = None,
                 _transport: InProcessTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout=timeout, connect_timeout=connect_timeout,
                         max_retries=max_retries, callbacks=callbacks, _transport=_transport)
        self.chat = AsyncChat(self)
        self.completions = AsyncCompletions(self)

    @classmethod
    def in_process(cls, config: GatewayConfig | None = None, *, timeout: float | None = 600.0,
                   callbacks: StreamCallbacks | None = None) -> Self:
        """As ``Client.in_process``; the router runs on the caller's event loop."""
        return cls(timeout=timeout, callbacks=callbacks,
                   _transport=InProcessTransport(config))

    async def _create(self, path: str, body: dict[str, Any], limit_s: float | None
                      ) -> dict[str, Any]:
        return await self._acreate(path, body, limit_s)

    async def aclose(self) -> None:
        """Close connections (and, in-process, the router's providers). Idempotent."""
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
