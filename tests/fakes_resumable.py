"""A fake sluicegate gateway serving resumable chat streams on loopback, for the SDK's tests.

It speaks the protocol the SDK implements (``sluicegate.client._resume``):

- ``POST /v1/chat/completions`` with ``stream: true``: an OpenAI chat stream of M chunks (role
  chunk, one content chunk per text, finish chunk, usage chunk when ``include_usage``) and
  ``data: [DONE]``. With ``stream_options.resumable: true`` the response carries
  ``X-Sluicegate-Stream-Id: rs_…`` and every event (``[DONE]`` included) ``id: <sid>:<seq>``,
  seq = 1…M+1; keep-alive comments carry none. Without it: data-only events, as today.
- ``GET /v1/chat/completions/{sid}/stream`` with ``Last-Event-ID: <sid>:<seq>`` or
  ``?starting_after=<seq>`` and the same ``Authorization``: the events after seq. Errors, with
  OpenAI-shaped bodies: 404 ``stream_not_found`` (unknown, cancelled or another key's
  stream), 400 ``invalid_last_event_id`` (another stream's id, not an id, or past the end), 410
  ``stream_events_expired`` (the events after seq left the retained window), 503
  ``state_unavailable``.
- ``DELETE /v1/chat/completions/{sid}``: ``{"id", "object": "chat.completion.stream",
  "cancelled": true}``, or 404.

Each connection (the POST, then each resume GET, in order) follows the next plan of the
script: ``None`` serves to the end; ``Drop(k, how)`` ends it after k events written on it —
``"abort"`` drops the TCP connection mid-body (no chunked terminator: the client sees a peer
that closed mid-message), ``"reset"`` drops it with an RST, ``"end"`` ends the body cleanly
without ``[DONE]``; ``Refuse(status)`` answers a GET with that status (404 first forgets the
stream, 410 first drops every retained event, so the answer is the protocol's own). Every
request is recorded (``received``, with its arrival time in ``arrived``).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web

from .fakes import FakeUpstream

TEXTS = ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "stream."]


@dataclass(frozen=True)
class Drop:
    """End a connection after ``after`` events written on it (see the module)."""

    after: int
    how: Literal["abort", "reset", "end"] = "abort"


@dataclass(frozen=True)
class Refuse:
    """Answer a resume GET with ``status`` (see the module)."""

    status: int


Plan = Drop | Refuse | None


@dataclass
class ResumeScript:
    """What the fake does with the next connections."""

    texts: list[str] = field(default_factory=lambda: list(TEXTS))
    plans: list[Plan] = field(default_factory=list)  # per connection, in order
    default: Plan = None  # for connections past ``plans``
    overlap: int = 0  # a resume starts this many events before the one asked for (replays)
    gap_s: float = 0.0  # pause after each event
    stall_connection: int | None = None  # this connection (0: the POST) stalls...
    stall_s: float = 3.0  # ...this long before its first event


@dataclass
class StoredStream:
    """A resumable stream's retained events: ``events[i]`` is the data of seq i + 1."""

    sid: str
    authorization: str | None
    events: list[bytes]
    expired_up_to: int = 0  # events with seq ≤ this have left the retained window


