"""``POST /v1/responses``: the OpenAI Responses API served from any model (docs/wire.md §4);
``previous_response_id`` continues a stored response (``response_store``).

The body is translated to a chat request (``responses_request``) and served by ``Run``; a
Responses upstream of its chain gets the client's own body instead
(``ChatRequest.native``; ``providers.responses_request.native_body``);
``ResponsesEgress`` turns the chat chunks into the events the openai SDK's ``responses.stream()``
helper requires, every one named (``event: <type>``) with a ``sequence_number``:

- ``response.created`` and ``response.in_progress`` first (the response ``status:
  in_progress``, ``output: []``);
- text → a ``message`` output item: ``response.output_item.added``,
  ``response.content_part.added`` (``output_text``), ``response.output_text.delta`` (with
  ``logprobs: []``)…, then ``response.output_text.done``, ``response.content_part.done``,
  ``response.output_item.done``;
- each tool call → a ``function_call`` item (``call_id``, ``name``):
  ``response.output_item.added``, ``response.function_call_arguments.delta``…,
  ``response.function_call_arguments.done``, ``response.output_item.done``;
- the end: ``response.completed`` with the whole response and ``usage`` (``input_tokens``,
  ``output_tokens``, ``total_tokens``), or ``response.incomplete`` (``incomplete_details.reason:
  max_output_tokens``) when the token limit cut the answer;
- a failure mid-stream → an ``error`` event (``code``, ``message``), then ``response.failed``
  with ``response.error`` (``status: cancelled`` for a cancelled background response).

Output item ids name their response (``msg_``/``fc_`` + the response id's hex + the item's
index), so an ``item_reference`` input item resolves to a stored item (``response_store``).

Keep-alives stay ``: keep-alive`` comments (the SDK's decoder ignores them). Reasoning text
(``delta.reasoning_content``) is not relayed. A non-stream request gets the response object.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ..errors import InvalidRequestError
from ..providers.base import Target
from ..providers.responses_request import native_body
from ..schemas import NativeRequest, parse_chat_request
from . import background, response_store
from .common import DialectEgress, named_event, route_headers, run_request
from .responses_request import to_chat_body

__all__ = ["ResponsesEgress", "create", "to_response"]


def _id(prefix: str) -> str:
    return f"{prefix}_{random.getrandbits(96):024x}"


def _usage(usage: dict[str, Any] | None, fallback_input: int) -> dict[str, Any]:
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or fallback_input)
    completion = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": int(cached)},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": int(reasoning)},
            "total_tokens": prompt + completion}


class _Shell:
    """The fields every response object carries, from the request."""

    def __init__(self, body: dict[str, Any], model: str, response_id: str | None = None
                 ) -> None:
        self.id = response_id or _id("resp")
        self.created_at = int(time.time())
        self.model = model
        self.body = body
        self.items = 0

    def item_id(self, prefix: str) -> str:
        """A new output item's id, which names this response (``response_store.item_id``)."""
        self.items += 1
        return response_store.item_id(prefix, self.id, self.items - 1)

    def response(self, status: str, output: list[dict[str, Any]],
                 usage: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        body = self.body
        return {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status, "model": self.model, "output": output,
            "error": None, "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "temperature": body.get("temperature"), "top_p": body.get("top_p"),
            "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice", "auto"),
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "text": body.get("text") or {"format": {"type": "text"}},
            "metadata": body.get("metadata") or {}, "store": body.get("store") is not False,
            "background": body.get("background") is True,
            "usage": usage, **extra}


