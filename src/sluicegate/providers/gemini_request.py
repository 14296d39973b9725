"""OpenAI chat request → Gemini ``generateContent`` request body.

Source: the Gemini API reference (``models.streamGenerateContent``, ``Content``, ``Part``,
``GenerationConfig``, ``Tool``, ``ToolConfig``) and docs/wire.md §6. Output shape::

    {"contents": [{"role": "user" | "model", "parts": [...]}],
     "systemInstruction"?: {"parts": [{"text"}]},
     "generationConfig"?: {temperature, topP, maxOutputTokens, stopSequences, candidateCount,
                           seed, presencePenalty, frequencyPenalty, responseMimeType,
                           responseJsonSchema, thinkingConfig},
     "tools"?: [{"functionDeclarations": [{name, description?, parametersJsonSchema?}]}],
     "toolConfig"?: {"functionCallingConfig": {"mode", "allowedFunctionNames"?}}}

Messages: system and developer → ``systemInstruction``; user → ``user``; assistant →
``model`` (its ``tool_calls`` become ``functionCall`` parts); tool results → ``functionResponse``
parts in one ``user`` turn per run of consecutive ``tool`` messages.

Every error is an ``InvalidRequestError`` (400) whose ``param`` names the OpenAI field, e.g.
``messages.2.content.1``, ``logprobs`` or ``tools.0.type``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import InvalidRequestError
from ..schemas import ChatMessage, ChatRequest
from .parts import (
    content_parts,
    guess_mime_type,
    parse_data_url,
    parse_tool_arguments,
    system_text,
    unsupported_part,
)

__all__ = ["THINKING_BUDGETS", "build_request"]

_PROVIDER = "Gemini"

THINKING_BUDGETS: dict[str, int] = {"minimal": 1024, "low": 1024, "medium": 4096,
                                    "high": 16384}
"""``reasoning_effort`` → ``thinkingConfig.thinkingBudget`` (tokens); ``none`` → budget 0."""

_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}  # tool_choice → calling mode

# OpenAI fields with no Gemini equivalent: rejected when set to anything but their default.
_NO_EQUIVALENT: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "audio": (None,),
    "prediction": (None,),
    "modalities": (None, ["text"]),
    "web_search_options": (None,),
    "verbosity": (None, "medium"),
    "functions": (None, []),
    "function_call": (None,),
}


def build_request(request: ChatRequest) -> dict[str, Any]:
    """The ``generateContent`` body for ``request``. Raises ``InvalidRequestError`` (400)."""
    raw = request.raw
    for field, defaults in _NO_EQUIVALENT.items():
        if raw.get(field) not in defaults:
            hint = " Use tools and tool_choice." if field.startswith("function") else ""
            raise InvalidRequestError(
                f"'{field}' is not supported by Gemini models.{hint}", param=field)
    body: dict[str, Any] = {}
    system, contents = _contents(request.messages)
    if not contents:
        raise InvalidRequestError(
            "Gemini models need at least one user or assistant message.", param="messages")
    body["contents"] = contents
    if system:
        body["systemInstruction"] = {"parts": system}
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    tools = _tools(request.tools)
    if tools:
        body["tools"] = [{"functionDeclarations": tools}]
    tool_config, narrowed = _tool_config(request.tool_choice, tools)
    if narrowed is not None:
        body["tools"] = [{"functionDeclarations": [t for t in tools if t["name"] in narrowed]}]
    if tool_config is not None:
        body["toolConfig"] = tool_config
    return body


# -- generation config ---------------------------------------------------------------------


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    raw = request.raw
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.token_limit is not None:
        config["maxOutputTokens"] = request.token_limit
    stops = request.stop_list()
    if stops:
        config["stopSequences"] = stops
    if request.n > 1:
        config["candidateCount"] = request.n
    if request.seed is not None:
        config["seed"] = request.seed
    if request.presence_penalty is not None:
        config["presencePenalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        config["frequencyPenalty"] = request.frequency_penalty
    config.update(_response_format(raw.get("response_format")))
    effort = raw.get("reasoning_effort")
    if effort is not None:
        if effort == "none":
            config["thinkingConfig"] = {"thinkingBudget": 0}
        elif effort in THINKING_BUDGETS:
            config["thinkingConfig"] = {"thinkingBudget": THINKING_BUDGETS[effort],
                                        "includeThoughts": True}
        else:
            raise InvalidRequestError(
                "'reasoning_effort' must be one of none, minimal, low, medium, high.",
                param="reasoning_effort")
    return config


def _response_format(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequestError("'response_format.json_schema.schema' must be an object.",
                                      param="response_format.json_schema.schema")
        return {"responseMimeType": "application/json", "responseJsonSchema": schema}
    raise InvalidRequestError(
        "'response_format.type' must be text, json_object or json_schema for Gemini models.",
        param="response_format.type")


# -- tools -------------------------------------------------------------------------------


def _tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """OpenAI function tools → Gemini ``functionDeclarations``. The parameters are JSON Schema,
    so they go to ``parametersJsonSchema`` (``parameters`` takes only the OpenAPI subset and
    rejects e.g. ``additionalProperties``, which OpenAI strict schemas always carry)."""
    declarations: list[dict[str, Any]] = []
    for i, tool in enumerate(tools or ()):
        if tool.get("type") != "function":
            raise InvalidRequestError("Gemini models take only tools of type 'function'.",
                                      param=f"tools.{i}.type")
        fn = tool.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("A function tool needs a name.",
                                      param=f"tools.{i}.function.name")
        assert isinstance(fn, dict)
        declaration: dict[str, Any] = {"name": name}
        if fn.get("description"):
            declaration["description"] = fn["description"]
        if fn.get("parameters") is not None:
            if not isinstance(fn["parameters"], dict):
                raise InvalidRequestError("Function parameters must be a JSON Schema object.",
                                          param=f"tools.{i}.function.parameters")
            declaration["parametersJsonSchema"] = fn["parameters"]
        declarations.append(declaration)
    return declarations


def _tool_config(choice: str | dict[str, Any] | None, tools: list[dict[str, Any]]
                 ) -> tuple[dict[str, Any] | None, set[str] | None]:
    """``tool_choice`` → (``toolConfig``, the function names to keep declaring or None for
    all). ``allowed_tools`` in auto mode narrows the declared functions instead of naming them
    (Gemini takes ``allowedFunctionNames`` only in ANY mode)."""
    if choice is None:
        return None, None
    names: list[str] | None = None
    only = False
    if isinstance(choice, str) and choice in _MODES:
        mode = _MODES[choice]
    elif isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("'tool_choice.function.name' is required.",
                                      param="tool_choice.function.name")
        mode, names = "ANY", [name]
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        spec = choice.get("allowed_tools")
        if not isinstance(spec, dict) or spec.get("mode") not in ("auto", "required"):
            raise InvalidRequestError("'tool_choice.allowed_tools.mode' must be auto or required.",
                                      param="tool_choice.allowed_tools.mode")
        names = []
        for k, tool in enumerate(spec.get("tools") or ()):
            fn = tool.get("function") if isinstance(tool, dict) else None
            name = fn.get("name") if isinstance(fn, dict) else None
            if not isinstance(name, str):
                raise InvalidRequestError("Each allowed tool needs a function name.",
                                          param=f"tool_choice.allowed_tools.tools.{k}")
            names.append(name)
        mode = "ANY" if spec["mode"] == "required" else "AUTO"
        only = mode == "AUTO"
    else:
        raise InvalidRequestError(
            "'tool_choice' must be auto, none, required, or a function or allowed_tools object.",
            param="tool_choice")
    if not tools:
        if mode == "NONE" or (mode == "AUTO" and not only):
            return None, None
        raise InvalidRequestError("'tool_choice' needs 'tools'.", param="tool_choice")
    declared = {t["name"] for t in tools}
    for name in names or ():
        if name not in declared:
            raise InvalidRequestError(f"'tool_choice' names an undeclared function {name!r}.",
                                      param="tool_choice")
    if only:
        return {"functionCallingConfig": {"mode": mode}}, set(names or ())
    calling: dict[str, Any] = {"mode": mode}
    if names is not None:
        calling["allowedFunctionNames"] = names
    return {"functionCallingConfig": calling}, None


# -- messages ----------------------------------------------------------------------------


def _contents(messages: list[ChatMessage]) -> tuple[list[dict[str, Any]],
                                                     list[dict[str, Any]]]:
    """(systemInstruction parts, contents)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool_call_id → function name, from assistant turns
    tool_turn: list[dict[str, Any]] | None = None  # the open run of tool results
    for i, message in enumerate(messages):
        role = message.role
        if role != "tool":
            tool_turn = None
        if role in ("system", "developer"):
            text = system_text(message, i, _PROVIDER)
            if text:
                system.append({"text": text})
        elif role == "user":
            parts = [_user_part(part, i, j) for j, part in enumerate(content_parts(message))]
            if parts:
                contents.append({"role": "user", "parts": parts})
        elif role == "assistant":
            parts = _assistant_parts(message, i, call_names)
            if parts:
                contents.append({"role": "model", "parts": parts})
        elif role == "tool":
            part = _tool_result(message, i, call_names)
            if tool_turn is None:
                tool_turn = []
                contents.append({"role": "user", "parts": tool_turn})
            tool_turn.append(part)
        else:
            raise InvalidRequestError(
                f"Messages with role {role!r} are not supported by Gemini models; "
                "use tool messages.", param=f"messages.{i}.role")
    return system, contents


