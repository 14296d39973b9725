"""OpenAI chat request → OpenAI Responses request (``POST {base_url}/responses``).

Sources: the OpenAI API reference (Responses → Create a model response) and openai-python's
``types/responses`` (``ResponseCreateParams``, ``ResponseInputItemParam``, ``FunctionToolParam``).

``build_responses_request(request, model)`` returns the JSON body:

- ``model``, ``stream: true``, ``store`` (false unless the chat request set it: Chat
  Completions stores nothing by default, Responses stores by default);
- leading system and developer messages → ``instructions`` (texts joined by a blank line); a
  later one stays in place as a ``system`` / ``developer`` message item;
- user messages → message items; parts ``text`` → ``input_text``, ``image_url`` →
  ``input_image`` (``image_url``: the https or data URL, ``detail``, default ``auto``),
  ``input_audio`` → ``input_audio`` (wav, mp3), ``file`` → ``input_file``;
- assistant messages → a message item with their text (refusal parts as text), then one
  ``function_call`` item ``{call_id, name, arguments}`` per ``tool_calls`` entry;
- ``tool`` messages → ``function_call_output`` ``{call_id, output}`` (text; other parts as a
  list of input parts);
- ``tools`` → ``{type: function, name, description, parameters, strict}`` (``strict`` false
  unless the chat tool set it: Responses' default is true, Chat Completions' false);
  ``tool_choice`` auto / none / required, ``{type: function, name}``;
  ``parallel_tool_calls``;
- ``max_completion_tokens`` / ``max_tokens`` → ``max_output_tokens`` (tokens),
  ``temperature``, ``top_p``, ``reasoning_effort`` → ``reasoning.effort``,
  ``response_format`` (json_schema, json_object) → ``text.format``, ``verbosity`` →
  ``text.verbosity``; ``user``, ``safety_identifier``, ``prompt_cache_key``, ``metadata``,
  ``service_tier`` pass.

Refused with ``InvalidRequestError`` (400, ``param`` naming the field) when set to anything but
the default, as Responses has no equivalent: ``stop`` (no stop sequences), ``n`` > 1,
``logprobs``, ``top_logprobs``, ``logit_bias``, ``presence_penalty``, ``frequency_penalty``,
``seed``, ``audio``, ``modalities`` other than text, ``prediction``, ``web_search_options``,
``functions`` / ``function_call`` (deprecated). The gateway's own fields (``models``,
``timeouts``, ``cache``, ``task``, ``stream_options``) and unknown fields are not sent.

``native_body(body, history)`` is what a ``/v1/responses`` client's own body becomes for a
Responses upstream (see its docstring).
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import InvalidRequestError
from ..schemas import ChatMessage, ChatRequest
from .parts import (
    checked_tool_call,
    content_parts,
    parse_data_url,
    system_text,
    unsupported_part,
)

__all__ = ["build_responses_request", "input_items", "native_body"]

PROVIDER = "responses"

# OpenAI chat fields with no Responses equivalent: refused unless one of these (the defaults).
_NO_EQUIVALENT: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "seed": (None,),
    "audio": (None,),
    "prediction": (None,),
    "modalities": (None, ["text"]),
    "web_search_options": (None,),
}
_PASSED = ("parallel_tool_calls", "user", "safety_identifier", "prompt_cache_key", "metadata",
           "service_tier")
_AUDIO_FORMATS = ("wav", "mp3")
_GATEWAY_OWN = ("stream", "background", "previous_response_id")  # never in a native body


def _reject(field: str, detail: str) -> InvalidRequestError:
    return InvalidRequestError(f"'{field}' {detail} is not supported by {PROVIDER} models.",
                               param=field)


def _check_unsupported(request: ChatRequest) -> None:
    raw = request.raw
    if request.stop_list():
        raise _reject("stop", "(stop sequences; the Responses API has none)")
    for field, defaults in _NO_EQUIVALENT.items():
        if raw.get(field) not in defaults:
            raise _reject(field, "with a non-default value")
    n = raw.get("n")
    if n is not None and n != 1:
        raise _reject("n", "other than 1 (Responses returns one answer)")
    for field in ("functions", "function_call"):
        if raw.get(field) is not None:
            raise InvalidRequestError(
                f"'{field}' is deprecated and not supported by {PROVIDER} models; use 'tools'.",
                param=field)


def _part(part: dict[str, Any], i: int, j: int) -> dict[str, Any]:
    param = f"messages.{i}.content.{j}"
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise InvalidRequestError("A text part needs a string 'text'.", param=param)
        return {"type": "input_text", "text": part["text"]}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str) or not url:
            raise InvalidRequestError("An image_url part needs image_url.url.", param=param)
        try:
            parse_data_url(url)  # a data URL must be base64
        except InvalidRequestError as exc:
            raise InvalidRequestError(exc.message, param=param) from None
        detail = image.get("detail") if isinstance(image, dict) else None
        return {"type": "input_image", "image_url": url,
                "detail": detail if isinstance(detail, str) else "auto"}
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not (isinstance(audio, dict) and isinstance(audio.get("data"), str)
                and audio.get("format") in _AUDIO_FORMATS):
            raise InvalidRequestError("An input_audio part needs base64 'data' and a 'format' "
                                      f"of {' or '.join(_AUDIO_FORMATS)}.", param=param)
        return {"type": "input_audio",
                "input_audio": {"data": audio["data"], "format": audio["format"]}}
    if kind == "file" and isinstance(part.get("file"), dict):
        fields = {k: v for k, v in part["file"].items()
                  if k in ("file_data", "file_id", "filename") and isinstance(v, str)}
        if not fields.keys() & {"file_data", "file_id"}:
            raise InvalidRequestError("A file part needs file.file_data or file.file_id.",
                                      param=param)
        return {"type": "input_file", **fields}
    raise unsupported_part(i, j, part, PROVIDER)


def _assistant(message: ChatMessage, i: int) -> list[dict[str, Any]]:
    texts: list[str] = []
    for j, part in enumerate(content_parts(message)):
        kind = part.get("type")
        text = part.get("text") if kind == "text" else part.get("refusal")
        if kind not in ("text", "refusal") or not isinstance(text, str):
            raise unsupported_part(i, j, part, PROVIDER, "in an assistant message")
        texts.append(text)
    items: list[dict[str, Any]] = []
    if text := "".join(texts):
        items.append({"type": "message", "role": "assistant", "content": text})
    for k, call in enumerate(message.tool_calls or ()):
        fn = checked_tool_call(call, i, k)
        arguments = fn.get("arguments")
        if isinstance(arguments, dict):
            arguments = orjson.dumps(arguments).decode()
        elif not isinstance(arguments, str) or not arguments:
            arguments = "{}"
        items.append({"type": "function_call", "call_id": call["id"], "name": fn["name"],
                      "arguments": arguments})
    return items


def _tool_output(message: ChatMessage, i: int) -> dict[str, Any]:
    if not message.tool_call_id:
        raise InvalidRequestError("A tool message needs a tool_call_id.",
                                  param=f"messages.{i}.tool_call_id")
    parts = [_part(part, i, j) for j, part in enumerate(content_parts(message))]
    output: str | list[dict[str, Any]]
    if all(p["type"] == "input_text" for p in parts):
        output = "".join(p["text"] for p in parts)
    else:
        output = parts
    return {"type": "function_call_output", "call_id": message.tool_call_id, "output": output}


def input_items(messages: list[ChatMessage], *, instructions: bool = True
                ) -> tuple[str | None, list[dict[str, Any]]]:
    """Chat messages → (``instructions``, ``input`` items). With ``instructions`` false every
    system or developer message stays an item. Raises ``InvalidRequestError`` naming
    ``messages.<i>…``."""
    leading: list[str] = []
    items: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.role
        if role in ("system", "developer"):
            text = system_text(message, i, PROVIDER)
            if instructions and not items:
                leading.append(text)
            else:
                items.append({"type": "message", "role": role, "content": text})
        elif role == "user":
            if isinstance(message.content, str):
                items.append({"type": "message", "role": "user", "content": message.content})
            else:
                items.append({"type": "message", "role": "user", "content": [
                    _part(part, i, j) for j, part in enumerate(content_parts(message))]})
        elif role == "assistant":
            items.extend(_assistant(message, i))
        elif role == "tool":
            items.append(_tool_output(message, i))
        else:
            raise InvalidRequestError(
                f"Role {role!r} is deprecated and not supported by {PROVIDER} models; use "
                "'tool'.", param=f"messages.{i}.role")
    joined = "\n\n".join(t for t in leading if t)
    return (joined or None), items


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for k, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function":
            raise InvalidRequestError(f"Only function tools are supported by {PROVIDER} models.",
                                      param=f"tools.{k}.type")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequestError("A tool needs a function name.",
                                      param=f"tools.{k}.function.name")
        schema = fn.get("parameters")
        entry: dict[str, Any] = {
            "type": "function", "name": fn["name"],
            "parameters": schema if isinstance(schema, dict)
            else {"type": "object", "properties": {}},
            "strict": fn.get("strict") is True,
        }
        if isinstance(fn.get("description"), str):
            entry["description"] = fn["description"]
        out.append(entry)
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if (isinstance(choice, dict) and choice.get("type") == "function"
            and isinstance(choice.get("function"), dict)
            and isinstance(choice["function"].get("name"), str)):
        return {"type": "function", "name": choice["function"]["name"]}
    raise InvalidRequestError(
        "'tool_choice' must be auto, required, none or {\"type\": \"function\", "
        "\"function\": {\"name\": …}}.", param="tool_choice")


def _text_format(response_format: Any) -> dict[str, Any] | None:
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    schema = response_format.get("json_schema") if kind == "json_schema" else None
    if not isinstance(schema, dict) or not isinstance(schema.get("name"), str) \
            or not isinstance(schema.get("schema"), dict):
        raise InvalidRequestError(
            "'response_format' must be text, json_object or json_schema with json_schema.name "
            "and json_schema.schema.", param="response_format")
    fmt: dict[str, Any] = {"type": "json_schema", "name": schema["name"],
                           "schema": schema["schema"]}
    for field in ("strict", "description"):
        if schema.get(field) is not None:
            fmt[field] = schema[field]
    return fmt


def build_responses_request(request: ChatRequest, model: str) -> dict[str, Any]:
    """The Responses body (a JSON object) for ``request``, streaming, for ``model``.

    Raises ``InvalidRequestError`` (400, ``param`` naming the field) as the module describes.
    """
    raw = request.raw
    _check_unsupported(request)
    instructions, items = input_items(request.messages)
    if not items:
        raise InvalidRequestError("At least one non-system message is needed.",
                                  param="messages")
    body: dict[str, Any] = {"model": model, "input": items, "stream": True,
                            "store": raw.get("store") is True}
    if instructions is not None:
        body["instructions"] = instructions
    if (limit := request.token_limit) is not None:
        body["max_output_tokens"] = limit
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    for field in _PASSED:
        if raw.get(field) is not None:
            body[field] = raw[field]
    if request.tools:
        body["tools"] = _tools(request.tools)
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
    elif request.tool_choice not in (None, "none", "auto"):
        raise InvalidRequestError("'tool_choice' needs 'tools'.", param="tool_choice")
    effort = raw.get("reasoning_effort")
    if effort is not None:
        if not isinstance(effort, str):
            raise InvalidRequestError("'reasoning_effort' must be a string.",
                                      param="reasoning_effort")
        body["reasoning"] = {"effort": effort}
    text: dict[str, Any] = {}
    if (fmt := _text_format(raw.get("response_format"))) is not None:
        text["format"] = fmt
    if raw.get("verbosity") is not None:
        text["verbosity"] = raw["verbosity"]
    if text:
        body["text"] = text
    return body


def native_body(body: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``/v1/responses`` client's own body for a Responses upstream: as it came, without
    ``stream`` (the provider sets it) and ``background`` (the gateway runs a background
    response itself, on a plain upstream stream). Response ids are the gateway's own (the client
    never sees an upstream's), so when ``previous_response_id`` named a stored response, the
    upstream gets that conversation instead: ``history`` (its chat messages,
    ``response_store``) as input items before the body's own ``input``, and no
    ``previous_response_id``."""
    native = {k: v for k, v in body.items() if k not in _GATEWAY_OWN}
    if body.get("previous_response_id") is not None:
        _, earlier = input_items([ChatMessage.model_validate(m) for m in history],
                                 instructions=False)
        own = native.get("input")
        if isinstance(own, str):
            own = [{"type": "message", "role": "user", "content": own}]
        native["input"] = [*earlier, *(own if isinstance(own, list) else [])]
    return native
