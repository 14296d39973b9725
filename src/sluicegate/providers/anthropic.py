"""Anthropic Messages provider: ``POST {base_url}/messages`` streamed, translated to OpenAI chunks.

Request translation lives in ``providers.anthropic_request``. Headers (docs/wire.md §5):
``x-api-key``, ``anthropic-version: 2023-06-01``, ``content-type: application/json`` and, for
the stream, ``accept: text/event-stream``.

Stream translation (docs/wire.md §5 → §2). The stream carries ``event:`` names, decoded with
``SSEDecoder.feed``; each network read becomes one batch of chunks:

- ``message_start`` → a role chunk (``delta: {role: "assistant", content: ""}``); its
  ``usage`` gives the prompt tokens (``input_tokens + cache_creation_input_tokens +
  cache_read_input_tokens``, cache reads also as ``prompt_tokens_details.cached_tokens``);
- ``text_delta`` → ``delta.content``; ``thinking_delta`` → ``delta.reasoning_content``;
  ``signature_delta``, ``citations_delta`` and ``redacted_thinking`` blocks are dropped;
- a ``tool_use`` block start → ``delta.tool_calls[{index, id, type: "function",
  function: {name, arguments: ""}}]`` with ``index`` counted per tool call (0, 1, …; not the
  Anthropic block index); ``input_json_delta.partial_json`` → ``{index, function:
  {arguments}}`` for that call; a call that got no arguments gets ``"{}"`` at its block stop.
  Each call's fragments stay contiguous (``ToolCallSequencer``), as openai-python's stream
  helper requires, even if ``tool_use`` blocks interleave;
- ``message_delta`` → the finish chunk, ``stop_reason`` mapped by ``FINISH_REASONS``, and the
  cumulative ``usage.output_tokens`` as completion tokens;
- ``message_stop`` → one usage chunk (``choices: []``) and the end of the stream;
- ``ping`` and unknown events are skipped; ``event: error`` raises ``UpstreamError`` with the
  Anthropic error type (e.g. ``overloaded_error``) as ``.type``, after the chunks before it;
- a connection lost mid-body, or a body that ends before ``message_stop``, raises
  ``UpstreamError``.

Errors before the stream keep the upstream status and the Anthropic error ``type`` and
``message`` (``{"type": "error", "error": {"type", "message"}}``), with ``retry-after`` (s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from ..chunks import Chunk, chat_chunk, make_usage, usage_chunk
from ..errors import UpstreamError, UpstreamStatusError
from ..schemas import ChatRequest
from ..sse import ServerSentEvent, SSEDecoder
from .anthropic_request import build_messages_request
from .base import ChunkStream, Target
from .http import END, SKIP, HTTPProvider, MalformedEvent, UpstreamStream, retry_after

__all__ = [
    "ANTHROPIC_VERSION",
    "FINISH_REASONS",
    "AnthropicProvider",
    "AnthropicStream",
    "anthropic_status_error",
]

log = logging.getLogger("sluicegate.providers.anthropic")

ANTHROPIC_VERSION = "2023-06-01"

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""Anthropic ``stop_reason`` → OpenAI ``finish_reason`` (docs/wire.md §5); anything else → stop."""

_MAX_MODEL_PAGES = 20


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def anthropic_status_error(status: int, body: bytes,
                           headers: Mapping[str, str]) -> UpstreamStatusError:
    """The typed error for a non-2xx answer: Anthropic's ``error.type`` and ``error.message``
    are kept (docs/wire.md §5 lists the types: 400 invalid_request_error … 529 overloaded_error);
    a body that is not Anthropic-shaped keeps only the status. ``retry_after`` in s."""
    message = f"The upstream answered HTTP {status}."
    etype: str | None = None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict):
        if isinstance(err.get("message"), str) and err["message"]:
            message = err["message"]
        if isinstance(err.get("type"), str) and err["type"]:
            etype = err["type"]
    return UpstreamStatusError(status, message, type=etype, retry_after=retry_after(headers))


