"""Server-sent events codec, spec-exact (WHATWG HTML §9.2 "Server-sent events").

Decoding works on bytes, as they arrive from the socket:

- lines end in CRLF, LF or a lone CR, including a CR at the end of one read and the LF at the
  start of the next;
- line terminators are ASCII, so splitting bytes first and decoding complete lines means a UTF-8
  character split across reads is never cut;
- a leading UTF-8 BOM is stripped; comments (``:`` lines) and unknown fields are ignored;
- ``data:`` lines join with ``\\n``; an event with no ``data:`` line at all is not dispatched
  (unlike openai-python and httpx-sse, which dispatch it once an ``id:`` has been seen);
- an unterminated last event is dropped.

Why our own decoder rather than httpx-sse: httpx-sse is tied to httpx (the gateway's upstream
client is aiohttp), dispatches data-less events, and decodes text before splitting. This one
hands ``data`` to orjson as bytes, so the streaming hot path does one parse per event.

Encoding produces data-only events for the OpenAI dialect (``data: <json>\\n\\n``), never a BOM,
never an empty event.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DONE", "KEEP_ALIVE", "EventTooLargeError", "SSEDecoder", "ServerSentEvent",
           "encode_data"]

_BOM = b"\xef\xbb\xbf"

DONE = b"data: [DONE]\n\n"
"""The OpenAI stream terminator (openai-python stops at data starting with ``[DONE]``)."""

KEEP_ALIVE = b": keep-alive\n\n"
"""A comment line; every SSE decoder ignores it (WHATWG §9.2.6)."""


class EventTooLargeError(ValueError):
    """An event, or a line not yet ended, grew past the decoder's ``max_event_bytes``."""


@dataclass(slots=True)
class ServerSentEvent:
    """One dispatched event. ``data`` is raw UTF-8 bytes (multi-line data joined by ``\\n``)."""

    data: bytes
    event: str = "message"
    id: str | None = None
    retry: int | None = None

    def text(self) -> str:
        """``data`` decoded as UTF-8 (invalid bytes replaced, as the spec's decoder does)."""
        return self.data.decode("utf-8", "replace")


class SSEDecoder:
    """Incremental decoder: ``feed(bytes) -> list[ServerSentEvent]``.

    Holds at most one partial line between calls. ``last_event_id`` survives across events, as
    the spec requires, for reconnection with ``Last-Event-ID``; it changes only when an event
    is completed by a blank line.

    ``max_event_bytes`` (None: no limit) bounds what one event may hold before it is complete:
    its unfinished line, and its ``data`` lines. Past it, ``feed`` / ``feed_data`` raise
    ``EventTooLargeError``: a peer that never ends a line would otherwise make every read
    re-scan an ever longer buffer (quadratic time) and hold it all in memory.
    """

    __slots__ = ("_buf", "_data", "_event", "_id", "_retry", "_started", "_trailing_cr",
                 "last_event_id", "max_event_bytes")

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self.max_event_bytes = max_event_bytes
        self._buf = b""
        self._trailing_cr = False
        self._started = False
        self._data: list[bytes] = []
        self._event = b""
        self._id: str | None = None
        self._retry: int | None = None
        self.last_event_id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Feed bytes as read from the stream; returns the events completed by them."""
        if not self._started:
            chunk = self._buf + chunk
            self._buf = b""
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._buf = chunk  # could still be the start of a BOM
                return []
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        if self._trailing_cr and chunk:
            self._trailing_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]  # the LF of a CRLF split across reads
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            if buf.endswith(b"\r"):
                self._trailing_cr = True
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        events: list[ServerSentEvent] = []
        data = self._data
        for line in lines:
            # Hot path inlined: ``data:`` lines and blank lines are nearly every line.
            if line[:5] == b"data:":
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif not line:
                event = self._dispatch()
                data = self._data
                if event is not None:
                    events.append(event)
            else:
                self._field(line)
        if self.max_event_bytes is not None:
            self._check_size()
        return events

    def _check_size(self) -> None:
        limit = self.max_event_bytes
        assert limit is not None
        held = len(self._buf)
        if self._data:
            held += sum(len(d) for d in self._data)
        if held > limit:
            raise EventTooLargeError(
                f"An event grew past {limit} bytes before it ended ({held} bytes held).")

    def feed_data(self, chunk: bytes) -> list[bytes]:
        """Like ``feed``, but returns only the ``data`` of each completed event (bytes).

        For data-only dialects (OpenAI, docs/wire.md §2), where event names are not used. When the
        input is LF-only and no event is half-read (no data, name or new id pending), whole
        events are split at blank lines and a one-line ``data:`` event costs one slice;
        anything else (CR, comments, other fields, multi-line data, a BOM not yet seen) goes
        through ``feed``. Both paths give the same payloads and ``last_event_id``.
        """
        buf = self._buf + chunk if self._buf else chunk
        if (not self._started or self._trailing_cr or self._data or self._event
                or self._id != self.last_event_id or b"\r" in buf):
            return [event.data for event in self.feed(chunk)]
        parts = buf.split(b"\n\n")
        # The unfinished tail starts at a line boundary, so ``feed`` can resume from it.
        tail = parts.pop()
        self._buf = b""
        out: list[bytes] = []
        for part in parts:
            if part[:6] == b"data: " and b"\n" not in part:
                out.append(part[6:])
                self.last_event_id = self._id  # a dispatch, as in ``_dispatch``
            else:
                out.extend(event.data for event in self.feed(part + b"\n\n"))
        self._buf = tail
        if self.max_event_bytes is not None and len(tail) > self.max_event_bytes:
            self._check_size()
        return out

    def _field(self, line: bytes) -> None:
        if line[:1] == b":":
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\x00" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)

    def _dispatch(self) -> ServerSentEvent | None:
        # WHATWG: the last event ID string takes the buffer's value at every dispatch attempt,
        # so an id in an unterminated (dropped) event never becomes the Last-Event-ID.
        self.last_event_id = self._id
        data = self._data
        event = self._event
        self._data = []
        self._event = b""
        if not data:
            return None
        return ServerSentEvent(
            data=data[0] if len(data) == 1 else b"\n".join(data),
            event=event.decode("utf-8", "replace") if event else "message",
            id=self.last_event_id,
            retry=self._retry,
        )


def encode_data(payload: bytes) -> bytes:
    """Frame a serialised JSON payload as one data-only event: ``data: <payload>\\n\\n``.

    The payload must be non-empty and contain no line breaks (orjson output never does).
    """
    return b"data: " + payload + b"\n\n"
