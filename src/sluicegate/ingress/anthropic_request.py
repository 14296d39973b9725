"""Anthropic Messages request → the gateway's chat request (docs/wire.md §5 → §2).

``to_chat_body(body)`` validates a ``POST /v1/messages`` body and returns the OpenAI chat body
the gateway routes, for any upstream that is not Anthropic's (an Anthropic upstream gets the
body as it came, ``sluicegate.ingress.anthropic_messages``):

- ``system`` (a string or text blocks) → a system message;
- user ``text`` blocks → text parts; ``image`` blocks (``base64`` → a data URL, ``url``) →
  ``image_url`` parts; ``tool_result`` blocks → ``tool`` messages (before the user's text);
- assistant ``text`` → content, ``tool_use`` → ``tool_calls`` (``input`` as JSON arguments);
  ``thinking`` and ``redacted_thinking`` blocks are dropped (no chat equivalent);
- ``tools`` (custom tools: ``name``, ``description``, ``input_schema``) → function tools;
  ``tool_choice`` auto/any/none/tool → auto/required/none/a named function, and
  ``disable_parallel_tool_use`` → ``parallel_tool_calls: false``;
- ``max_tokens`` (required), ``temperature`` (0-1), ``top_p``, ``stop_sequences`` → ``stop``
  (at most 4), ``metadata.user_id`` → ``user``, ``thinking`` (enabled, ``budget_tokens``) →
  ``reasoning_effort`` (≤ 1024 low, ≤ 4096 medium, else high); ``top_k`` is ignored.

Refused with 400 ``invalid_request_error`` naming the field: a missing or wrong-typed required
field, server tools (``tools.<i>.type`` other than custom), ``document`` and other block types,
``container``, ``mcp_servers``; none of these are refused for a model served by an Anthropic
upstream (``lenient``): it gets them as they came.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import InvalidRequestError

__all__ = ["prompt_text", "to_chat_body"]

_ROLES = ("user", "assistant")
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
_REFUSED = ("container", "mcp_servers")


def _bad(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {message}", param=param)


def _number(body: dict[str, Any], field: str, low: float, high: float) -> float | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _bad(field, f"must be a number from {low:g} to {high:g}")
    return float(value)


def _text_of(blocks: Any, param: str) -> str:
    """A string, or text blocks joined (``system``, tool result content)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise _bad(param, "must be a string or a list of text blocks")
    texts: list[str] = []
    for j, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "text" \
                or not isinstance(block.get("text"), str):
            raise _bad(f"{param}.{j}", "only text blocks are supported here")
        texts.append(block["text"])
    return "\n\n".join(texts) if param == "system" else "".join(texts)


