"""Where a resumable stream's relay writes: the event log first, then the local client.

``LogSink`` stands in for the client's ``StreamResponse`` in ``Run`` (same ``prepare`` /
``write`` / ``write_eof``), so the relay itself is unchanged. Each write is framed with event
ids (``sluicegate.resume.log.frame``), appended to the log as one entry, and only then handed
to the client that started the stream, if it is still connected: an event a client has seen is
always in the log, so a resume never misses or repeats one.

The local client reads through a queue of at most ``max_buffered_bytes`` plus one write: past
that, the relay waits for the client to drain it (as a socket's write buffer would make it
wait), and a client that has not drained it within ``drain_timeout_s`` is detached (its
connection closed) rather than holding the gateway's memory or the generation; it can resume
from the log. If the state fails mid-stream, the stream goes on for the local client without
the log (logged once).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_request import BaseRequest

from ..config import ResumableSettings
from ..state import StateBackend, StateUnavailable
from .log import StreamKeys, frame

__all__ = ["DETACHED", "LogSink"]

log = logging.getLogger("sluicegate.resume")

DETACHED = b""
"""Queued for the local client when it was detached for not reading: close its connection."""


class LogSink(web.StreamResponse):
    """A resumable stream's response: the log, then the local client (if attached)."""

    def __init__(self, state: StateBackend, settings: ResumableSettings, stream_id: str,
                 headers: dict[str, str], *, next_seq: int = 1, local: bool = True,
                 max_buffered_bytes: int = 256 * 1024, drain_timeout_s: float = 10.0) -> None:
        super().__init__(headers=headers)
        self.state = state
        self.settings = settings
        self.stream_id = stream_id
        self.stream_keys = StreamKeys.of(stream_id)
        self.seq = next_seq - 1  # the last event's seq
        self.started = asyncio.Event()  # set by prepare: the headers are decided
        self.local: asyncio.Queue[bytes | None] | None = asyncio.Queue() if local else None
        self.local_bytes = 0
        self.max_buffered_bytes = max_buffered_bytes
        self.drain_timeout_s = drain_timeout_s
        self._drained = asyncio.Event()
        self.logging = True  # False once the state failed
        self.ended = False
        self._prepared = False

    @property
    def prepared(self) -> bool:
        return self._prepared

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        self._prepared = True
        self.started.set()
        return None

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        events, comments = frame(self.stream_id, self.seq + 1, bytes(data))
        if events:
            self.seq += len(events)
            payload = b"".join(events)
            await self._append(payload)
            await self._deliver(payload + comments)
        elif comments:
            await self._deliver(comments)

    async def write_eof(self, data: bytes | bytearray | memoryview = b"") -> None:
        if self.ended:
            return
        if data:
            await self.write(data)
        self.ended = True
        if self.logging:
            try:
                await self.state.set(self.stream_keys.done, str(self.seq).encode(),
                                     ttl_s=self.settings.retention_s)
                await self.state.expire(self.stream_keys.meta, self.settings.retention_s)
                await self.state.log_expire(self.stream_keys.log, self.settings.retention_s)
            except StateUnavailable as exc:
                log.warning("stream %s: could not mark its end in the state: %s",
                            self.stream_id, exc)
        if self.local is not None:
            self.local.put_nowait(None)

    async def _append(self, payload: bytes) -> None:
        if not self.logging:
            return
        settings = self.settings
        try:
            await self.state.log_append(self.stream_keys.log, [(self.seq, payload)],
                                        ttl_s=settings.retention_s,
                                        max_entries=settings.max_events,
                                        max_bytes=settings.max_bytes)
        except StateUnavailable as exc:
            self.logging = False
            log.warning("stream %s is no longer resumable, the state failed: %s",
                        self.stream_id, exc)

    async def _deliver(self, data: bytes) -> None:
        queue = self.local
        if queue is None:
            return
        self.local_bytes += len(data)
        queue.put_nowait(data)
        if self.local_bytes <= self.max_buffered_bytes:
            return
        self._drained.clear()
        try:
            async with asyncio.timeout(self.drain_timeout_s):
                await self._drained.wait()
        except TimeoutError:
            if self.local is queue:
                log.warning("stream %s: the client stopped reading with %d bytes queued; its "
                            "connection is closed (it can resume)", self.stream_id,
                            self.local_bytes)
                queue.put_nowait(DETACHED)
                self.local = None

    def detach(self) -> None:
        """The local client went away: generation goes on for the log only."""
        self.local = None
        self._drained.set()

    def taken(self, data: bytes) -> None:
        """The local client wrote ``data`` out of the queue."""
        self.local_bytes -= len(data)
        if self.local_bytes <= self.max_buffered_bytes // 2:
            self._drained.set()