def stream_error(payload: dict[str, Any]) -> UpstreamError:
    """The ``UpstreamError`` for an ``event: error`` payload ``{"type": "error", "error":
    {"type", "message"}}``: ``.type`` is the Anthropic error type, ``.code`` ``upstream_error``."""
    err = payload.get("error")
    message = "The upstream reported an error mid-stream."
    etype: str | None = None
    if isinstance(err, dict):
        if isinstance(err.get("message"), str) and err["message"]:
            message = err["message"]
        if isinstance(err.get("type"), str) and err["type"]:
            etype = err["type"]
    error = UpstreamError(message, code="upstream_error", reason="reported")
    if etype is not None:
        error.type = etype
    return error


class _ToolCall:
    """One tool_use block: its OpenAI call index, its first fragment, and the argument pieces
    held back while an earlier call is still on the wire."""

    __slots__ = ("first", "index", "pending", "sent_args", "stopped")

    def __init__(self, index: int, first: dict[str, Any], arguments: str) -> None:
        self.index = index
        self.first = first
        self.pending: list[str] = [arguments] if arguments else []
        self.sent_args = bool(arguments)
        self.stopped = False


class ToolCallSequencer:
    """Emits tool-call deltas one call after another (docs/wire.md §2 shape).

    OpenAI streams each call's fragments contiguously, and openai-python's stream helper relies
    on it: a fragment for a new ``index`` marks the previous call done and (for strict tools)
    parses its arguments. Anthropic blocks do not overlap in practice, but if ``tool_use``
    blocks interleave, a later call's start and pieces are held until the earlier block stops.
    A call that got no arguments at all gets ``"{}"``.
    """

    __slots__ = ("_by_block", "_calls", "_wire")

    def __init__(self) -> None:
        self._by_block: dict[int, _ToolCall] = {}
        self._calls: list[_ToolCall] = []
        self._wire = 0  # the call streaming live; every lower one is complete

    def start(self, block: int, call_id: str, name: str, arguments: str,
              out: list[Chunk]) -> None:
        call = _ToolCall(len(self._calls), {
            "index": len(self._calls), "id": call_id, "type": "function",
            "function": {"name": name, "arguments": ""}}, arguments)
        self._by_block[block] = call
        self._calls.append(call)
        if call.index == self._wire:
            self._open(call, out)

    def piece(self, block: int, piece: str, out: list[Chunk]) -> None:
        call = self._by_block.get(block)
        if call is None or call.stopped or not piece:
            return
        call.sent_args = True
        if call.index == self._wire:
            out.append(_arguments_chunk(call.index, piece))
        else:
            call.pending.append(piece)

    def stop(self, block: int, out: list[Chunk]) -> None:
        call = self._by_block.get(block)
        if call is not None:
            call.stopped = True
            self._advance(out)

    def finish(self, out: list[Chunk]) -> None:
        """Complete every call still open or held back (the message ended)."""
        for call in self._calls[self._wire:]:
            call.stopped = True
        self._advance(out)

    def _advance(self, out: list[Chunk]) -> None:
        calls = self._calls
        while self._wire < len(calls) and calls[self._wire].stopped:
            done = calls[self._wire]
            if not done.sent_args:
                done.sent_args = True
                out.append(_arguments_chunk(done.index, "{}"))
            self._wire += 1
            if self._wire < len(calls):
                self._open(calls[self._wire], out)

    @staticmethod
    def _open(call: _ToolCall, out: list[Chunk]) -> None:
        out.append(chat_chunk(0, {"tool_calls": [call.first]}))
        if call.pending:
            out.append(_arguments_chunk(call.index, "".join(call.pending)))
            call.pending.clear()


def _arguments_chunk(index: int, arguments: str) -> Chunk:
    return chat_chunk(0, {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})


