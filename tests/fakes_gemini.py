"""A scripted Gemini API server on loopback (docs/wire.md §6).

``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` answers data-only SSE, one
``GenerateContentResponse`` per event, framed ``data: <json>`` + a blank line with CRLF line
ends by default (what Google's front end sends; the official JS SDK splits events at
``\\r\\n\\r\\n``, ``\\n\\n`` or ``\\r\\r``), and no terminator: the body just ends.
``GET /v1beta/models`` answers a ``models`` list in pages.

A ``GeminiScript`` sets the events, the line end, a gap between events, a status error before
the stream, an ``error`` event or an abrupt disconnect after some events. Every request is
recorded (path, query, headers, JSON body), and so is every stream the peer left early.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .fakes import FakeUpstream

MODELS: list[dict[str, Any]] = [
    {"name": "models/gemini-test", "supportedGenerationMethods": ["generateContent",
                                                                   "countTokens"]},
    {"name": "models/text-embedding-test", "supportedGenerationMethods": ["embedContent"]},
    {"name": "models/gemini-other", "supportedGenerationMethods": ["generateContent"]},
]


def text_event(text: str, *, finish: str | None = None, index: int = 0, thought: bool = False,
               usage: dict[str, int] | None = None) -> dict[str, Any]:
    """One ``GenerateContentResponse`` with a text part for candidate ``index``."""
    part: dict[str, Any] = {"text": text}
    if thought:
        part["thought"] = True
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": index}
    if finish is not None:
        candidate["finishReason"] = finish
    event: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-test-001",
                             "responseId": "resp-fake-1"}
    if usage is not None:
        event["usageMetadata"] = usage
    return event


def function_call_event(name: str, args: dict[str, Any], *, call_id: str | None = None,
                        finish: str | None = "STOP",
                        usage: dict[str, int] | None = None) -> dict[str, Any]:
    """One ``GenerateContentResponse`` with a whole ``functionCall`` part (Gemini sends a call in
    one piece, ``args`` an object; ``id`` only on some models) and, by default, ``finishReason``
    STOP: Gemini has no tool-call finish value (docs/wire.md §6)."""
    call: dict[str, Any] = {"name": name, "args": args}
    if call_id is not None:
        call["id"] = call_id
    event = text_event("", finish=finish, usage=usage)
    event["candidates"][0]["content"]["parts"] = [{"functionCall": call}]
    return event


def usage_metadata(prompt: int, candidates: int, thoughts: int = 0,
                   cached: int = 0) -> dict[str, int]:
    meta = {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates + thoughts}
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    if cached:
        meta["cachedContentTokenCount"] = cached
    return meta


def default_events() -> list[dict[str, Any]]:
    return [
        text_event("Hello", usage=usage_metadata(7, 1)),
        text_event(", world"),
        text_event("!", finish="STOP", usage=usage_metadata(7, 3)),
    ]


@dataclass
class GeminiScript:
    """What the fake does with the next requests."""

    events: list[Any] = field(default_factory=default_events)  # dicts, or bytes sent as data
    newline: bytes = b"\r\n"
    gap_s: float = 0.0
    status: int = 200
    error_body: Any = None  # the JSON error body (Google sends an object; some front ends a list)
    error_headers: dict[str, str] = field(default_factory=dict)
    error_after: int | None = None  # send an ``error`` event after this many events
    die_after: int | None = None  # drop the connection after this many events
    split: int | None = None  # write the body in pieces of this many bytes (tests read splits)


class FakeGeminiUpstream(FakeUpstream[GeminiScript]):
    """A scripted Gemini API server; ``script`` may be replaced between requests."""

    prefix = "/v1beta"

    def __init__(self) -> None:
        super().__init__(GeminiScript)
        self.models = list(MODELS)
        self.page_size = 2

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1beta/models/{action}", self._generate),
                web.get("/v1beta/models", self._list)]

    async def _list(self, request: web.Request) -> web.Response:
        await self.record(request)
        start = int(request.query.get("pageToken") or 0)
        page = self.models[start:start + self.page_size]
        body: dict[str, Any] = {"models": page}
        if start + self.page_size < len(self.models):
            body["nextPageToken"] = str(start + self.page_size)
        return web.json_response(body)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        script = self.script
        if script.status != 200:
            error = script.error_body or {"error": {"code": script.status,
                                                    "message": "fake failure",
                                                    "status": "INTERNAL"}}
            return self.error_response(script.status, error, script.error_headers)
        return await self.stream(request,
                                 lambda response: self._stream(request, response, script))

    async def _stream(self, request: web.Request, response: web.StreamResponse,
                      script: GeminiScript) -> bool:
        """Sends the script; False when it dropped the connection on purpose."""
        end = script.newline * 2

        async def send(obj: Any) -> None:
            data = obj if isinstance(obj, bytes) else orjson.dumps(obj)
            frame = b"data: " + data + end
            if not script.split:
                await response.write(frame)
                return
            for i in range(0, len(frame), script.split):
                await response.write(frame[i:i + script.split])
                await asyncio.sleep(0.001)  # let each piece go out as its own TCP segment

        for k, event in enumerate(script.events):
            if script.die_after is not None and k == script.die_after:
                self.abort(request)
                return False
            if script.error_after is not None and k == script.error_after:
                await send({"error": {"code": 503, "message": "The model is overloaded.",
                                      "status": "UNAVAILABLE"}})
                return True
            await send(event)
            if script.gap_s:
                await asyncio.sleep(script.gap_s)
        return True
