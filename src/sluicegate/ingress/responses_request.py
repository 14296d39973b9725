"""OpenAI Responses request → the gateway's chat request (stateless).

``to_chat_body(body, stream=...)`` validates a ``POST /v1/responses`` body and returns the chat
body the gateway routes:

- ``input`` as a string (one user message) or a list of items: messages (``role`` user,
  system, developer or assistant; ``content`` a string or ``input_text`` / ``output_text`` /
  ``input_image`` parts), ``function_call`` items (→ ``tool_calls`` of the assistant message
  just before, or of a new one) and ``function_call_output`` items (→ ``tool`` messages);
  ``reasoning`` items are dropped (``item_reference`` items were replaced by the stored items
  they name before: ``response_store.resolve_references``);
- ``instructions`` → a system message first;
- ``tools`` (``type: function``: ``name``, ``description``, ``parameters``, ``strict``) →
  chat function tools; ``tool_choice`` auto/none/required or ``{type: function, name}``;
  ``parallel_tool_calls``;
- ``max_output_tokens`` → ``max_tokens``, ``temperature``, ``top_p``, ``reasoning.effort`` →
  ``reasoning_effort``, ``user`` / ``safety_identifier``, ``text.format`` (json_schema,
  json_object) → ``response_format``; ``store``, ``metadata``, ``truncation`` are ignored
  here (``background`` is served by ``ingress.background``).

Refused with 400 naming the field: ``conversation`` (not kept by the gateway;
``previous_response_id`` is, see ``response_store``), built-in tools
(``tools.<i>.type``), ``input_file`` parts and other item types.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequestError

__all__ = ["to_chat_body"]

_STATEFUL = ("conversation",)
_MESSAGE_ROLES = ("user", "system", "developer", "assistant")


def _bad(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{param}': {message}", param=param)


def _content(content: Any, role: str, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(param, "must be a string or a list of content parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        where = f"{param}.{j}"
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _bad(f"{where}.type", f"content part {kind!r} is not supported")
    if role in ("system", "developer", "assistant"):
        if any(p["type"] != "text" for p in parts):
            raise _bad(param, f"a {role} message takes text only")
        return "".join(p["text"] for p in parts)
    return parts


def _input(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("input")
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise _bad("input", "must be a string or a non-empty list of items")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        param = f"input.{i}"
        if not isinstance(item, dict):
            raise _bad(param, "must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _MESSAGE_ROLES:
                raise _bad(f"{param}.role", "must be user, system, developer or assistant")
            out.append({"role": role,
                        "content": _content(item.get("content"), role, f"{param}.content")})
        elif kind == "function_call":
            if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
                raise _bad(param, "a function_call item needs call_id and name")
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"],
                                 "arguments": str(item.get("arguments") or "{}")}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":  # one assistant turn
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise _bad(f"{param}.call_id", "a function_call_output needs a call_id")
            output = item.get("output")
            text = output if isinstance(output, str) else \
                _content(output, "system", f"{param}.output")
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind == "reasoning":
            continue
        else:
            raise _bad(f"{param}.type", f"item type {kind!r} is not supported")
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "must be a list")
    out: list[dict[str, Any]] = []
    for k, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise _bad(f"tools.{k}.type", f"tool type {kind!r} is not supported "
                       "(function tools only)")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(f"tools.{k}.name", "a function tool needs a name")
        function = {"name": tool["name"],
                    "parameters": tool.get("parameters") or {"type": "object",
                                                             "properties": {}}}
        for field in ("description", "strict"):
            if tool.get(field) is not None:
                function[field] = tool[field]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" \
            and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("tool_choice", "must be auto, none, required or {\"type\": \"function\", "
               "\"name\": …}")


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise _bad("text.format.type", "must be text, json_object or json_schema")


def to_chat_body(body: Any, *, stream: bool,
                 history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The chat body for a Responses body, after the chat messages of ``history`` (a stored
    response's conversation, ``response_store``); raises ``InvalidRequestError`` (400) naming
    the field."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _bad("model", "a model name is required")
    for field in _STATEFUL:
        if body.get(field) is not None:
            raise _bad(field, "not supported: send the conversation in 'input', or continue "
                       "a stored response with 'previous_response_id'")
    messages = [*(history or ()), *_input(body)]
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad("instructions", "must be a string")
        messages.insert(0, {"role": "system", "content": instructions})
    chat: dict[str, Any] = {"model": body["model"], "messages": messages, "stream": stream,
                            "stream_options": {"include_usage": True}}
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise _bad("max_output_tokens", "must be a positive integer")
        chat["max_tokens"] = limit
    for field in ("temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier"):
        if body.get(field) is not None:
            chat[field] = body[field]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    if (response_format := _response_format(body.get("text"))) is not None:
        chat["response_format"] = response_format
    return chat
