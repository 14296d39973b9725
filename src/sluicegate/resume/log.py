"""A resumable stream's event log: ids, framing, keys and the stream's metadata.

Wire facts (docs/wire.md §8): every event of a resumable stream is ``id: <stream id>:<seq>``
then ``data: <json>`` (``seq`` = 1, 2, 3… with no gaps; ``data: [DONE]`` has one too), so
it stays a data-only stream for the openai SDKs, which skip the ``id`` field. A client resumes
with the WHATWG ``Last-Event-ID`` header (HTML Living Standard, server-sent events) or
``?starting_after=<seq>``.

The log keeps each client write (one batch of events) as one entry, keyed by the seq of its
last event, so a token-per-event stream costs one state write per upstream read, not per
event. Keys, all under one hash tag so they land on one Redis Cluster slot::

    {sg:<stream id>}:meta     the request (for a continuation) and the caller's key digest
    {sg:<stream id>}:log      the events (a Redis Stream), with the backend's companion keys
    {sg:<stream id>}:lease    the producing instance; renewed every lease_s / 3 s
    {sg:<stream id>}:reader   set by a resuming reader, at most every second (TTL lease_s)
    {sg:<stream id>}:cancel   a DELETE from an instance that is not the producer
    {sg:<stream id>}:done     the last seq, once the stream ended
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import InvalidLastEventIdError
from ..sse import DONE
from ..state import key

__all__ = ["StreamKeys", "StreamMeta", "auth_digest", "event_data", "frame", "is_done",
           "new_stream_id", "parse_resume_point", "split_events", "valid_stream_id"]

_STREAM_ID = re.compile(r"^rs_[A-Za-z0-9_-]{16,64}$")


def new_stream_id() -> str:
    """A fresh stream id: ``rs_`` and 24 URL-safe characters (144 random bits)."""
    return "rs_" + secrets.token_urlsafe(18)


def valid_stream_id(stream_id: str) -> bool:
    return bool(_STREAM_ID.match(stream_id))


@dataclass(frozen=True, slots=True)
class StreamKeys:
    meta: str
    log: str
    lease: str
    reader: str
    cancel: str
    done: str

    @classmethod
    def of(cls, stream_id: str) -> StreamKeys:
        return cls(*(key(stream_id, part)
                     for part in ("meta", "log", "lease", "reader", "cancel", "done")))

    def all(self) -> tuple[str, ...]:
        return (self.meta, self.log, self.lease, self.reader, self.cancel, self.done)


@dataclass(frozen=True, slots=True)
class StreamMeta:
    """What a resume needs: ``auth`` (the caller's key digest), ``raw`` (the chat request
    body), ``dialect`` (the events' dialect: ``chat``, or ``responses`` for a background
    response) and ``response`` (a background response's object as it was created)."""

    auth: str
    raw: dict[str, Any]
    dialect: str = "chat"
    response: dict[str, Any] | None = None

    def dumps(self) -> bytes:
        obj: dict[str, Any] = {"v": 1, "auth": self.auth, "raw": self.raw}
        if self.dialect != "chat":
            obj["dialect"] = self.dialect
            obj["response"] = self.response
        return orjson.dumps(obj)

    @classmethod
    def loads(cls, data: bytes) -> StreamMeta:
        obj = orjson.loads(data)
        return cls(auth=str(obj["auth"]), raw=dict(obj["raw"]),
                   dialect=str(obj.get("dialect") or "chat"), response=obj.get("response"))


def auth_digest(header: str | None) -> str:
    """SHA-256 (hex) of the caller's credential (``Authorization`` or ``x-api-key``), so the
    key itself is never stored; the digest of nothing when there is none."""
    token = (header or "").strip()
    scheme, _, rest = token.partition(" ")
    if scheme.lower() == "bearer":
        token = rest.strip()
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def frame(stream_id: str, first_seq: int, data: bytes) -> tuple[list[bytes], bytes]:
    """Splits ``data`` (whole ``data: …`` events and ``:`` comments, as the relay writes them)
    into events carrying ``id: <stream id>:<seq>`` from ``first_seq`` on. Returns the events
    and the comments (keep-alives: per connection, never logged)."""
    events: list[bytes] = []
    comments = b""
    prefix = b"id: " + stream_id.encode() + b":"
    seq = first_seq
    for part in data.split(b"\n\n")[:-1]:
        if part.startswith(b":"):
            comments += part + b"\n\n"
        else:
            events.append(prefix + str(seq).encode() + b"\n" + part + b"\n\n")
            seq += 1
    return events, comments


def split_events(payload: bytes) -> list[tuple[int, bytes]]:
    """A log entry's events as ``(seq, event bytes)``, in order."""
    out: list[tuple[int, bytes]] = []
    for part in payload.split(b"\n\n")[:-1]:
        head, _, _ = part.partition(b"\n")
        seq = int(head.rpartition(b":")[2])
        out.append((seq, part + b"\n\n"))
    return out


def event_data(event: bytes) -> bytes:
    """The ``data`` of one logged event (``[DONE]`` for the last)."""
    return event.partition(b"\ndata: ")[2][:-2]


def is_done(event: bytes) -> bool:
    return event.endswith(DONE)


def parse_resume_point(stream_id: str, last_event_id: str | None,
                       starting_after: str | None) -> int:
    """The seq a resume continues after: ``Last-Event-ID: <stream id>:<seq>`` or
    ``?starting_after=<seq>``; 0 (from the start) with neither. Raises
    ``InvalidLastEventIdError`` (400) for another stream's id or a malformed value."""
    if last_event_id is not None and last_event_id.strip():
        sid, sep, seq = last_event_id.strip().rpartition(":")
        if not sep or sid != stream_id:
            raise InvalidLastEventIdError(
                f"Last-Event-ID {last_event_id[:80]!r} is not an event of stream {stream_id}.",
                param="Last-Event-ID")
        value = seq
        param = "Last-Event-ID"
    elif starting_after is not None:
        value, param = starting_after, "starting_after"
    else:
        return 0
    if not value.isdigit() or len(value) > 18:
        raise InvalidLastEventIdError(f"'{param}' must be an event number (0 or more).",
                                      param=param)
    return int(value)
