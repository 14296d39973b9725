"""A scripted OpenAI Responses upstream on loopback (docs/wire.md §4, §4b).

``POST /v1/responses`` streams what the Responses API sends for ``stream: true``, in its order
and shapes (openai-python ``types/responses``: ``ResponseStreamEvent``): every event named
(``event: <type>``) with ``{"type", "sequence_number", …}``; ``response.created`` and
``response.in_progress`` (the response ``in_progress``, echoing the request's settings); per
output item ``response.output_item.added`` … ``response.output_item.done``: a message's
``response.content_part.added``, ``response.output_text.delta`` (``logprobs: []``,
``obfuscation``), ``response.output_text.done``, ``response.content_part.done``; a function
call's ``response.function_call_arguments.delta`` / ``.done``; a reasoning item's
``response.reasoning_summary_part.added``, ``response.reasoning_summary_text.delta`` / ``.done``,
``response.reasoning_summary_part.done``; then ``response.completed`` (or
``response.incomplete``) with the whole output and ``usage``. No ``[DONE]``: the body's end is
the stream's end.

Faults: a status error before the stream (OpenAI's error body), an ``error`` event or a
``response.failed`` after some deltas, a stall, a dropped connection. ``Authorization: Bearer``
is checked (401 otherwise). Requests and early closes are recorded (``fakes.FakeUpstream``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .fakes import FakeUpstream

Event = dict[str, Any]  # one event's data without its sequence_number (added when sent)


@dataclass
class Text:
    """A ``message`` output item streaming ``pieces`` of ``output_text``."""

    pieces: list[str]


@dataclass
class Call:
    """A ``function_call`` output item whose ``arguments`` stream as ``pieces``."""

    call_id: str
    name: str
    pieces: list[str]


@dataclass
class Reasoning:
    """A ``reasoning`` output item with one summary part per entry, each streamed in pieces."""

    parts: list[list[str]]


Item = Text | Call | Reasoning


def usage(input_tokens: int = 36, output_tokens: int = 12, *, cached: int = 0,
          reasoning: int = 0) -> dict[str, Any]:
    """A Responses ``usage`` object (tokens)."""
    return {"input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens}


def error_body(message: str = "fake failure", code: str | None = None,
               etype: str = "server_error") -> dict[str, Any]:
    """OpenAI's error body, as sent with a status before the stream."""
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


@dataclass
class ResponsesScript:
    """What the fake does with the next ``POST /v1/responses``."""

    items: list[Item] = field(default_factory=lambda: [Text(["Hello", ",", " world", "!"])])
    usage: dict[str, Any] = field(default_factory=usage)
    incomplete: str | None = None  # end with response.incomplete for this reason
    status: int = 200
    error: dict[str, Any] | None = None  # the body of a status error
    error_after: int | None = None  # an `error` event after this many deltas, then the end
    fail_after: int | None = None  # `response.failed` after this many deltas
    stall_after: int | None = None  # go silent after this many deltas...
    stall_s: float = 30.0  # ...for this long
    die_after: int | None = None  # drop the connection after this many deltas
    extra_events: list[tuple[int, Event]] = field(default_factory=list)  # (before event k, e)