class AnthropicStream(UpstreamStream[ServerSentEvent]):
    """OpenAI chat chunks translated from one Messages stream; ``aclose()`` closes it."""

    def __init__(self, response: aiohttp.ClientResponse, *, native: bool = False) -> None:
        """``native``: the client speaks Messages too (``ChatRequest.native``); what only it
        can use rides along in the deltas: ``message_usage`` (``message_start``'s usage, on
        the role chunk), ``reasoning_signature`` (a thinking block's
        ``signature_delta``), ``redacted_thinking`` (the block's ``data``), and on the finish
        chunk ``stop_reason`` and ``stop_sequence`` as Anthropic sent them."""
        super().__init__(response)
        self._native = native
        self._input_tokens = 0
        self._cache_write = 0
        self._cache_read = 0
        self._output_tokens = 0
        self._finished = False
        self._tools = ToolCallSequencer()

    def usage(self) -> dict[str, Any]:
        """OpenAI usage (tokens) from what the stream reported so far."""
        prompt = self._input_tokens + self._cache_write + self._cache_read
        usage = make_usage(prompt, self._output_tokens)
        usage["prompt_tokens_details"] = {"cached_tokens": self._cache_read}
        return usage

    def partial_usage(self) -> dict[str, Any] | None:
        """Exact usage once ``message_delta`` reported the output tokens, else None."""
        return self.usage() if self._finished else None

    def _feed(self) -> Callable[[bytes], list[ServerSentEvent]]:
        return SSEDecoder(self.max_event_bytes).feed  # event names are needed

    def _event(self, event: ServerSentEvent, batch: list[Chunk]) -> int | None:
        name = event.event
        if name == "ping":
            return SKIP
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise MalformedEvent(event.data, "not JSON") from None
        if not isinstance(payload, dict):
            raise MalformedEvent(event.data, "not an object")
        if name == "message":  # no event: line; the data names its type
            name = str(payload.get("type"))
        if name == "error":
            raise stream_error(payload)
        if name == "message_stop":
            batch.append(usage_chunk("chat", self.usage()))
            return END
        self._translate(name, payload, batch)
        return None

    def _body_end(self) -> list[Chunk]:
        raise UpstreamError("The upstream ended the stream before message_stop.",
                            reason="ended_early")

    def _translate(self, name: str, payload: dict[str, Any], out: list[Chunk]) -> None:
        """Append the chunks for one event (other than ping, error and message_stop)."""
        index = payload.get("index")
        if name == "content_block_delta":
            delta = payload.get("delta") or {}
            kind = delta.get("type")
            if kind == "text_delta":
                out.append(chat_chunk(0, {"content": delta.get("text", "")}))
            elif kind == "thinking_delta":
                out.append(chat_chunk(0, {"reasoning_content": delta.get("thinking", "")}))
            elif kind == "input_json_delta" and isinstance(index, int):
                piece = delta.get("partial_json")
                if isinstance(piece, str):
                    self._tools.piece(index, piece, out)
            elif kind == "signature_delta" and self._native:
                out.append(chat_chunk(0, {"reasoning_signature": delta.get("signature", "")}))
            # citations_delta, and signature_delta for a chat client: nothing to send
        elif name == "content_block_start":
            self._block_start(index, payload.get("content_block") or {}, out)
        elif name == "content_block_stop":
            if isinstance(index, int):
                self._tools.stop(index, out)
        elif name == "message_start":
            message = payload.get("message") or {}
            self._read_usage(message.get("usage"))
            role: dict[str, Any] = {"role": "assistant", "content": ""}
            if self._native and isinstance(message.get("usage"), dict):
                role["message_usage"] = message["usage"]
            out.append(chat_chunk(0, role))
        elif name == "message_delta":
            self._read_usage(payload.get("usage"))
            self._finished = True
            self._tools.finish(out)
            stop_reason = (payload.get("delta") or {}).get("stop_reason")
            reason = FINISH_REASONS.get(stop_reason or "end_turn")
            if reason is None:
                log.warning("unknown Anthropic stop_reason %r, reported as stop", stop_reason)
                reason = "stop"
            native = {"stop_reason": stop_reason,
                      "stop_sequence": (payload.get("delta") or {}).get("stop_sequence")}
            out.append(chat_chunk(0, native if self._native else {}, reason))

    def _block_start(self, index: Any, block: dict[str, Any], out: list[Chunk]) -> None:
        kind = block.get("type")
        if kind == "text":
            if text := block.get("text"):
                out.append(chat_chunk(0, {"content": text}))
        elif kind == "thinking":
            if thinking := block.get("thinking"):
                out.append(chat_chunk(0, {"reasoning_content": thinking}))
        elif kind == "redacted_thinking" and self._native:
            out.append(chat_chunk(0, {"redacted_thinking": block.get("data", "")}))
        elif kind == "tool_use" and isinstance(index, int):
            # Streams send input {} and the input as deltas; keep a whole one if given.
            given = block.get("input")
            arguments = orjson.dumps(given).decode() if given else ""
            self._tools.start(index, str(block.get("id", "")), str(block.get("name", "")),
                              arguments, out)

    def _read_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # message_delta repeats cumulative counts; a null or absent field keeps what we have.
        if "input_tokens" in usage and usage["input_tokens"] is not None:
            self._input_tokens = _int(usage["input_tokens"])
        if usage.get("cache_creation_input_tokens") is not None:
            self._cache_write = _int(usage["cache_creation_input_tokens"])
        if usage.get("cache_read_input_tokens") is not None:
            self._cache_read = _int(usage["cache_read_input_tokens"])
        if usage.get("output_tokens") is not None:
            self._output_tokens = _int(usage["output_tokens"])


