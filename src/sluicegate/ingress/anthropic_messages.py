"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: the Anthropic Messages API
served from any model (docs/wire.md §5).

The body is validated and translated to a chat request (``anthropic_request``) that the router
plans as usual. When the chain starts at an Anthropic upstream, that upstream gets the client's
own body (the model name replaced) and its ``anthropic-version`` / ``anthropic-beta`` headers
(``ChatRequest.native``); any other upstream gets the translation. Either way ``Run`` serves it,
and ``MessagesEgress`` turns the OpenAI chunks it writes into Messages events:

- ``message_start`` (``usage.input_tokens`` estimated, the exact count follows in
  ``message_delta``) before anything else, then ``ping`` for each keep-alive;
- per block ``content_block_start`` / deltas / ``content_block_stop``: ``delta.content`` →
  a text block (``text_delta``), ``delta.reasoning_content`` → a thinking block
  (``thinking_delta``), each tool call → a ``tool_use`` block (``input_json_delta``);
- ``finish_reason`` stop → end_turn, length → max_tokens, tool_calls → tool_use,
  content_filter → refusal; with the usage chunk it becomes ``message_delta`` (``stop_reason``,
  ``stop_sequence: null``, ``usage.output_tokens`` and ``input_tokens``), then ``message_stop``;
- the mid-stream error frame → ``event: error`` (``{"type": "error", "error": {type,
  message}}``), the stream's end.

Errors before the stream are Anthropic-shaped bodies with the gateway's status
(``error_body``). From an Anthropic upstream the stream is rebuilt from the gateway's chunks,
which then also carry what only a Messages client uses (``AnthropicStream`` native):
``signature_delta``, ``redacted_thinking`` blocks, the exact ``stop_reason`` and
``stop_sequence``. Not relayed: ``citations_delta`` and server-tool blocks; a non-stream answer
keeps text, tool use and thinking text only.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
from aiohttp import web

from ..errors import GatewayError
from ..local.prompt import render_chat_prompt
from ..providers.anthropic import AnthropicProvider
from ..providers.base import first_dialect
from ..providers.local import LocalProvider
from ..schemas import NativeRequest, parse_chat_request
from ..tokens import counter_for
from .anthropic_request import check_common, prompt_text, to_chat_body
from .common import DialectEgress, named_event, route_headers, run_request

__all__ = ["MessagesEgress", "count_tokens", "error_body", "messages"]

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "content_filter": "refusal", "function_call": "tool_use"}
"""OpenAI ``finish_reason`` → Anthropic ``stop_reason`` (the reverse of docs/wire.md §5)."""

FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error",
                503: "overloaded_error"}
_ANTHROPIC_TYPES = frozenset(_ERROR_TYPES.values()) | {"api_error"}


def error_type(status: int, etype: str | None) -> str:
    """The Anthropic error type for a status (docs/wire.md §5); an Anthropic type is kept."""
    if etype in _ANTHROPIC_TYPES:
        return str(etype)
    if etype == "timeout_error" or status == 504:
        return "timeout_error"
    return _ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500
                            else "api_error")


