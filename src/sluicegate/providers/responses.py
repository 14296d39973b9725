"""OpenAI Responses provider: ``POST {base_url}/responses`` streamed, translated to OpenAI chat
chunks (docs/wire.md §4b).

The endpoint is OpenAI's (or one that serves the same API): ``base_url`` ends in ``/v1``,
``Authorization: Bearer``, errors before the stream OpenAI-shaped (``providers.http``).

Request: a ``/v1/responses`` client's own body when the request carries one
(``ChatRequest.native`` of dialect ``responses``, see ``responses_request.native_body``), with
``model`` replaced by the upstream model and ``stream: true``; anything else is translated from
the chat request (``responses_request.build_responses_request``).

Stream translation (openai-python ``types/responses/response_stream_event.py``). Every event is
``event: <type>`` + ``data: {"type": <type>, "sequence_number": n, …}``; the data's ``type`` is
read (one SSE decode and one ``orjson.loads`` per event), each network read becomes one batch:

- ``response.created`` → the role chunk (``delta: {role: "assistant", content: ""}``);
- ``response.output_text.delta`` → ``delta.content``; ``response.refusal.delta`` →
  ``delta.refusal``; ``response.reasoning_summary_text.delta`` and
  ``response.reasoning_text.delta`` → ``delta.reasoning_content`` (summary parts after the
  first are preceded by a blank line);
- a ``function_call`` item's ``response.output_item.added`` → ``delta.tool_calls[{index, id:
  call_id, type: "function", function: {name, arguments: ""}}]``, ``index`` counted per call
  (0, 1, …; not the ``output_index``); ``response.function_call_arguments.delta`` → ``{index,
  function: {arguments}}``; at the item's ``response.output_item.done`` the whole
  ``arguments`` are sent if no delta carried them (``"{}"`` if none). Fragments stay
  contiguous per call (``ToolCallSequencer``);
- ``response.completed`` → the finish chunk (``tool_calls`` when a function call was emitted,
  else ``stop``) and one usage chunk (``input_tokens`` → ``prompt_tokens``, ``output_tokens`` →
  ``completion_tokens``, ``input_tokens_details.cached_tokens`` →
  ``prompt_tokens_details.cached_tokens``, ``output_tokens_details.reasoning_tokens`` →
  ``completion_tokens_details.reasoning_tokens``), and the end of the stream;
  ``response.incomplete`` the same with ``length`` (``incomplete_details.reason``
  ``max_output_tokens`` or unknown) or ``content_filter``;
- ``response.failed`` (its ``response.error``) and ``error`` (``code``, ``message``,
  ``param``) raise ``UpstreamError`` (``code`` the upstream's), after the chunks before them;
  before the first token the gateway may retry or fail over, as for any ``UpstreamError``;
- every other event (``response.in_progress``, ``response.queued``,
  ``response.content_part.*``, ``*.done``, annotations, built-in tool progress) is valid and
  carries nothing to send; data that is not JSON or has no string ``type`` is malformed;
- a body that ends, or a ``data: [DONE]``, before ``response.completed`` /
  ``.incomplete`` raises ``UpstreamError`` (``ended_early``); a lost connection raises too.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from ..chunks import Chunk, chat_chunk, make_usage, usage_chunk
from ..errors import UpstreamError
from ..schemas import ChatRequest
from .anthropic import ToolCallSequencer
from .base import ChunkStream, Target
from .http import END, HTTPProvider, MalformedEvent, UpstreamStream
from .responses_request import build_responses_request

__all__ = ["INCOMPLETE_REASONS", "ResponsesProvider", "ResponsesStream", "response_error"]

INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}
"""``incomplete_details.reason`` → ``finish_reason``; any other reason → ``length`` (the
answer was cut short)."""

_loads = orjson.loads


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def chat_usage(usage: Any) -> dict[str, Any]:
    """A Responses ``usage`` object → the OpenAI chat usage (tokens); missing counts are 0."""
    usage = usage if isinstance(usage, dict) else {}
    prompt = _int(usage.get("input_tokens"))
    out = make_usage(prompt, _int(usage.get("output_tokens")))
    input_details = usage.get("input_tokens_details")
    if isinstance(input_details, dict):
        out["prompt_tokens_details"] = {"cached_tokens": _int(input_details.get("cached_tokens"))}
    output_details = usage.get("output_tokens_details")
    if isinstance(output_details, dict):
        out["completion_tokens_details"] = {
            "reasoning_tokens": _int(output_details.get("reasoning_tokens"))}
    return out


def response_error(error: Any, default: str) -> UpstreamError:
    """The ``UpstreamError`` for an ``error`` event's fields or a failed response's ``error``
    object (``code``, ``message``, ``param``; a nested ``error`` object is read too)."""
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    if not isinstance(error, dict):
        return UpstreamError(default, reason="reported")
    code = error.get("code")
    param = error.get("param")
    err = UpstreamError(str(error.get("message") or default),
                        code=str(code) if code else "upstream_error", reason="reported",
                        param=param if isinstance(param, str) else None)
    if isinstance(error.get("type"), str) and error["type"] != "error":
        err.type = error["type"]
    return err


class ResponsesStream(UpstreamStream[bytes]):
    """OpenAI chat chunks translated from one Responses stream; ``aclose()`` closes it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        super().__init__(response)
        self._tools = ToolCallSequencer()
        self._calls: set[int] = set()  # output indexes of the function calls started
        self._with_arguments: set[int] = set()  # ... of those that got argument deltas
        self._usage: dict[str, Any] | None = None

    def partial_usage(self) -> dict[str, Any] | None:
        """The upstream's usage once its final event arrived (Responses reports none before)."""
        return self._usage

    def _event(self, payload: bytes, batch: list[Chunk]) -> int | None:
        try:
            event = _loads(payload)
        except orjson.JSONDecodeError:
            if payload[:6] == b"[DONE]":
                self._body_end()
            raise MalformedEvent(payload, "not JSON") from None
        kind = event.get("type") if isinstance(event, dict) else None
        if not isinstance(kind, str):
            raise MalformedEvent(payload, "not a Responses event")
        # The hot events first.
        if kind == "response.output_text.delta":
            batch.append(chat_chunk(0, {"content": self._delta(event, payload)}))
        elif kind == "response.function_call_arguments.delta":
            index = self._output_index(event, payload)
            piece = self._delta(event, payload)
            self._with_arguments.add(index)
            self._tools.piece(index, piece, batch)
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            batch.append(chat_chunk(0, {"reasoning_content": self._delta(event, payload)}))
        elif kind == "response.refusal.delta":
            batch.append(chat_chunk(0, {"refusal": self._delta(event, payload)}))
        elif kind == "response.output_item.added":
            self._item_added(event, payload, batch)
        elif kind == "response.output_item.done":
            self._item_done(event, payload, batch)
        elif kind == "response.reasoning_summary_part.added":
            if _int(event.get("summary_index")) > 0:
                batch.append(chat_chunk(0, {"reasoning_content": "\n\n"}))
        elif kind == "response.created":
            batch.append(chat_chunk(0, {"role": "assistant", "content": ""}))
        elif kind in ("response.completed", "response.incomplete"):
            return self._finish(event, batch)
        elif kind == "response.failed":
            response = event.get("response")
            raise response_error(response.get("error") if isinstance(response, dict) else None,
                                 "The upstream response failed.")
        elif kind == "error":
            raise response_error(event, "The upstream reported an error mid-stream.")
        return None

    @staticmethod
    def _delta(event: dict[str, Any], payload: bytes) -> str:
        delta = event.get("delta")
        if not isinstance(delta, str):
            raise MalformedEvent(payload, "a delta event without a string delta")
        return delta

    @staticmethod
    def _output_index(event: dict[str, Any], payload: bytes) -> int:
        index = event.get("output_index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise MalformedEvent(payload, "no output_index")
        return index

    @staticmethod
    def _item(event: dict[str, Any], payload: bytes) -> dict[str, Any]:
        item = event.get("item")
        if not isinstance(item, dict):
            raise MalformedEvent(payload, "no item")
        return item

    def _item_added(self, event: dict[str, Any], payload: bytes, out: list[Chunk]) -> None:
        item = self._item(event, payload)
        if item.get("type") != "function_call":
            return  # message, reasoning, built-in tool calls: their deltas say what to send
        self._start_call(self._output_index(event, payload), item, out)

    def _start_call(self, index: int, item: dict[str, Any], out: list[Chunk]) -> None:
        if index in self._calls:
            return
        self._calls.add(index)
        self._tools.start(index, str(item.get("call_id") or item.get("id") or ""),
                          str(item.get("name") or ""), "", out)

    def _item_done(self, event: dict[str, Any], payload: bytes, out: list[Chunk]) -> None:
        item = self._item(event, payload)
        if item.get("type") != "function_call":
            return
        index = self._output_index(event, payload)
        self._start_call(index, item, out)  # an upstream that sent no output_item.added
        arguments = item.get("arguments")
        if index not in self._with_arguments and isinstance(arguments, str) and arguments:
            self._with_arguments.add(index)
            self._tools.piece(index, arguments, out)
        self._tools.stop(index, out)

    def _finish(self, event: dict[str, Any], out: list[Chunk]) -> int:
        response = event.get("response")
        response = response if isinstance(response, dict) else {}
        self._tools.finish(out)
        if event["type"] == "response.incomplete":
            details = response.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            finish = INCOMPLETE_REASONS.get(reason if isinstance(reason, str) else "", "length")
        else:
            finish = "tool_calls" if self._calls else "stop"
        out.append(chat_chunk(0, {}, finish))
        self._usage = chat_usage(response.get("usage"))
        out.append(usage_chunk("chat", self._usage))
        return END

    def _body_end(self) -> list[Chunk]:
        raise UpstreamError("The upstream ended the stream before response.completed.",
                            reason="ended_early")


class ResponsesProvider(HTTPProvider):
    """An OpenAI Responses endpoint: ``base_url`` ends in ``/v1``; ``Authorization: Bearer``.

    Chat only (``open_text`` answers 400). ``open_chat`` raises ``InvalidRequestError`` for a
    chat request it cannot translate and the ``HTTPProvider.open_stream`` errors otherwise.
    """

    dialect = "responses"

    def request_headers(self) -> dict[str, str]:
        headers = super().request_headers()
        headers["Accept"] = "text/event-stream"
        return headers

    async def open_chat(self, request: ChatRequest, target: Target, *,
                        connect_s: float | None = 10.0) -> ChunkStream:
        native = request.native
        if native is not None and native.dialect == self.dialect:
            body = {**native.body, "model": target.upstream_model, "stream": True}
        else:
            body = build_responses_request(request, target.upstream_model)
        response = await self.open_stream(self.base_url + "/responses", body,
                                          connect_s=connect_s)
        return ResponsesStream(response)
