"""Where a stream's chunks come from: the ``Source`` protocol (one open response of a
transport, HTTP or in-process), the ``Transport`` protocol, and the ``Engine`` that opens a
source at first use and reads it under the time limits (``timeout``, ``stall_timeout``)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .errors import APITimeoutError, StreamClosedError

__all__ = ["Engine", "Opener", "Source", "Transport"]


class Source(Protocol):
    """An open stream of chunk dicts from one transport (HTTP or in-process).

    ``provider`` / ``model`` / ``attempts``: the route that served it (the gateway's
    ``X-Sluicegate-*`` headers, or the router's own answer); None when unknown.
    ``stream_id`` / ``last_event_id``: a resumable stream's id and the SSE id of the last event
    delivered (None otherwise, and before any event).
    """

    provider: str | None
    model: str | None
    attempts: int | None
    request_id: str | None

    @property
    def stream_id(self) -> str | None: ...

    @property
    def last_event_id(self) -> str | None: ...

    async def next_batch(self) -> list[dict[str, Any]] | None:
        """The chunks of the next read (never empty), or None at the clean end. Raises
        ``APIConnectionError`` when the connection drops."""
        ...

    async def aclose(self) -> None:
        """Release the connection (idempotent)."""
        ...


Opener = Callable[[], Awaitable[Source]]


class Transport(Protocol):
    """Opens streams and makes whole requests against one backend (HTTP or in-process)."""

    async def open_stream(self, path: str, body: dict[str, Any]) -> Source:
        """POST ``body`` to ``path`` (``/chat/completions`` or ``/completions``) and return the
        open stream. Raises ``APIStatusError`` subclasses, ``APIConnectionError``."""
        ...

    async def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The whole (non-streaming) answer to ``body``, as a decoded JSON object."""
        ...

    async def aclose(self) -> None:
        """Release connections and resources (idempotent)."""
        ...


class Engine:
    """Opens the source on first use and reads batches under the time limits.

    ``timeout`` (s) bounds the whole request from its start (retries and a resumable stream's
    reconnections included); ``stall_timeout`` (s) bounds each wait for the next read once the
    response is open (a reconnection included). Either firing closes the source and raises
    ``APITimeoutError``. Any failure closes the source. ``stream_id``: the resumable stream's
    id, known before it opens when it is being resumed.
    """

    def __init__(self, opener: Opener, *, timeout: float | None,
                 stall_timeout: float | None, stream_id: str | None = None) -> None:
        self._opener = opener
        self._stream_id = stream_id
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        self.source: Source | None = None
        self.started: float | None = None  # time.perf_counter() at the request start
        self._deadline: float | None = None  # loop time
        self.ended = False
        self.closed = False

    def _start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()
            if self.timeout is not None:
                self._deadline = asyncio.get_running_loop().time() + self.timeout

    @property
    def stream_id(self) -> str | None:
        """The resumable stream's id (``X-Sluicegate-Stream-Id``), None if not one."""
        source = self.source
        if source is not None and source.stream_id is not None:
            return source.stream_id
        return self._stream_id

    @property
    def last_event_id(self) -> str | None:
        """The SSE id of the last event delivered (``<stream_id>:<seq>``), None if none."""
        source = self.source
        return source.last_event_id if source is not None else None

    async def open(self) -> Source:
        """Open the source (once). Raises ``APIStatusError``, ``APIConnectionError``,
        ``APITimeoutError``."""
        if self.source is not None:
            return self.source
        if self.closed:
            raise StreamClosedError("The stream is closed.")
        self._start()
        try:
            async with asyncio.timeout_at(self._deadline):
                source = await self._opener()
            self.source = source
            if self.closed:
                # Closed (e.g. from another thread) while opening: release what just opened.
                await source.aclose()
                raise StreamClosedError("The stream was closed while it was opening.")
        except TimeoutError:
            await self.aclose()
            raise APITimeoutError(
                f"The request did not finish within {self.timeout} s.") from None
        except BaseException:
            await self.aclose()
            raise
        return self.source

    async def next_batch(self) -> list[dict[str, Any]] | None:
        """The next chunk dicts, or None at the clean end (the source is then closed)."""
        if self.ended:
            return None
        source = await self.open()
        loop = asyncio.get_running_loop()
        stall_at = None if self.stall_timeout is None else loop.time() + self.stall_timeout
        limit = min(stall_at if stall_at is not None else math.inf,
                    self._deadline if self._deadline is not None else math.inf)
        try:
            async with asyncio.timeout_at(None if limit == math.inf else limit):
                batch = await source.next_batch()
        except TimeoutError:
            await self.aclose()
            if self._deadline is not None and limit == self._deadline:
                raise APITimeoutError(
                    f"The request did not finish within {self.timeout} s.") from None
            raise APITimeoutError(
                f"No data from the server for {self.stall_timeout} s.") from None
        except BaseException:
            await self.aclose()
            raise
        if batch is None:
            self.ended = True
            await self.aclose()
        return batch

    async def aclose(self) -> None:
        """Close the source (idempotent)."""
        self.closed = True
        source = self.source
        if source is not None:
            await source.aclose()
