"""OpenAI chat request → Anthropic Messages request.

Sources: docs/wire.md §5 and the Anthropic Messages API reference.

``build_messages_request(request, model)`` returns the JSON body for ``POST /v1/messages``:

- ``model``, ``stream: true``, ``max_tokens`` (tokens: ``max_completion_tokens``, else
  ``max_tokens``, else ``DEFAULT_MAX_TOKENS``), ``temperature`` (Anthropic takes 0-1), ``top_p``,
  ``stop`` → ``stop_sequences``, ``user`` (else ``safety_identifier``) → ``metadata.user_id``;
- system and developer messages → top-level ``system`` (texts joined by a blank line);
- user parts: ``text`` → text block, ``image_url`` → image block (``source.type`` ``url`` for
  http(s), ``base64`` for a data URL of image/jpeg, png, gif or webp); a ``cache_control`` on a
  part is kept on its block;
- assistant text → text blocks, ``tool_calls`` → ``tool_use`` blocks ``{id, name, input}``;
- ``tool`` messages → ``tool_result`` blocks ``{tool_use_id, content}`` in a user turn;
  consecutive turns of one role are merged (tool results first), as Anthropic wants roles to
  alternate;
- ``tools`` → ``[{name, description, input_schema}]``, ``tool_choice`` (auto → auto,
  required → any, none → none, a named function → ``{type: tool, name}``) and
  ``parallel_tool_calls: false`` → ``disable_parallel_tool_use: true``;
- ``reasoning_effort`` → ``thinking: {type: enabled, budget_tokens}`` (``THINKING_BUDGETS``); a
  client-sent Anthropic ``thinking`` object passes through instead. With thinking on,
  ``max_tokens`` (which counts thinking too) is raised above the budget: budget + the client's
  limit (or ``DEFAULT_MAX_TOKENS``) unless the client's limit already exceeds the budget.

Everything else follows the gateway's field policy: OpenAI fields with no Messages equivalent
and a non-default value raise ``InvalidRequestError`` (400) whose ``param`` names the field
(``n``, ``logprobs``, ``top_logprobs``, ``logit_bias``, ``presence_penalty``,
``frequency_penalty``, ``seed``, ``response_format``, ``modalities``, ``audio``, ``prediction``,
``web_search_options``, ``functions``, ``function_call``, ``verbosity``); harmless ones
(``stream_options``, ``store``, ``service_tier``, ``metadata``, ``prompt_cache_key``) and unknown
fields are ignored. Bad messages raise it naming ``messages.<i>…``.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequestError
from ..schemas import ChatMessage, ChatRequest
from .parts import (
    checked_tool_call,
    content_parts,
    parse_data_url,
    parse_tool_arguments,
    system_text,
    unsupported_part,
)

__all__ = ["DEFAULT_MAX_TOKENS", "THINKING_BUDGETS", "build_messages_request"]

PROVIDER = "anthropic"

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` (tokens) when the client sets no limit; the Messages API requires one."""

THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
"""``reasoning_effort`` → ``thinking.budget_tokens`` (tokens; Anthropic's minimum is 1024)."""

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
"""Media types of base64 image blocks (Anthropic vision guide)."""

_TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}


def _reject(field: str, detail: str) -> InvalidRequestError:
    detail = f" {detail}" if detail else ""
    return InvalidRequestError(f"'{field}'{detail} is not supported by {PROVIDER} models.",
                               param=field)