def _image_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad(f"{param}.source", "an image block needs a source")
    if source.get("type") == "base64" and isinstance(source.get("data"), str) \
            and isinstance(source.get("media_type"), str):
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise _bad(f"{param}.source.type", "must be base64 (with media_type and data) or url")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: dict[str, Any], param: str) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"{param}.tool_use_id", "a tool_result needs the tool_use_id it answers")
    content = block.get("content")
    text = "" if content is None else _text_of(content, f"{param}.content")
    if block.get("is_error"):
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _user(content: list[Any], param: str, lenient: bool) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{param}.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block, where))
        elif kind == "tool_result":
            tools.append(_tool_result(block, where))
        elif not lenient:
            raise _bad(f"{where}.type", f"block type {kind!r} is not supported by this model")
    out = tools
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant(content: list[Any], param: str, lenient: bool) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{param}.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad(where, "a tool_use block needs an id and a name")
            calls.append({"id": block["id"], "type": "function", "function": {
                "name": block["name"],
                "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        elif kind in ("thinking", "redacted_thinking") or lenient:
            continue
        else:
            raise _bad(f"{where}.type", f"block type {kind!r} is not supported by this model")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _messages(body: dict[str, Any], lenient: bool = False) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "must be a non-empty list")
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _text_of(system, "system")
        if text:
            out.append({"role": "system", "content": text})
    for i, message in enumerate(messages):
        param = f"messages.{i}"
        if not isinstance(message, dict):
            raise _bad(param, "must be an object")
        role = message.get("role")
        if role not in _ROLES:
            raise _bad(f"{param}.role", "must be user or assistant")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif isinstance(content, list):
            if role == "user":
                out.extend(_user(content, f"{param}.content", lenient))
            else:
                out.append(_assistant(content, f"{param}.content", lenient))
        else:
            raise _bad(f"{param}.content", "must be a string or a list of blocks")
    return out


def _tools(tools: Any, lenient: bool = False) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "must be a list")
    out: list[dict[str, Any]] = []
    for k, tool in enumerate(tools):
        if lenient and (not isinstance(tool, dict) or tool.get("type", "custom") != "custom"):
            continue
        if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _bad(f"tools.{k}.type",
                       f"server tool {kind!r} is not supported by this model (custom tools only)")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(f"tools.{k}.name", "a tool needs a name")
        function: dict[str, Any] = {
            "name": tool["name"],
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    if not isinstance(choice, dict) or choice.get("type") not in (*_TOOL_CHOICES, "tool"):
        raise _bad("tool_choice.type", "must be auto, any, tool or none")
    if choice["type"] == "tool":
        if not isinstance(choice.get("name"), str):
            raise _bad("tool_choice.name", "a tool choice of type tool needs a name")
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        chat["tool_choice"] = _TOOL_CHOICES[choice["type"]]
    if choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False


def _effort(thinking: Any) -> str | None:
    if not isinstance(thinking, dict):
        raise _bad("thinking", "must be an object")
    if thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise _bad("thinking.budget_tokens", "must be a positive integer")
    return "low" if budget <= 1024 else "medium" if budget <= 4096 else "high"


def check_common(body: Any, lenient: bool = False) -> dict[str, Any]:
    """The body as an object with a valid ``model`` (raises the 400 otherwise)."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "a model name is required")
    for field in () if lenient else _REFUSED:
        if body.get(field) is not None:
            raise _bad(field, "is not supported by this gateway")
    return body


def to_chat_body(body: Any, *, stream: bool, lenient: bool = False) -> dict[str, Any]:
    """The chat body for a Messages body; raises ``InvalidRequestError`` (400) naming the
    Anthropic field. ``lenient`` (the request goes to an Anthropic upstream as it came):
    what has no chat equivalent (server tools, other block types) is left out instead."""
    body = check_common(body, lenient)
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad("max_tokens", "a positive integer is required")
    chat: dict[str, Any] = {"model": body["model"], "messages": _messages(body, lenient),
                            "max_tokens": max_tokens, "stream": stream,
                            "stream_options": {"include_usage": True}}
    if not chat["messages"]:  # lenient: every block was left out; the native body has them
        chat["messages"] = [{"role": "user", "content": ""}]
    for field, high in (("temperature", 1.0), ("top_p", 1.0)):
        value = _number(body, field, 0.0, high)
        if value is not None:
            chat[field] = value
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stop_sequences", "must be a list of strings")
        if len(stops) > 4:
            raise _bad("stop_sequences", "at most 4 stop sequences for this model")
        if stops:
            chat["stop"] = stops
    if body.get("tools") and (tools := _tools(body["tools"], lenient)):
        chat["tools"] = tools
    if body.get("tool_choice") is not None and (chat.get("tools") or not lenient):
        _tool_choice(body["tool_choice"], chat)
    if body.get("thinking") is not None and (effort := _effort(body["thinking"])):
        chat["reasoning_effort"] = effort
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    return chat


def prompt_text(body: dict[str, Any]) -> str:
    """The text a count covers: system, every message's text and tool data, the tools."""
    pieces: list[str] = []
    for message in _messages(body):
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, list):
            pieces.extend(p["text"] for p in content if p.get("type") == "text")
        for call in message.get("tool_calls") or ():
            pieces.append(call["function"]["name"] + call["function"]["arguments"])
    if body.get("tools"):
        pieces.append(orjson.dumps(_tools(body["tools"])).decode())
    return "\n".join(pieces)