def error_body(error: GatewayError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` for ``error``."""
    return {"type": "error",
            "error": {"type": error_type(error.status, error.type), "message": error.message}}


def new_message_id() -> str:
    return f"msg_{random.getrandbits(96):024x}"


def _usage(usage: dict[str, Any] | None, fallback_input: int) -> dict[str, Any]:
    usage = usage or {}
    return {"input_tokens": int(usage.get("prompt_tokens") or fallback_input),
            "output_tokens": int(usage.get("completion_tokens") or 0)}


class MessagesEgress(DialectEgress):
    """The Messages event stream of one request (see the module docstring)."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model
        self.id = new_message_id()
        self.started = False
        self.ended = False
        self.block = -1  # the open block's index; -1: none
        self.block_kind: str | None = None
        self.tool_blocks: dict[int, int] = {}  # OpenAI tool call index → block index
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.usage: dict[str, Any] | None = None

    def _begin(self, out: list[bytes], chunk: dict[str, Any] | None = None) -> None:
        if self.started:
            return
        self.started = True
        usage: dict[str, Any] = {"input_tokens": self.estimated_prompt_tokens(),
                                 "output_tokens": 0}
        for choice in (chunk or {}).get("choices") or ():
            native = (choice.get("delta") or {}).get("message_usage")
            if isinstance(native, dict):  # an Anthropic upstream's own count
                usage = native
        out.append(named_event("message_start", {"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}}))

    def _close_block(self, out: list[bytes]) -> None:
        if self.block_kind is not None:
            out.append(named_event("content_block_stop",
                                   {"type": "content_block_stop", "index": self.block}))
            self.block_kind = None

    def _open_block(self, kind: str, block: dict[str, Any], out: list[bytes]) -> None:
        self._close_block(out)
        self.block += 1
        self.block_kind = kind
        out.append(named_event("content_block_start", {
            "type": "content_block_start", "index": self.block, "content_block": block}))

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        out.append(named_event("content_block_delta", {
            "type": "content_block_delta", "index": self.block, "delta": delta}))

    def on_keepalive(self) -> bytes:
        out: list[bytes] = []
        self._begin(out)
        out.append(named_event("ping", {"type": "ping"}))
        return b"".join(out)

    def on_chunk(self, chunk: dict[str, Any]) -> bytes:
        out: list[bytes] = []
        self._begin(out, chunk)
        if chunk.get("error"):
            self._error(chunk["error"], out)
            return b"".join(out)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if thinking := delta.get("reasoning_content"):
                if self.block_kind != "thinking":
                    self._open_block("thinking", {"type": "thinking", "thinking": "",
                                                  "signature": ""}, out)
                self._delta({"type": "thinking_delta", "thinking": thinking}, out)
            if delta:  # what only an Anthropic upstream sends (AnthropicStream native)
                self._native(delta, out)
            if text := delta.get("content"):
                if self.block_kind != "text":
                    self._open_block("text", {"type": "text", "text": ""}, out)
                self._delta({"type": "text_delta", "text": text}, out)
            for call in delta.get("tool_calls") or ():
                self._tool_call(call, out)
            reason = choice.get("finish_reason")
            if reason is not None and reason != "error":
                self.stop_reason = delta.get("stop_reason") or STOP_REASONS.get(reason,
                                                                                "end_turn")
                self.stop_sequence = delta.get("stop_sequence")
        return b"".join(out)

    def _native(self, delta: dict[str, Any], out: list[bytes]) -> None:
        signature = delta.get("reasoning_signature")
        if signature is not None and self.block_kind == "thinking":
            self._delta({"type": "signature_delta", "signature": signature}, out)
        redacted = delta.get("redacted_thinking")
        if redacted is not None:
            self._open_block("redacted_thinking", {"type": "redacted_thinking",
                                                   "data": redacted}, out)
            self._close_block(out)

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        index = call.get("index", 0)
        fn = call.get("function") or {}
        if index not in self.tool_blocks:
            self._open_block("tool_use", {"type": "tool_use", "id": call.get("id") or "",
                                          "name": fn.get("name") or "", "input": {}}, out)
            self.tool_blocks[index] = self.block
        if self.tool_blocks[index] != self.block or self.block_kind != "tool_use":
            return  # a call's fragments are contiguous (docs/wire.md §2)
        if arguments := fn.get("arguments"):
            self._delta({"type": "input_json_delta", "partial_json": arguments}, out)

    def _error(self, error: dict[str, Any], out: list[bytes]) -> None:
        self.ended = True
        code = error.get("code")
        etype = error.get("type")
        status = 504 if code in ("stall_timeout", "total_timeout", "upstream_timeout") else 500
        if code == "shutting_down":
            status = 529
        out.append(named_event("error", {"type": "error", "error": {
            "type": error_type(status, etype if isinstance(etype, str) else None),
            "message": str(error.get("message") or "The stream failed.")}}))

    def on_done(self) -> bytes:
        out: list[bytes] = []
        if self.ended:
            return b""
        self.ended = True
        self._begin(out)
        self._close_block(out)
        usage = _usage(self.usage, self.estimated_prompt_tokens())
        out.append(named_event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason or "end_turn",
                      "stop_sequence": self.stop_sequence},
            "usage": {"output_tokens": usage["output_tokens"],
                      "input_tokens": usage["input_tokens"]}}))
        out.append(named_event("message_stop", {"type": "message_stop"}))
        return b"".join(out)


def to_message(completion: dict[str, Any], model: str) -> dict[str, Any]:
    """A chat completion (non-stream) as a Messages ``message`` object."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": message["reasoning_content"],
                        "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        try:
            arguments = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = {}
        content.append({"type": "tool_use", "id": call.get("id") or "",
                        "name": fn.get("name") or "", "input": arguments})
    return {"id": new_message_id(), "type": "message", "role": "assistant", "model": model,
            "content": content,
            "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
            "stop_sequence": None, "usage": _usage(completion.get("usage"), 0)}


def _forwarded(request: web.Request) -> dict[str, str]:
    return {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}


async def messages(gateway: Any, request: web.Request) -> web.StreamResponse:
    body = await gateway._json(request)
    stream = body.get("stream") is True if isinstance(body, dict) else False
    # A model served by an Anthropic upstream gets the body as it came: what has no chat
    # equivalent is no reason to refuse it (the translation only plans and estimates).
    model = check_common(body, lenient=True)["model"]  # strictly checked by to_chat_body
    direct = isinstance(gateway.router.resolve(model).provider, AnthropicProvider)
    req = parse_chat_request(to_chat_body(body, stream=stream, lenient=direct))
    policy, chain = gateway.router.plan(req)
    if first_dialect(chain) == "anthropic":
        native = {k: v for k, v in body.items() if k != "stream"}
        req.native = NativeRequest("anthropic", native, _forwarded(request))
    if stream:
        egress = MessagesEgress(req.model)
        _, response = await run_request(gateway, request, req, policy, chain, egress)
        return response
    _, response = await run_request(gateway, request, req, policy, chain, None)
    assert isinstance(response, web.Response) and response.body is not None
    completion = orjson.loads(bytes(response.body))  # type: ignore[arg-type]
    route = route_headers(response)
    return web.Response(body=orjson.dumps(to_message(completion, req.model)),
                        content_type="application/json", headers=route)


async def count_tokens(gateway: Any, request: web.Request) -> web.Response:
    """``{"input_tokens": n}``: an Anthropic upstream's own count; the embedded model's
    tokenizer over its rendered prompt; else the dialect's estimate (docs: ``tokens``)."""
    body = check_common(await gateway._json(request), lenient=True)
    target = gateway.router.resolve(body["model"])
    provider = target.provider
    if isinstance(provider, AnthropicProvider):
        headers = {**provider.request_headers(), **_forwarded(request)}
        counted = await provider.get_json(provider.base_url + "/messages/count_tokens",
                                          10.0, post={**body, "model": target.upstream_model},
                                          headers=headers)
        return web.json_response(counted)
    check_common(body)  # what only an Anthropic upstream takes
    if isinstance(provider, LocalProvider):
        req = parse_chat_request(to_chat_body({**body, "max_tokens": 1}, stream=False))
        tokens = await asyncio.to_thread(provider.engine.count_tokens,
                                         render_chat_prompt(req.messages))
    else:
        tokens = counter_for(getattr(provider, "dialect", None))(prompt_text(body))
    return web.json_response({"input_tokens": tokens})
