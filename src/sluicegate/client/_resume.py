"""Resumable streams, client side: ``ResumableSource`` reconnects a dropped stream and goes on
where it stopped, so its reader sees one stream.

The protocol (sluicegate's resumable chat streams):

- The request opts in with ``"stream_options": {"resumable": true}``; the response carries
  ``X-Sluicegate-Stream-Id: <stream_id>`` and every event, ``data: [DONE]`` included, carries
  ``id: <stream_id>:<seq>``, seq = 1, 2, 3… (keep-alive comments carry none).
- ``GET /v1/chat/completions/{stream_id}/stream`` with ``Last-Event-ID: <stream_id>:<seq>``
  (or ``?starting_after=<seq>``) and the same ``Authorization`` answers the events after
  ``seq``, then the live ones, up to ``[DONE]``. Errors: 404 ``stream_not_found``, 400
  ``invalid_last_event_id``, 410 ``stream_events_expired``, 503 ``state_unavailable``.
- ``DELETE /v1/chat/completions/{stream_id}`` cancels it.

The ``id`` field and the ``Last-Event-ID`` header are those of the WHATWG HTML Living Standard,
§9.2 "Server-sent events" (a reconnecting ``EventSource`` sends the last id it saw).

A connection that drops before ``[DONE]`` (``APIConnectionError``), or a body that ends without
it, is resumed after the last event delivered; events at or below that seq are skipped if the
gateway sends them again. Reconnections back off exponentially with jitter (the first wait
0.1–0.25 s, each capped at 2 s, a ``Retry-After`` honoured); ``retries`` bounds the reconnections
in a row that deliver nothing new (each one that does starts a fresh count). When they run out,
the last connection error is raised; a status that is not retried (404, 400, 410, …) raises
``StreamResumeError`` at once, as does a 503 once the retries ran out.
"""

from __future__ import annotations

from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ._http import HTTPSource, HTTPTransport, retry_wait, retryable
from ._state import RateLimits
from .errors import APIConnectionError, APIStatusError, StreamResumeError

__all__ = ["DEFAULT_RESUME_RETRIES", "RESUME_BACKOFF", "ResumableSource", "wants_resume"]

DEFAULT_RESUME_RETRIES = 5
"""Reconnections in a row without a new event before a dropped resumable stream gives up."""

RESUME_BACKOFF = wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.15)
"""Wait before the n-th reconnection in a row (s): 0.1·2ⁿ⁻¹ plus up to 0.15, at most 2."""


def wants_resume(body: dict[str, Any]) -> bool:
    """True when the request body asks for a resumable stream
    (``stream_options.resumable: true``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("resumable") is True


def _wait(state: RetryCallState) -> float:
    return retry_wait(state, RESUME_BACKOFF)


class ResumableSource:
    """A resumable stream's chunks over as many connections as it takes (see the module).

    Open it with ``start`` (the POST that creates the stream) or ``reopen`` (an existing stream
    from a seq). ``stream_id`` / ``last_event_id`` as ``Source``; ``resumes``: reconnections
    made. A stream whose response has no stream id (a server without resumable streams) is not
    resumed: it behaves as a plain one.
    """

    def __init__(self, transport: HTTPTransport, path: str, stream_id: str | None,
                 retries: int, source: HTTPSource | None = None, after: int = 0) -> None:
        self._transport = transport
        self._path = path
        self._retries = retries
        self._source = source
        self._seq = after
        self._last_id: str | None = None
        self._pending: list[dict[str, Any]] | None = None  # read by ``reopen``
        self._finished = False
        self.stream_id = stream_id
        self.resumes = 0
        self.provider: str | None = None
        self.rate_limits: RateLimits | None = None
        self.model: str | None = None
        self.attempts: int | None = None
        self.request_id: str | None = None
        if source is not None:
            self._adopt(source)

    @classmethod
    async def start(cls, transport: HTTPTransport, path: str, body: dict[str, Any],
                    retries: int) -> ResumableSource:
        """POST ``body`` (which asks for a resumable stream) to ``path``. Raises as
        ``HTTPTransport.open_stream``."""
        source = await transport.open_stream(path, body, after=0)
        return cls(transport, path, source.stream_id, retries, source)

    @classmethod
    async def reopen(cls, transport: HTTPTransport, path: str, stream_id: str, after: int,
                     retries: int) -> ResumableSource:
        """The events of ``stream_id`` after seq ``after`` (0: from the start), read from the
        resume endpoint under ``path``; connection errors and 503s are retried as
        reconnections. Raises ``StreamResumeError``, ``APIConnectionError``."""
        self = cls(transport, path, stream_id, retries, after=after)
        batch = await self._reconnect(None)
        if batch is None:
            self._finished = True
        self._pending = batch
        return self

    def _adopt(self, source: HTTPSource) -> None:
        self.provider = source.provider
        self.model = source.model
        self.attempts = source.attempts
        self.request_id = source.request_id
        self.rate_limits = source.rate_limits

    @property
    def last_event_id(self) -> str | None:
        source = self._source
        return source.last_event_id if source is not None else self._last_id

    async def next_batch(self) -> list[dict[str, Any]] | None:
        """The next new chunks, reconnecting as needed; None after ``[DONE]``. Raises
        ``APIConnectionError`` (the last one) once the reconnections ran out,
        ``StreamResumeError`` when the gateway refuses to resume."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        source = self._source
        if self._finished or source is None:
            return None
        try:
            batch = await source.next_batch()
        except APIConnectionError as exc:
            if self.stream_id is None:
                raise
            return await self._reconnect(exc)
        if batch is None and not source.finished and self.stream_id is not None:
            return await self._reconnect(APIConnectionError(
                "The stream ended before its [DONE] event."))
        return batch

    async def _reconnect(self, dropped: APIConnectionError | None
                         ) -> list[dict[str, Any]] | None:
        """Resume after the last event delivered and return the first new chunks (None: the
        stream was complete but for ``[DONE]``). ``dropped``: the failure that ended the
        connection, counted as the first try (so the first request waits a backoff); None for
        ``reopen``, whose first request goes at once."""
        retrying = AsyncRetrying(stop=stop_after_attempt(self._retries + 1), wait=_wait,
                                 retry=retry_if_exception(retryable), reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    if dropped is not None:
                        failure, dropped = dropped, None
                        raise failure
                    return await self._resume_once()
        except APIStatusError as exc:
            raise StreamResumeError(
                f"The stream {self.stream_id} could not be resumed: {exc.message}",
                status_code=exc.status_code, body=exc.body, stream_id=self.stream_id,
                last_event_id=self.last_event_id) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _resume_once(self) -> list[dict[str, Any]] | None:
        """One reconnection: open the resume endpoint and read until a new event (or the end).
        A connection that delivers nothing new raises ``APIConnectionError``."""
        assert self.stream_id is not None
        old, self._source = self._source, None
        if old is not None:
            self._seq, self._last_id = old.seq, old.last_event_id
            await old.aclose()
        source = await self._transport.open_resume(self._path, self.stream_id, after=self._seq,
                                                   last_event_id=self._last_id)
        self._source = source
        self.resumes += 1
        if self.provider is None:
            self._adopt(source)
        batch = await source.next_batch()
        if batch is None and not source.finished:
            raise APIConnectionError("The resumed stream ended before its [DONE] event.")
        return batch

    async def aclose(self) -> None:
        """Close the current connection (idempotent)."""
        self._finished = True
        self._pending = None
        if self._source is not None:
            await self._source.aclose()