class ResponsesEgress(DialectEgress):
    """The Responses event stream of one request (see the module docstring)."""

    def __init__(self, body: dict[str, Any], model: str,
                 store: Callable[[str, list[dict[str, Any]]], Awaitable[None]] | None = None,
                 response_id: str | None = None) -> None:
        """``store(response_id, output)``: called when the response completed (or ended
        incomplete), before ``response.completed`` is sent."""
        super().__init__()
        self.shell = _Shell(body, model, response_id)
        self.store = store
        self.succeeded = False
        self.seq = 0
        self.started = False
        self.ended = False
        self.output: list[dict[str, Any]] = []  # items, completed or open
        self.open: dict[str, Any] | None = None  # the item receiving deltas
        self.pieces: list[str] = []  # its text or arguments so far (joined by _sync)
        self.tool_items: dict[int, int] = {}  # chat tool call index → output index
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    def _event(self, kind: str, out: list[bytes], **fields: Any) -> None:
        out.append(named_event(kind, {"type": kind, "sequence_number": self.seq, **fields}))
        self.seq += 1

    def _begin(self, out: list[bytes]) -> None:
        if not self.started:
            self.started = True
            response = self.shell.response("in_progress", [])
            self._event("response.created", out, response=response)
            self._event("response.in_progress", out, response=response)

    def _sync(self) -> None:
        """Put the open item's pieces into it (joined once, not per delta)."""
        item = self.open
        if item is not None:
            if item["type"] == "message":
                item["content"][0]["text"] = "".join(self.pieces)
            else:
                item["arguments"] = "".join(self.pieces)

    def _close(self, out: list[bytes]) -> None:
        item = self.open
        if item is None:
            return
        self._sync()
        self.open = None
        self.pieces = []
        index = len(self.output) - 1
        item["status"] = "completed"
        if item["type"] == "message":
            part = item["content"][0]
            self._event("response.output_text.done", out, item_id=item["id"],
                        output_index=index, content_index=0, text=part["text"], logprobs=[])
            self._event("response.content_part.done", out, item_id=item["id"],
                        output_index=index, content_index=0, part=part)
        else:
            self._event("response.function_call_arguments.done", out, item_id=item["id"],
                        output_index=index, name=item["name"], arguments=item["arguments"])
        self._event("response.output_item.done", out, output_index=index, item=item)

    def _add(self, item: dict[str, Any], out: list[bytes]) -> int:
        self._close(out)
        self.output.append(item)
        self.open = item
        self.pieces = []
        index = len(self.output) - 1
        added = {**item, "status": "in_progress"}
        if item["type"] == "message":
            added["content"] = []
        else:
            added["arguments"] = ""
        self._event("response.output_item.added", out, output_index=index, item=added)
        return index

    def on_keepalive(self) -> bytes:
        return b": keep-alive\n\n"

    def on_chunk(self, chunk: dict[str, Any]) -> bytes:
        out: list[bytes] = []
        self._begin(out)
        if chunk.get("error"):
            self._fail(chunk["error"], out)
            return b"".join(out)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if text := delta.get("content"):
                self._text(text, out)
            for call in delta.get("tool_calls") or ():
                self._tool_call(call, out)
            if (reason := choice.get("finish_reason")) is not None:
                self.finish = reason
        return b"".join(out)

    def _text(self, text: str, out: list[bytes]) -> None:
        item = self.open
        if item is None or item["type"] != "message":
            item = {"id": self.shell.item_id("msg"), "type": "message", "status": "in_progress",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "", "annotations": [],
                                 "logprobs": []}]}
            index = self._add(item, out)
            self._event("response.content_part.added", out, item_id=item["id"],
                        output_index=index, content_index=0,
                        part={"type": "output_text", "text": "", "annotations": [],
                              "logprobs": []})
        self.pieces.append(text)
        self._event("response.output_text.delta", out, item_id=item["id"],
                    output_index=len(self.output) - 1, content_index=0, delta=text,
                    logprobs=[])

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        index = call.get("index", 0)
        fn = call.get("function") or {}
        if index not in self.tool_items:
            item = {"id": self.shell.item_id("fc"), "type": "function_call",
                    "status": "in_progress",
                    "call_id": call.get("id") or _id("call"), "name": fn.get("name") or "",
                    "arguments": ""}
            self.tool_items[index] = self._add(item, out)
        position = self.tool_items[index]
        item = self.output[position]
        if item is not self.open:
            return  # a call's fragments are contiguous (docs/wire.md §2)
        if arguments := fn.get("arguments"):
            self.pieces.append(arguments)
            self._event("response.function_call_arguments.delta", out, item_id=item["id"],
                        output_index=position, delta=arguments)

    def _fail(self, error: dict[str, Any], out: list[bytes]) -> None:
        if self.ended:
            return  # one ending only
        self.ended = True
        code = str(error.get("code") or "server_error")
        message = str(error.get("message") or "The stream failed.")
        self._sync()
        self._event("error", out, code=code, message=message, param=None)
        # A stop on purpose (a background response's cancel) is "cancelled", not "failed".
        status = "cancelled" if code in ("stream_cancelled", "no_reader") else "failed"
        self._event("response.failed", out, response=self.shell.response(
            status, self.output, None, error={"code": code, "message": message}))

    def on_done(self) -> bytes:
        if self.ended:
            return b""
        self.ended = True
        out: list[bytes] = []
        self._begin(out)
        self._close(out)
        self.succeeded = True
        usage = _usage(self.usage, self.estimated_prompt_tokens())
        if self.finish == "length":
            self._event("response.incomplete", out, response=self.shell.response(
                "incomplete", self.output, usage,
                incomplete_details={"reason": "max_output_tokens"}))
        else:
            self._event("response.completed", out,
                        response=self.shell.response("completed", self.output, usage))
        return b"".join(out)


    async def ending(self) -> None:
        if self.succeeded and self.store is not None:
            await self.store(self.shell.id, self.output)


