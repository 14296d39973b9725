"""``Client`` and ``AsyncClient``: the gateway (or any OpenAI-compatible server) over HTTP, or
the gateway's router in-process (``in_process()``: no HTTP hop).

The sync client runs its transport on a private event loop thread (started on first use), so
both clients share the same retries and timeouts. Retries happen before the first token only
(connection errors, 408/409/429/≥500), with exponential backoff and jitter, honouring
``Retry-After`` / ``retry-after-ms`` (capped at 30 s). In-process, the gateway's own
``routing`` settings (retries, fallbacks, timeouts) apply instead of ``max_retries``.

A resumable chat stream (``chat.stream(..., resumable=True)``, see ``_resume``) reconnects by
itself after a dropped connection; ``chat.resume`` reads one again by its id and
``chat.cancel`` cancels one (HTTP only).
"""

from __future__ import annotations

import asyncio
import os
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx

from ._http import HTTPTransport
from ._loop import LoopThread
from ._resources import AsyncChat, AsyncCompletions, Chat, Completions
from ._resume import DEFAULT_RESUME_RETRIES, ResumableSource, wants_resume
from ._source import Engine, Transport
from .audio import AsyncAudio, Audio
from .callbacks import StreamCallbacks
from .errors import APITimeoutError

if TYPE_CHECKING:
    from ..config import GatewayConfig

__all__ = ["DEFAULT_BASE_URL", "AsyncClient", "Client"]

DEFAULT_BASE_URL = "http://127.0.0.1:8400/v1"
"""Used when neither ``base_url`` nor ``SLUICEGATE_BASE_URL`` is given."""


class _BaseClient:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | None = 600.0, connect_timeout: float | None = 10.0,
                 max_retries: int = 2, callbacks: StreamCallbacks | None = None,
                 http_client: httpx.Client | httpx.AsyncClient | None = None,
                 _transport: Transport | None = None) -> None:
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
            max_retries=max_retries, http_client=http_client)

    @classmethod
    def in_process(cls, config: GatewayConfig | None = None, *, timeout: float | None = 600.0,
                   callbacks: StreamCallbacks | None = None) -> Self:
        """A client that serves requests itself with the gateway's router (``config``: a
        ``GatewayConfig``; None: defaults, i.e. the embedded model as ``default``). The
        gateway's code is imported here, not with the SDK. With ``AsyncClient`` the router runs
        on the caller's event loop."""
        from ._inprocess import InProcessTransport

        return cls(timeout=timeout, callbacks=callbacks,
                   _transport=InProcessTransport(config))

    @property
    def is_in_process(self) -> bool:
        """True for a client made by ``in_process()``."""
        return not isinstance(self._transport, HTTPTransport)

    def _callbacks_for(self, callbacks: StreamCallbacks | None) -> list[StreamCallbacks]:
        return [c for c in (self.callbacks, callbacks) if c is not None]

    def _engine(self, path: str, body: dict[str, Any], timeout: float | None,
                stall_timeout: float | None,
                resume_retries: int = DEFAULT_RESUME_RETRIES) -> Engine:
        """The engine of one stream; a body asking for a resumable stream (over HTTP) gets a
        ``ResumableSource`` reconnecting up to ``resume_retries`` times in a row."""
        if resume_retries < 0:
            raise ValueError("resume_retries must not be negative")
        transport = self._transport
        limit = self.timeout if timeout is None else timeout
        if isinstance(transport, HTTPTransport) and wants_resume(body):
            return Engine(lambda: ResumableSource.start(transport, path, body, resume_retries),
                          timeout=limit, stall_timeout=stall_timeout)
        return Engine(lambda: transport.open_stream(path, body), timeout=limit,
                      stall_timeout=stall_timeout)

    def _http_transport(self, what: str) -> HTTPTransport:
        transport = self._transport
        if not isinstance(transport, HTTPTransport):
            raise NotImplementedError(
                f"{what} needs the gateway over HTTP: an in-process client keeps no "
                "resumable streams.")
        return transport

    def _resume_engine(self, path: str, stream_id: str, after: int, timeout: float | None,
                       stall_timeout: float | None, resume_retries: int) -> Engine:
        """The engine of ``chat.resume``: the events of ``stream_id`` after seq ``after``."""
        if not stream_id:
            raise ValueError("stream_id must not be empty")
        if after < 0:
            raise ValueError("after must not be negative")
        if resume_retries < 0:
            raise ValueError("resume_retries must not be negative")
        transport = self._http_transport("Resuming a stream")
        return Engine(
            lambda: ResumableSource.reopen(transport, path, stream_id, after, resume_retries),
            timeout=self.timeout if timeout is None else timeout, stall_timeout=stall_timeout,
            stream_id=stream_id)

    async def _acreate(self, path: str, body: dict[str, Any], limit_s: float | None
                       ) -> dict[str, Any]:
        limit = self.timeout if limit_s is None else limit_s
        try:
            async with asyncio.timeout(limit):
                return await self._transport.post_json(path, body)
        except TimeoutError:
            raise APITimeoutError(f"The request did not finish within {limit} s.") from None

    async def _adelete(self, path: str, limit_s: float | None) -> dict[str, Any]:
        transport = self._http_transport("Cancelling a stream")
        limit = self.timeout if limit_s is None else limit_s
        try:
            async with asyncio.timeout(limit):
                return await transport.delete_json(path)
        except TimeoutError:
            raise APITimeoutError(f"The request did not finish within {limit} s.") from None