def _check_unsupported(raw: dict[str, Any]) -> None:
    """Raise the 400 for any OpenAI field that has no Messages equivalent and a non-default
    value (null, false, 0, empty and the documented defaults are accepted)."""
    n = raw.get("n")
    if n is not None and n != 1:
        raise _reject("n", "other than 1 (Anthropic returns one candidate)")
    for field in ("logprobs", "top_logprobs", "logit_bias", "presence_penalty",
                  "frequency_penalty"):
        if raw.get(field):
            raise _reject(field, "with a non-default value")
    for field in ("seed", "audio", "prediction", "web_search_options"):
        if raw.get(field) is not None:
            raise _reject(field, "")
    for field in ("functions", "function_call"):
        if raw.get(field) is not None:
            raise InvalidRequestError(
                f"'{field}' is deprecated and not supported by {PROVIDER} models; use 'tools'.",
                param=field)
    response_format = raw.get("response_format")
    if response_format is not None and not (
            isinstance(response_format, dict) and response_format.get("type") == "text"):
        raise _reject("response_format", "other than {\"type\": \"text\"}")
    modalities = raw.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        raise _reject("modalities", "other than [\"text\"]")
    if raw.get("verbosity") not in (None, "medium"):
        raise _reject("verbosity", "other than \"medium\"")
    temperature = raw.get("temperature")
    if isinstance(temperature, int | float) and temperature > 1:
        raise InvalidRequestError(
            f"'temperature' above 1 is not supported by {PROVIDER} models (range 0 to 1).",
            param="temperature")


def _thinking(raw: dict[str, Any]) -> dict[str, Any] | None:
    native = raw.get("thinking")
    if isinstance(native, dict):
        return native
    if native is not None:
        raise InvalidRequestError("'thinking' must be an object.", param="thinking")
    effort = raw.get("reasoning_effort")
    if effort is None or effort == "none":
        return None
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise InvalidRequestError(
            f"'reasoning_effort' must be one of {', '.join(THINKING_BUDGETS)} or none.",
            param="reasoning_effort")
    return {"type": "enabled", "budget_tokens": budget}


def _max_tokens(limit: int | None, thinking: dict[str, Any] | None) -> int:
    budget = thinking.get("budget_tokens") if thinking and thinking.get("type") == "enabled" \
        else None
    if not isinstance(budget, int) or isinstance(budget, bool):
        return limit or DEFAULT_MAX_TOKENS
    if limit is not None and limit > budget:
        return limit
    return budget + (limit or DEFAULT_MAX_TOKENS)


def _with_cache_control(block: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    cache_control = part.get("cache_control")
    if isinstance(cache_control, dict):
        block["cache_control"] = cache_control
    return block


def _image_block(part: dict[str, Any], i: int, j: int) -> dict[str, Any]:
    param = f"messages.{i}.content.{j}"
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise InvalidRequestError("An image_url part needs image_url.url.", param=param)
    try:
        data_url = parse_data_url(url)
    except InvalidRequestError as exc:
        raise InvalidRequestError(exc.message, param=param) from None
    if data_url is not None:
        if data_url.mime_type not in IMAGE_TYPES:
            raise InvalidRequestError(
                f"Image type {data_url.mime_type!r} is not supported by {PROVIDER} models "
                f"(use {', '.join(sorted(IMAGE_TYPES))}).", param=param)
        source = {"type": "base64", "media_type": data_url.mime_type, "data": data_url.data}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise InvalidRequestError("An image URL must be http(s) or a base64 data URL.",
                                  param=param)
    return _with_cache_control({"type": "image", "source": source}, part)


def _user_blocks(message: ChatMessage, i: int, where: str = "") -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content_parts(message)):
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequestError("A text part needs a string 'text'.",
                                          param=f"messages.{i}.content.{j}")
            if text:
                blocks.append(_with_cache_control({"type": "text", "text": text}, part))
        elif kind == "image_url":
            blocks.append(_image_block(part, i, j))
        else:
            raise unsupported_part(i, j, part, PROVIDER, where)
    return blocks


def _assistant_blocks(message: ChatMessage, i: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content_parts(message)):
        kind = part.get("type")
        text = part.get("text") if kind == "text" else part.get("refusal")
        if kind not in ("text", "refusal") or not isinstance(text, str):
            raise unsupported_part(i, j, part, PROVIDER, "in an assistant message")
        if text:
            blocks.append(_with_cache_control({"type": "text", "text": text}, part))
    for k, call in enumerate(message.tool_calls or ()):
        fn = checked_tool_call(call, i, k)
        arguments = parse_tool_arguments(fn.get("arguments"), i, k)
        if not isinstance(arguments, dict):
            raise InvalidRequestError("Tool call arguments must be a JSON object.",
                                      param=f"messages.{i}.tool_calls.{k}.function.arguments")
        blocks.append({"type": "tool_use", "id": call["id"], "name": fn["name"],
                       "input": arguments})
    return blocks