def to_response(completion: dict[str, Any], shell: _Shell) -> dict[str, Any]:
    """A chat completion (non-stream) as a Responses ``response`` object."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    if message.get("content"):
        output.append({"id": shell.item_id("msg"), "type": "message", "status": "completed",
                       "role": "assistant", "content": [{
                           "type": "output_text", "text": message["content"],
                           "annotations": [], "logprobs": []}]})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        output.append({"id": shell.item_id("fc"), "type": "function_call", "status": "completed",
                       "call_id": call.get("id") or _id("call"), "name": fn.get("name") or "",
                       "arguments": fn.get("arguments") or ""})
    usage = _usage(completion.get("usage"), 0)
    if choice.get("finish_reason") == "length":
        return shell.response("incomplete", output, usage,
                              incomplete_details={"reason": "max_output_tokens"})
    return shell.response("completed", output, usage)


async def create(gateway: Any, request: web.Request) -> web.StreamResponse:
    body = await gateway._json(request)
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    stream = body.get("stream") is True
    if isinstance(body.get("input"), list):  # item_reference items → the stored items
        body = {**body, "input": await response_store.resolve_references(
            gateway, request, body["input"])}
    history: list[dict[str, Any]] = []
    if body.get("previous_response_id") is not None:
        history = await response_store.load(gateway, request, body["previous_response_id"])
    chat = to_chat_body(body, stream=stream, history=history)
    req = parse_chat_request(chat)
    # What a later response continues from: this conversation without its instructions.
    conversation = chat["messages"][1:] if body.get("instructions") is not None \
        else list(chat["messages"])
    policy, chain = gateway.router.plan(req)
    if any(isinstance(t, Target) and getattr(t.provider, "dialect", None) == "responses"
           for t in chain):  # a Responses upstream gets the client's own body
        req.native = NativeRequest("responses", native_body(body, history), {})

    async def store(response_id: str, output: list[dict[str, Any]]) -> None:
        await response_store.save(gateway, request, response_id,
                                  [*conversation, response_store.output_message(output)],
                                  output)

    keep = body.get("store") is not False
    if body.get("background") is True:
        background.check(body)
        egress = ResponsesEgress(body, req.model, store if keep else None,
                                 response_id=background.new_response_id())
        return await background.create(gateway, request, req, policy, chain, egress,
                                       egress.shell.response("queued", []), stream=stream)
    if stream:
        egress = ResponsesEgress(body, req.model, store if keep else None)
        _, response = await run_request(gateway, request, req, policy, chain, egress)
        return response
    _, response = await run_request(gateway, request, req, policy, chain, None)
    assert isinstance(response, web.Response) and response.body is not None
    completion = orjson.loads(bytes(response.body))  # type: ignore[arg-type]
    route = route_headers(response)
    result = to_response(completion, _Shell(body, req.model))
    if keep:
        await store(result["id"], result["output"])
    return web.Response(body=orjson.dumps(result), content_type="application/json",
                        headers=route)
