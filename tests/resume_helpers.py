"""Reading resumable streams on the wire: raw SSE events with their ids, drops, resumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

MESSAGES = [{"role": "user", "content": "tell me a story"}]


@dataclass
class Event:
    id: str | None
    data: bytes

    @property
    def seq(self) -> int:
        assert self.id is not None
        return int(self.id.rpartition(":")[2])

    def chunk(self) -> dict[str, Any]:
        obj: dict[str, Any] = orjson.loads(self.data)
        return obj


def parse_events(raw: bytes) -> list[Event]:
    """Every event (comments skipped) of a complete SSE body (``\\n`` line ends)."""
    events = []
    for block in raw.split(b"\n\n"):
        event_id = None
        data = []
        for line in block.split(b"\n"):
            if line.startswith(b"id: "):
                event_id = line[4:].decode()
            elif line.startswith(b"data: "):
                data.append(line[6:])
        if data:
            events.append(Event(event_id, b"\n".join(data)))
    return events


def text_of(events: list[Event]) -> str:
    out = []
    for event in events:
        if event.data == b"[DONE]":
            continue
        for choice in event.chunk().get("choices") or ():
            out.append((choice.get("delta") or {}).get("content") or "")
    return "".join(out)


def body(model: str = "mock/story", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "stream": True,
            "stream_options": {"resumable": True, "include_usage": True}, **extra}


def read_until(url: str, payload: dict[str, Any], k: int, *,
               headers: dict[str, str] | None = None) -> tuple[str, list[Event]]:
    """Start a stream and drop the connection once ``k`` events arrived (all of them if it ends
    first). Returns the stream id and the events read."""
    raw = b""
    with httpx.Client(timeout=30) as client, client.stream(
            "POST", url + "/v1/chat/completions", json=payload, headers=headers) as r:
        assert r.status_code == 200, r.read()
        stream_id = r.headers["x-sluicegate-stream-id"]
        for piece in r.iter_raw():
            raw += piece
            whole = raw[:raw.rfind(b"\n\n") + 2]
            if len(parse_events(whole)) >= k:
                raw = whole
                break
    return stream_id, parse_events(raw)[:k]


def resume(url: str, stream_id: str, after: int | None, *,
           headers: dict[str, str] | None = None, timeout: float = 30) -> httpx.Response:
    """The whole answer of a resume (``Last-Event-ID`` from ``after``; None: no header)."""
    sent = dict(headers or {})
    if after is not None:
        sent["Last-Event-ID"] = f"{stream_id}:{after}"
    return httpx.get(f"{url}/v1/chat/completions/{stream_id}/stream", headers=sent,
                     timeout=timeout)
