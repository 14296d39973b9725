"""A scripted Anthropic Messages upstream on loopback (docs/wire.md §5).

``POST /v1/messages`` streams the script's events byte for byte as Anthropic frames them
(``event: <name>\\ndata: <json>\\n\\n``), or answers a status error before the stream.
``POST /v1/messages/count_tokens`` answers ``{"input_tokens": script.counted}``. ``GET
/v1/models`` lists ``models`` in Anthropic's page shape. All check ``x-api-key`` and answer 401
``authentication_error`` for a wrong key. Requests and streams the gateway closed early are
recorded as by every fake (``fakes.FakeUpstream``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .fakes import FakeUpstream

Event = tuple[str, dict[str, Any]]

PING: Event = ("ping", {"type": "ping"})


def frame(event: Event) -> bytes:
    """One SSE frame as Anthropic sends it."""
    name, data = event
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_body(etype: str, message: str) -> dict[str, Any]:
    """Anthropic's error object, as sent before the stream and in ``event: error``."""
    return {"type": "error", "error": {"type": etype, "message": message}}


def message_start(input_tokens: int = 25, cache_creation: int = 0,
                  cache_read: int = 0) -> Event:
    return ("message_start", {"type": "message_start", "message": {
        "id": "msg_fake01", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": cache_creation,
                  "cache_read_input_tokens": cache_read, "output_tokens": 1}}})


def block_start(index: int, block: dict[str, Any]) -> Event:
    return ("content_block_start", {"type": "content_block_start", "index": index,
                                    "content_block": block})


def block_delta(index: int, delta: dict[str, Any]) -> Event:
    return ("content_block_delta", {"type": "content_block_delta", "index": index,
                                    "delta": delta})


def block_stop(index: int) -> Event:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def text_block(index: int, pieces: list[str]) -> list[Event]:
    return [block_start(index, {"type": "text", "text": ""}),
            *(block_delta(index, {"type": "text_delta", "text": p}) for p in pieces),
            block_stop(index)]


def thinking_block(index: int, pieces: list[str]) -> list[Event]:
    return [block_start(index, {"type": "thinking", "thinking": "", "signature": ""}),
            *(block_delta(index, {"type": "thinking_delta", "thinking": p}) for p in pieces),
            block_delta(index, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbc"}),
            block_stop(index)]


def tool_start(index: int, call_id: str, name: str) -> Event:
    return block_start(index, {"type": "tool_use", "id": call_id, "name": name, "input": {}})


def json_delta(index: int, piece: str) -> Event:
    return block_delta(index, {"type": "input_json_delta", "partial_json": piece})


def tool_block(index: int, call_id: str, name: str, pieces: list[str]) -> list[Event]:
    """A ``tool_use`` block: its start with ``input: {}``, ``input_json_delta`` pieces, stop."""
    return [tool_start(index, call_id, name), *(json_delta(index, p) for p in pieces),
            block_stop(index)]


def error_event(etype: str = "overloaded_error", message: str = "Overloaded") -> Event:
    """``event: error``, Anthropic's mid-stream failure (the stream ends after it)."""
    return ("error", error_body(etype, message))


def message_end(stop_reason: str = "end_turn", output_tokens: int = 12) -> list[Event]:
    return [("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                               "usage": {"output_tokens": output_tokens}}),
            ("message_stop", {"type": "message_stop"})]


def text_message(pieces: list[str], stop_reason: str = "end_turn", *, input_tokens: int = 25,
                 output_tokens: int = 12) -> list[Event]:
    """A whole text answer with a ``ping`` after the block start, as Anthropic sends it."""
    block = text_block(0, pieces)
    return [message_start(input_tokens), block[0], PING, *block[1:],
            *message_end(stop_reason, output_tokens)]


@dataclass
class AnthropicScript:
    """What the fake does with the next ``POST /v1/messages``."""

    events: list[Event] = field(
        default_factory=lambda: text_message(["Hello", ",", " world", "!"]))
    gap_s: float = 0.0  # pause after each event
    status: int = 200
    error: dict[str, Any] | None = None  # the body of a status error
    error_headers: dict[str, str] = field(default_factory=dict)
    die_after: int | None = None  # abort the connection after this many events
    write_size: int | None = None  # write the stream in pieces of this many bytes
    eof_delay_s: float = 0.0  # pause between the last event and the body's end
    counted: int = 42  # ``input_tokens`` answered by ``POST /v1/messages/count_tokens``


class FakeAnthropicUpstream(FakeUpstream[AnthropicScript]):
    """A scripted Messages server; ``script`` may be replaced between requests."""

    def __init__(self, key: str, models: list[str] | None = None) -> None:
        super().__init__(AnthropicScript)
        self.key = key
        self.models = models if models is not None else ["claude-test", "claude-other"]

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self._messages), web.get("/v1/models", self._models),
                web.post("/v1/messages/count_tokens", self._count_tokens)]

    async def _count_tokens(self, request: web.Request) -> web.Response:
        if (denied := await self._check_key(request)) is not None:
            return denied
        return web.json_response({"input_tokens": self.script.counted})

    async def _check_key(self, request: web.Request) -> web.Response | None:
        await self.record(request)
        if request.headers.get("x-api-key") != self.key:
            return self.error_response(401, error_body("authentication_error",
                                                       "invalid x-api-key"), {})
        return None

    async def _models(self, request: web.Request) -> web.Response:
        if (denied := await self._check_key(request)) is not None:
            return denied
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in self.models]
        return web.json_response({"data": data, "has_more": False,
                                  "first_id": self.models[0] if self.models else None,
                                  "last_id": self.models[-1] if self.models else None})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._check_key(request)) is not None:
            return denied
        script = self.script
        if script.status != 200:
            return self.error_response(script.status,
                                       script.error or error_body("api_error", "fake failure"),
                                       script.error_headers)
        return await self.stream(request, lambda response: self._send(request, response, script),
                                 headers={"Cache-Control": "no-cache"})

    async def _send(self, request: web.Request, response: web.StreamResponse,
                    script: AnthropicScript) -> bool:
        """Writes the script; False when it dropped the connection on purpose."""
        for k, event in enumerate(script.events):
            if script.die_after is not None and k == script.die_after:
                self.abort(request)
                return False
            data = frame(event)
            if script.write_size:
                for start in range(0, len(data), script.write_size):
                    await response.write(data[start:start + script.write_size])
                    await asyncio.sleep(0)
            else:
                await response.write(data)
            if script.gap_s:
                await asyncio.sleep(script.gap_s)
        if script.eof_delay_s:
            await asyncio.sleep(script.eof_delay_s)
        await response.write_eof()
        return True