class Client(_BaseClient):
    """The sync client. ``base_url``: ``…/v1`` (default ``$SLUICEGATE_BASE_URL`` or
    ``http://127.0.0.1:8400/v1``); ``api_key``: sent as a bearer token (default
    ``$SLUICEGATE_API_KEY``); ``timeout``: whole request (s, None: no limit);
    ``connect_timeout`` (s); ``max_retries``: tries after the first, before the first token;
    ``callbacks``: ``StreamCallbacks`` for every stream; ``http_client``: an ``httpx.Client``
    (or ``httpx.AsyncClient``) to send with, e.g. one with a proxy or an
    ``httpx.MockTransport``; its own timeouts apply and ``close()`` closes it. Close the client
    with ``close()`` or ``with``.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | None = 600.0, connect_timeout: float | None = 10.0,
                 max_retries: int = 2, callbacks: StreamCallbacks | None = None,
                 http_client: httpx.Client | httpx.AsyncClient | None = None,
                 _transport: Transport | None = None) -> None:
        super().__init__(base_url, api_key, timeout=timeout, connect_timeout=connect_timeout,
                         max_retries=max_retries, callbacks=callbacks, http_client=http_client,
                         _transport=_transport)
        self._loop = LoopThread()
        self.chat = Chat(self)
        self.completions = Completions(self)
        self.audio = Audio(self)

    def _create(self, path: str, body: dict[str, Any], timeout: float | None
                ) -> dict[str, Any]:
        return self._loop.run(self._acreate(path, body, timeout))

    def _delete(self, path: str, timeout: float | None) -> dict[str, Any]:
        self._http_transport("Cancelling a stream")  # raises before the loop starts
        return self._loop.run(self._adelete(path, timeout))

    def close(self) -> None:
        """Close connections (and, in-process, the router's providers). Idempotent."""
        self._loop.stop(self._transport.aclose())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class AsyncClient(_BaseClient):
    """The async client; arguments as ``Client`` (``http_client``: an ``httpx.AsyncClient``,
    else ``TypeError``). Use it on one event loop; close it with ``await aclose()`` or
    ``async with``."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | None = 600.0, connect_timeout: float | None = 10.0,
                 max_retries: int = 2, callbacks: StreamCallbacks | None = None,
                 http_client: httpx.AsyncClient | None = None,
                 _transport: Transport | None = None) -> None:
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError("AsyncClient's http_client must be an httpx.AsyncClient, not "
                            f"{type(http_client).__name__}")
        super().__init__(base_url, api_key, timeout=timeout, connect_timeout=connect_timeout,
                         max_retries=max_retries, callbacks=callbacks, http_client=http_client,
                         _transport=_transport)
        self.chat = AsyncChat(self)
        self.completions = AsyncCompletions(self)
        self.audio = AsyncAudio(self)

    async def _create(self, path: str, body: dict[str, Any], limit_s: float | None
                      ) -> dict[str, Any]:
        return await self._acreate(path, body, limit_s)

    async def _delete(self, path: str, limit_s: float | None) -> dict[str, Any]:
        return await self._adelete(path, limit_s)

    async def aclose(self) -> None:
        """Close connections (and, in-process, the router's providers). Idempotent."""
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