def _error(status: int, code: str, message: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error" if status < 500
                      else "server_error", "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class FakeResumableGateway(FakeUpstream[ResumeScript]):
    """The fake gateway (see the module). ``streams``: the resumable streams it holds."""

    def __init__(self) -> None:
        super().__init__(ResumeScript)
        self.streams: dict[str, StoredStream] = {}
        self.arrived: list[float] = []  # time.monotonic() of each request in ``received``
        self.connections = 0  # streams served (POST and GET), for ``stall_connection``

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self._create),
                web.get("/v1/chat/completions/{sid}/stream", self._resume),
                web.delete("/v1/chat/completions/{sid}", self._cancel)]

    def reset(self) -> None:
        super().reset()
        self.streams.clear()
        self.arrived.clear()
        self.connections = 0

    # -- what tests read -------------------------------------------------------------------

    def requests(self, method: str) -> list[Any]:
        return [r for r in self.received if r.method == method]

    @property
    def resume_ids(self) -> list[str | None]:
        """The ``Last-Event-ID`` of each resume GET (None when it had none)."""
        return [r.headers.get("Last-Event-ID") for r in self.requests("GET")]

    # -- handlers ------------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> Any:
        received = await self.record(request, {})
        self.arrived.append(time.monotonic())
        return received

    def _plan(self) -> Plan:
        script = self.script
        return script.plans.pop(0) if script.plans else script.default

    def _chunks(self, body: dict[str, Any]) -> list[bytes]:
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                "created": 1700000000, "model": body.get("model")}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return orjson.dumps({**base, "choices": [{"index": 0, "delta": delta,
                                                      "logprobs": None,
                                                      "finish_reason": finish}]})

        texts = self.script.texts
        out = [chunk({"role": "assistant", "content": ""})]
        out += [chunk({"content": text}) for text in texts]
        out.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            out.append(orjson.dumps({**base, "choices": [], "usage": {
                "prompt_tokens": 5, "completion_tokens": len(texts),
                "total_tokens": 5 + len(texts)}}))
        return [*out, b"[DONE]"]

    async def _create(self, request: web.Request) -> web.StreamResponse:
        received = await self._record(request)
        body = received.body
        plan = self._plan()
        events = self._chunks(body)
        if not (body.get("stream_options") or {}).get("resumable"):
            return await self._serve(request, plan, None, events, 0)
        sid = "rs_" + secrets.token_urlsafe(12)
        self.streams[sid] = stored = StoredStream(sid, request.headers.get("Authorization"),
                                                  events)
        return await self._serve(request, plan, stored.sid, events, 0)

    async def _resume(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        sid = request.match_info["sid"]
        plan = self._plan()
        if isinstance(plan, Refuse):
            if plan.status == 404:
                self.streams.pop(sid, None)
            elif plan.status == 410 and sid in self.streams:
                self.streams[sid].expired_up_to = len(self.streams[sid].events)
            elif plan.status == 503:
                return _error(503, "state_unavailable", "The stream store is unavailable.")
            elif plan.status != 410:
                return _error(plan.status, "scripted", f"Scripted status {plan.status}.")
            plan = None
        stored = self.streams.get(sid)
        if stored is None or stored.authorization != request.headers.get("Authorization"):
            return _error(404, "stream_not_found", f"No stream {sid!r}.")
        header = request.headers.get("Last-Event-ID")
        if header is not None:
            owner, _, tail = header.rpartition(":")
            if owner != sid or not tail.isdigit():
                return _error(400, "invalid_last_event_id",
                              f"{header!r} is not an event of {sid}.", "Last-Event-ID")
            after = int(tail)
        else:
            tail = request.query.get("starting_after", "0")
            if not tail.isdigit():
                return _error(400, "invalid_last_event_id", "starting_after must be a seq.",
                              "starting_after")
            after = int(tail)
        if after > len(stored.events):
            return _error(400, "invalid_last_event_id", f"{sid} has no event {after}.",
                          "Last-Event-ID")
        if after < stored.expired_up_to:
            return _error(410, "stream_events_expired",
                          f"The events of {sid} after {after} have expired.")
        start = max(after - self.script.overlap, 0)
        return await self._serve(request, plan, sid, stored.events, start)

    async def _cancel(self, request: web.Request) -> web.Response:
        await self._record(request)
        sid = request.match_info["sid"]
        stored = self.streams.get(sid)
        if stored is None or stored.authorization != request.headers.get("Authorization"):
            return _error(404, "stream_not_found", f"No stream {sid!r}.")
        del self.streams[sid]
        return web.json_response({"id": sid, "object": "chat.completion.stream",
                                  "cancelled": True})

    async def _serve(self, request: web.Request, plan: Plan, sid: str | None,
                     events: list[bytes], start: int) -> web.StreamResponse:
        """Events ``start``… (0-based) of ``events``, ended as ``plan`` says."""
        script = self.script
        gap_s = script.gap_s
        stall = script.stall_connection == self.connections
        self.connections += 1

        async def send(response: web.StreamResponse) -> bool:
            await response.write(b": keep-alive\n\n")
            if stall:
                await asyncio.sleep(script.stall_s)
            for sent, index in enumerate(range(start, len(events))):
                if isinstance(plan, Drop) and sent == plan.after:
                    if plan.how == "end":
                        return True  # the body ends, without [DONE]
                    await self._drop(request, reset=plan.how == "reset")
                    return False
                head = b"" if sid is None else b"id: %s:%d\n" % (sid.encode(), index + 1)
                await response.write(head + b"data: " + events[index] + b"\n\n")
                if index == 1:
                    await response.write(b": keep-alive\n\n")
                if gap_s:
                    await asyncio.sleep(gap_s)
            return True

        headers = {"X-Sluicegate-Provider": "fake", "X-Request-Id": "req-fake"}
        if sid is not None:
            headers["X-Sluicegate-Stream-Id"] = sid
        return await self.stream(request, send, headers=headers)

    @staticmethod
    async def _drop(request: web.Request, *, reset: bool) -> None:
        """Drop the connection once what was written has left (so the client gets it all,
        then the close): FIN without the body's end, or RST."""
        transport = request.transport
        assert transport is not None
        while transport.get_write_buffer_size():  # noqa: ASYNC110 - no event tells it
            await asyncio.sleep(0.001)
        if reset:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