def _user_part(part: dict[str, Any], i: int, j: int) -> dict[str, Any]:
    kind = part.get("type")
    param = f"messages.{i}.content.{j}"
    if kind == "text":
        return {"text": str(part.get("text", ""))}
    if kind == "image_url":
        spec = part.get("image_url")
        url = spec.get("url") if isinstance(spec, dict) else spec
        if not isinstance(url, str) or not url:
            raise InvalidRequestError("An image_url part needs a url.", param=param)
        return _media_part(url, param, "image/jpeg")
    if kind == "input_audio":
        spec = part.get("input_audio")
        data = spec.get("data") if isinstance(spec, dict) else None
        fmt = spec.get("format") if isinstance(spec, dict) else None
        if not isinstance(data, str) or not isinstance(fmt, str) or not fmt:
            raise InvalidRequestError("An input_audio part needs base64 data and a format.",
                                      param=param)
        return {"inlineData": {"mimeType": f"audio/{fmt}", "data": data}}
    if kind == "file":
        spec = part.get("file")
        data = spec.get("file_data") if isinstance(spec, dict) else None
        if not isinstance(data, str) or not data:
            raise InvalidRequestError(
                "Gemini models take files as file_data (base64 or a data URL), not file_id.",
                param=param)
        assert isinstance(spec, dict)
        if data.startswith("data:"):
            return _media_part(data, param, "application/octet-stream")
        filename = str(spec.get("filename") or "")
        return {"inlineData": {"mimeType": guess_mime_type(filename, "application/pdf"),
                               "data": data}}
    raise unsupported_part(i, j, part, _PROVIDER)