def _tool_result(message: ChatMessage, i: int) -> dict[str, Any]:
    if not message.tool_call_id:
        raise InvalidRequestError("A tool message needs a tool_call_id.",
                                  param=f"messages.{i}.tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    if isinstance(message.content, str):
        if message.content:
            block["content"] = message.content
    else:
        content = _user_blocks(message, i, "in a tool message")
        if content:
            block["content"] = content
    return block


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        merged = turns[-1]["content"] + blocks
        if role == "user":  # tool results must open the user turn that answers a tool_use
            merged.sort(key=lambda block: block["type"] != "tool_result")
        turns[-1]["content"] = merged
    else:
        turns.append({"role": role, "content": blocks})


def _messages(messages: list[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.role
        if role in ("system", "developer"):
            text = system_text(message, i, PROVIDER)
            if text:
                system.append(text)
        elif role == "user":
            _append(turns, "user", _user_blocks(message, i))
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(message, i))
        elif role == "tool":
            _append(turns, "user", [_tool_result(message, i)])
        else:
            raise InvalidRequestError(
                f"Role {role!r} is deprecated and not supported by {PROVIDER} models; use "
                "'tool'.", param=f"messages.{i}.role")
    if not turns:
        raise InvalidRequestError("At least one non-empty user or assistant message is needed.",
                                  param="messages")
    return "\n\n".join(system), turns


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for k, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function":
            raise InvalidRequestError(f"Only function tools are supported by {PROVIDER} models.",
                                      param=f"tools.{k}.type")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("A tool needs a function name.",
                                      param=f"tools.{k}.function.name")
        schema = fn.get("parameters")
        entry: dict[str, Any] = {
            "name": name,
            "input_schema": schema if isinstance(schema, dict)
            else {"type": "object", "properties": {}},
        }
        if isinstance(fn.get("description"), str):
            entry["description"] = fn["description"]
        out.append(entry)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif isinstance(choice, str) and choice in _TOOL_CHOICES:
        result = {"type": _TOOL_CHOICES[choice]}
    elif (isinstance(choice, dict) and choice.get("type") == "function"
          and isinstance(choice.get("function"), dict)
          and isinstance(choice["function"].get("name"), str)):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise InvalidRequestError(
            "'tool_choice' must be auto, required, none or {\"type\": \"function\", "
            "\"function\": {\"name\": …}}.", param="tool_choice")
    if parallel is False:
        result = result or {"type": "auto"}
        if result["type"] != "none":
            result["disable_parallel_tool_use"] = True
    return result


def build_messages_request(request: ChatRequest, model: str) -> dict[str, Any]:
    """The Messages request body (a JSON object) for ``request``, streaming, for ``model``.

    Raises ``InvalidRequestError`` (400, ``param`` naming the field) as the module describes.
    """
    raw = request.raw
    _check_unsupported(raw)
    system, messages = _messages(request.messages)
    thinking = _thinking(raw)
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": _max_tokens(request.token_limit, thinking),
        "stream": True,
    }
    if system:
        body["system"] = system
    if thinking is not None:
        body["thinking"] = thinking
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if stops := request.stop_list():
        body["stop_sequences"] = stops
    user = request.user or raw.get("safety_identifier")
    if isinstance(user, str) and user:
        body["metadata"] = {"user_id": user}
    if request.tools:
        body["tools"] = _tools(request.tools)
        choice = _tool_choice(request.tool_choice, raw.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    elif request.tool_choice not in (None, "none", "auto"):
        raise InvalidRequestError("'tool_choice' needs 'tools'.", param="tool_choice")
    return body