class AnthropicProvider(HTTPProvider):
    """An Anthropic Messages endpoint; ``base_url`` like ``https://api.anthropic.com/v1``.

    Chat only (``open_text`` answers 400). ``open_chat`` raises ``InvalidRequestError`` for a
    request it cannot translate and the ``HTTPProvider.open_stream`` errors otherwise.
    """

    dialect = "anthropic"

    def request_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        key = self.api_key()
        if key:
            headers["x-api-key"] = key
        return headers

    def status_error(self, status: int, body: bytes,
                     headers: Mapping[str, str]) -> UpstreamStatusError:
        return anthropic_status_error(status, body, headers)

    async def open_chat(self, request: ChatRequest, target: Target, *,
                        connect_s: float | None = 10.0) -> ChunkStream:
        headers = self.request_headers()
        native = request.native
        own = native is not None and native.dialect == self.dialect
        if native is not None and own:
            # A Messages client's own body and anthropic-* headers, as they came.
            body = {**native.body, "model": target.upstream_model, "stream": True}
            headers.update(native.headers)
        else:
            body = build_messages_request(request, target.upstream_model)
        headers["Accept"] = "text/event-stream"
        response = await self.open_stream(self.base_url + "/messages", body, headers,
                                          connect_s=connect_s)
        return AnthropicStream(response, native=own)

    async def list_models(self) -> list[str]:
        """Model ids from ``GET {base_url}/models`` (``data[].id``), following ``has_more`` /
        ``last_id`` pages of up to 1000. Raises ``UpstreamError`` / ``UpstreamStatusError``."""
        ids: list[str] = []
        after: str | None = None
        for _ in range(_MAX_MODEL_PAGES):
            url = self.base_url + "/models?limit=1000"
            if after:
                url += "&after_id=" + quote(after, safe="")
            body = await self.get_json(url)
            data = body.get("data") if isinstance(body, dict) else None
            ids.extend(str(m["id"]) for m in data or [] if isinstance(m, dict) and "id" in m)
            last = body.get("last_id") if isinstance(body, dict) else None
            if not (isinstance(body, dict) and body.get("has_more")) or not isinstance(last, str):
                break
            after = last
        return ids
