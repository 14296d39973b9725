"""The task that generates a resumable stream, apart from any client connection.

``Producer.run`` serves the ``Run`` into its ``LogSink`` and, beside it, keeps a heartbeat
every ``lease_s / 3`` s (at most 1 s):

- renews the lease that tells other instances this one is alive (``lease_s`` TTL);
- looks for a ``DELETE`` made on another instance (the ``cancel`` key);
- stops generation, as a cancel would (usage recorded), once no client has read the stream for
  ``grace_s`` s: neither the local one nor a resuming reader (the ``reader`` key).

Whatever the ending, the log ends with the stream's end (``data: [DONE]`` in Chat Completions,
after the error frame when the run could not write its own), so a reader never waits on a
stream nobody produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

from ..errors import GatewayError, StreamCancelledError
from ..relay import Run
from ..state import StateBackend, StateUnavailable
from .sink import LogSink

__all__ = ["Producer"]

log = logging.getLogger("sluicegate.resume")

Track = Callable[[Run], AbstractContextManager[None]]


class Producer:
    """Generates one resumable stream: ``run`` writes into ``sink``; ``owner`` holds the
    lease. ``track`` registers the run with the gateway (shutdown waits for it)."""

    def __init__(self, state: StateBackend, run: Run, sink: LogSink, owner: str,
                 track: Track, *, background: bool = False) -> None:
        """``background``: generate to the end whether or not anyone reads (no ``grace_s``
        stop), and log a failure before the first content too, so it can be read back."""
        self.state = state
        self.run = run
        self.sink = sink
        self.owner = owner
        self.track = track
        self.background = background
        self.failure: GatewayError | None = None
        self.settings = sink.settings
        self.task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self._main(), name=f"produce {self.sink.stream_id}")
        return self.task

    def cancel(self, code: str, message: str) -> None:
        """Stop generating: the run ends with the error frame ``code`` and ``[DONE]``, and its
        usage is recorded as ``cancelled``."""
        self.run.abort(StreamCancelledError(message, code=code))

    async def _main(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            with self.track(self.run):
                await self.run.serve(stream=True)
        except GatewayError as exc:
            self.failure = exc
            if not self.background:
                raise  # the waiting client's status
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self._finish()

    async def _finish(self) -> None:
        sink = self.sink
        try:
            if not sink.prepared and not self.background:
                # Failed before any content: the client got a status; nothing to resume.
                await self.state.delete(*sink.stream_keys.all())
                return
            if not sink.prepared and self.failure is not None and not sink.ended:
                # A background stream that failed before any content: its readers see why.
                await sink.write(self.run.error_bytes(self.failure))
                await sink.write_eof()
            if not sink.ended:
                error = StreamCancelledError("The stream's producer stopped.",
                                             code="stream_cancelled")
                with contextlib.suppress(Exception):
                    await sink.write(self.run.error_bytes(error))
                await sink.write_eof()
            await self.state.release_lease(sink.stream_keys.lease, self.owner)
        except StateUnavailable as exc:
            log.warning("stream %s: could not close its state: %s", sink.stream_id, exc)

    async def _heartbeat(self) -> None:
        settings = self.settings
        keys = self.sink.stream_keys
        loop = asyncio.get_running_loop()
        every = min(settings.lease_s / 3, 1.0)
        last_reader = loop.time()
        refreshed = loop.time()
        warned = False
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            try:
                if not (await self.state.renew_lease(keys.lease, self.owner,
                                                     ttl_s=settings.lease_s)
                        or await self.state.acquire_lease(keys.lease, self.owner,
                                                          ttl_s=settings.lease_s)):
                    # Another instance took the stream over (this one looked dead): it owns
                    # the log now, so stop without writing to it.
                    log.warning("stream %s was taken over by another instance; generation "
                                "stopped here", self.sink.stream_id)
                    self.sink.logging = False
                    self.cancel("stream_cancelled", "The stream moved to another instance.")
                    return
                if await self.state.get(keys.cancel) is not None:
                    self.cancel("stream_cancelled", "The stream was cancelled (DELETE).")
                    return
                if (self.background or self.sink.local is not None
                        or await self.state.get(keys.reader)):
                    last_reader = now
                elif now - last_reader >= settings.grace_s:
                    log.info("stream %s: no reader for %s s; generation stopped",
                             self.sink.stream_id, settings.grace_s)
                    self.cancel("no_reader", f"The stream had no reader for "
                                f"{settings.grace_s:g} s, so generation was stopped.")
                    return
                if now - refreshed >= settings.retention_s / 4:
                    refreshed = now
                    await self.state.expire(keys.meta, settings.retention_s)
                    await self.state.log_expire(keys.log, settings.retention_s)
                warned = False
            except StateUnavailable as exc:
                if not warned:
                    log.warning("stream %s: heartbeat failed: %s", self.sink.stream_id, exc)
                    warned = True