def _response(body: dict[str, Any], rid: str, status: str, output: list[dict[str, Any]],
              use: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """The response object as the API returns it, echoing the request's settings."""
    return {
        "id": rid, "object": "response", "created_at": 1741290958, "status": status,
        "background": False, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": None,
        "model": f"{body.get('model')}-2025-04-14", "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": None,
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "safety_identifier": None, "service_tier": "default",
        "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "top_logprobs": 0, "top_p": body.get("top_p", 1.0), "truncation": "disabled",
        "usage": use, "user": None, "metadata": body.get("metadata") or {}, **extra}


def _item_events(item: Item, index: int) -> tuple[list[Event], dict[str, Any]]:
    """The events of one output item and the item as completed."""
    out: list[Event] = []
    if isinstance(item, Text):
        iid = f"msg_{index:04d}fake"
        text = "".join(item.pieces)
        where = {"item_id": iid, "output_index": index, "content_index": 0}
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        done_part = {**part, "text": text}
        done = {"id": iid, "type": "message", "status": "completed", "content": [done_part],
                "role": "assistant"}
        out.append({"type": "response.output_item.added", "output_index": index,
                    "item": {**done, "status": "in_progress", "content": []}})
        out.append({"type": "response.content_part.added", **where, "part": part})
        out.extend({"type": "response.output_text.delta", **where, "delta": piece,
                    "logprobs": [], "obfuscation": "xk2"} for piece in item.pieces)
        out.append({"type": "response.output_text.done", **where, "text": text, "logprobs": []})
        out.append({"type": "response.content_part.done", **where, "part": done_part})
    elif isinstance(item, Call):
        iid = f"fc_{index:04d}fake"
        arguments = "".join(item.pieces)
        done = {"id": iid, "type": "function_call", "status": "completed",
                "arguments": arguments, "call_id": item.call_id, "name": item.name}
        out.append({"type": "response.output_item.added", "output_index": index,
                    "item": {**done, "status": "in_progress", "arguments": ""}})
        out.extend({"type": "response.function_call_arguments.delta", "item_id": iid,
                    "output_index": index, "delta": piece, "obfuscation": "q1"}
                   for piece in item.pieces)
        out.append({"type": "response.function_call_arguments.done", "item_id": iid,
                    "output_index": index, "name": item.name, "arguments": arguments})
    else:
        iid = f"rs_{index:04d}fake"
        summary = [{"type": "summary_text", "text": "".join(p)} for p in item.parts]
        done = {"id": iid, "type": "reasoning", "summary": summary,
                "encrypted_content": "gAAAAfake"}
        out.append({"type": "response.output_item.added", "output_index": index,
                    "item": {"id": iid, "type": "reasoning", "summary": []}})
        for k, pieces in enumerate(item.parts):
            where = {"item_id": iid, "output_index": index, "summary_index": k}
            out.append({"type": "response.reasoning_summary_part.added", **where,
                        "part": {"type": "summary_text", "text": ""}})
            out.extend({"type": "response.reasoning_summary_text.delta", **where, "delta": p,
                        "obfuscation": "z"} for p in pieces)
            out.append({"type": "response.reasoning_summary_text.done", **where,
                        "text": summary[k]["text"]})
            out.append({"type": "response.reasoning_summary_part.done", **where,
                        "part": summary[k]})
    out.append({"type": "response.output_item.done", "output_index": index, "item": done})
    return out, done


def answer_events(body: dict[str, Any], script: ResponsesScript,
                  rid: str = "resp_fake0001") -> list[Event]:
    """Every event of the scripted answer to ``body``, in order (without sequence numbers)."""
    start = _response(body, rid, "in_progress", [], None)
    events: list[Event] = [{"type": "response.created", "response": start},
                           {"type": "response.in_progress", "response": start}]
    output: list[dict[str, Any]] = []
    for index, item in enumerate(script.items):
        item_events, done = _item_events(item, index)
        events.extend(item_events)
        output.append(done)
    if script.incomplete is not None:
        events.append({"type": "response.incomplete", "response": _response(
            body, rid, "incomplete", output, script.usage,
            incomplete_details={"reason": script.incomplete})})
    else:
        events.append({"type": "response.completed", "response": _response(
            body, rid, "completed", output, script.usage)})
    for before, extra in sorted(script.extra_events, key=lambda e: e[0], reverse=True):
        events.insert(before, extra)
    return events


def frame(event: Event, sequence_number: int) -> bytes:
    """One SSE frame as the API sends it."""
    data = {"type": event["type"], "sequence_number": sequence_number,
            **{k: v for k, v in event.items() if k != "type"}}
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class FakeResponsesUpstream(FakeUpstream[ResponsesScript]):
    """A scripted Responses server; ``script`` may be replaced between requests, ``queue``
    holds scripts for the next requests before it. ``sent`` lists every event sent (with its
    ``sequence_number``), over all requests."""

    def __init__(self, key: str) -> None:
        super().__init__(ResponsesScript)
        self.key = key
        self.queue: list[ResponsesScript] = []
        self.sent: list[dict[str, Any]] = []

    def reset(self) -> None:
        super().reset()
        self.queue.clear()
        self.sent.clear()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/responses", self._responses), web.get("/v1/models", self._models)]

    async def _denied(self, request: web.Request, empty: Any = None) -> web.Response | None:
        await self.record(request, empty)
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return self.error_response(401, error_body("Incorrect API key provided.",
                                                       "invalid_api_key",
                                                       "invalid_request_error"), {})
        return None

    async def _models(self, request: web.Request) -> web.Response:
        if (denied := await self._denied(request, {})) is not None:
            return denied
        return web.json_response({"object": "list", "data": [
            {"id": "gpt-test", "object": "model", "created": 0, "owned_by": "fake"}]})

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._denied(request)) is not None:
            return denied
        script = self.queue.pop(0) if self.queue else self.script
        if script.status != 200:
            return self.error_response(script.status, script.error or error_body(), {})
        body = self.received[-1].body
        return await self.stream(request, lambda response: self._send(request, response,
                                                                       body, script))

    async def _send(self, request: web.Request, response: web.StreamResponse,
                    body: dict[str, Any], script: ResponsesScript) -> bool:
        deltas = 0
        for seq, event in enumerate(answer_events(body, script)):
            if event["type"].endswith(".delta"):
                if deltas == script.die_after:
                    self.abort(request)
                    return False
                if deltas == script.stall_after:
                    await asyncio.sleep(script.stall_s)
                if deltas == script.error_after:
                    await self._write(response, {
                        "type": "error", "code": "server_error", "param": None,
                        "message": "The server had an error while processing your request."},
                        seq)
                    await response.write_eof()
                    return True
                if deltas == script.fail_after:
                    failed = _response(body, "resp_fake0001", "failed", [], None)
                    failed["error"] = {"code": "server_error",
                                       "message": "The model failed to finish."}
                    await self._write(response, {"type": "response.failed",
                                                 "response": failed}, seq)
                    await response.write_eof()
                    return True
                deltas += 1
            await self._write(response, event, seq)
        await response.write_eof()
        return True

    async def _write(self, response: web.StreamResponse, event: Event, seq: int) -> None:
        self.sent.append({**event, "sequence_number": seq})
        await response.write(frame(event, seq))