def _media_part(url: str, param: str, default_mime: str) -> dict[str, Any]:
    """A data URL → ``inlineData``; an http(s) URL → ``fileData`` (MIME type guessed from the
    extension)."""
    try:
        data_url = parse_data_url(url)
    except InvalidRequestError as exc:
        raise InvalidRequestError(exc.message, param=param) from None
    if data_url is not None:
        return {"inlineData": {"mimeType": data_url.mime_type, "data": data_url.data}}
    if url.startswith(("https://", "http://")):
        return {"fileData": {"mimeType": guess_mime_type(url, default_mime), "fileUri": url}}
    raise InvalidRequestError(
        "Gemini models take media as a data URL or an http(s) URL.", param=param)


def _assistant_parts(message: ChatMessage, i: int,
                     call_names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content_parts(message)):
        kind = part.get("type")
        if kind == "text":
            text = str(part.get("text", ""))
        elif kind == "refusal":
            text = str(part.get("refusal", ""))
        else:
            raise unsupported_part(i, j, part, _PROVIDER, "in an assistant message")
        if text:
            parts.append({"text": text})
    for k, call in enumerate(message.tool_calls or ()):
        fn = call.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("A tool call needs a function name.",
                                      param=f"messages.{i}.tool_calls.{k}.function.name")
        assert isinstance(fn, dict)
        args = parse_tool_arguments(fn.get("arguments"), i, k)
        if not isinstance(args, dict):
            raise InvalidRequestError(
                "Gemini models take tool call arguments as a JSON object.",
                param=f"messages.{i}.tool_calls.{k}.function.arguments")
        call_id = call.get("id")
        if isinstance(call_id, str) and call_id:
            call_names[call_id] = name
        # No ``id``: the Gemini API pairs calls and responses by name and order, and some of
        # its endpoints reject ``functionCall.id`` in requests.
        parts.append({"functionCall": {"name": name, "args": args}})
    return parts


def _tool_result(message: ChatMessage, i: int, call_names: dict[str, str]) -> dict[str, Any]:
    call_id = message.tool_call_id
    if not call_id or call_id not in call_names:
        raise InvalidRequestError(
            f"Tool message {i} answers tool_call_id {call_id!r}, which no earlier assistant "
            "message called.", param=f"messages.{i}.tool_call_id")
    texts = []
    for j, part in enumerate(content_parts(message)):
        if part.get("type") != "text":
            raise unsupported_part(i, j, part, _PROVIDER, "in a tool message")
        texts.append(str(part.get("text", "")))
    text = "".join(texts)
    response: dict[str, Any] = {"content": text}
    if text.lstrip().startswith("{"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            response = parsed
    return {"functionResponse": {"name": call_names[call_id], "response": response}}
