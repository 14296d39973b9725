"""OpenAI message content, read the same way by every request translator.

Content is a string, a list of content parts, or null (OpenAI Chat Completions reference). The
part types read here are ``text``, ``image_url`` (``{"url": "https://…" | "data:<mime>;base64,
…", "detail"?}``) and ``input_audio`` (``{"data": <base64>, "format": "wav" | "mp3" | …}``).
A part a provider cannot take is a 400 whose ``param`` names it: ``messages.<i>.content.<j>``.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import InvalidRequestError
from ..schemas import ChatMessage

__all__ = [
    "DataURL",
    "checked_tool_call",
    "content_parts",
    "parse_data_url",
    "parse_tool_arguments",
    "system_text",
    "unsupported_part",
]


def content_parts(message: ChatMessage) -> list[dict[str, Any]]:
    """The message's content as a list of parts (a string becomes one ``text`` part)."""
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def system_text(message: ChatMessage, index: int, provider: str) -> str:
    """A system or developer message's text. Raises ``InvalidRequestError`` for a non-text
    part (providers take system instructions as text)."""
    texts = []
    for j, part in enumerate(content_parts(message)):
        if part.get("type") != "text":
            raise unsupported_part(index, j, part, provider, "in a system message")
        texts.append(str(part.get("text", "")))
    return "".join(texts)


@dataclass(frozen=True, slots=True)
class DataURL:
    """A decoded ``data:`` URL: ``mime_type`` and the base64 ``data`` as sent."""

    mime_type: str
    data: str


def parse_data_url(url: str) -> DataURL | None:
    """``data:<mime>;base64,<data>`` → DataURL; None for any other URL (RFC 2397).

    Raises ``InvalidRequestError`` for a ``data:`` URL that is not base64 (providers take
    base64 only).
    """
    if not url.startswith("data:"):
        return None
    header, comma, data = url[5:].partition(",")
    params = header.split(";")
    if not comma or "base64" not in params[1:]:
        raise InvalidRequestError("An image data URL must be base64: data:<mime>;base64,<data>.")
    return DataURL(params[0] or "application/octet-stream", data)


def guess_mime_type(url: str, default: str = "image/jpeg") -> str:
    """The MIME type a URL's file extension suggests (``mimetypes``), else ``default``."""
    guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
    return guessed or default


def checked_tool_call(call: dict[str, Any], index: int, call_index: int) -> dict[str, Any]:
    """The ``function`` of assistant message ``index``'s tool call ``call_index`` (OpenAI shape:
    ``{id, type: "function", function: {name, arguments}}``). Raises ``InvalidRequestError``
    (400) naming ``messages.<i>.tool_calls.<k>.<field>`` for another type, no id or no name."""
    param = f"messages.{index}.tool_calls.{call_index}"
    fn = call.get("function")
    if call.get("type", "function") != "function" or not isinstance(fn, dict):
        raise InvalidRequestError("Only function tool calls are supported.",
                                  param=f"{param}.type")
    if not isinstance(call.get("id"), str) or not call["id"]:
        raise InvalidRequestError("A tool call needs an id.", param=f"{param}.id")
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        raise InvalidRequestError("A tool call needs a function name.",
                                  param=f"{param}.function.name")
    return fn


def parse_tool_arguments(arguments: Any, index: int, call_index: int) -> Any:
    """An assistant tool call's ``function.arguments`` (a JSON string) as an object.

    Raises ``InvalidRequestError`` naming ``messages.<i>.tool_calls.<k>.function.arguments``
    when it is not valid JSON.
    """
    if isinstance(arguments, dict):
        return arguments
    if arguments in (None, ""):
        return {}
    try:
        return orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        raise InvalidRequestError(
            "Tool call arguments must be a JSON object string.",
            param=f"messages.{index}.tool_calls.{call_index}.function.arguments",
        ) from None


def unsupported_part(index: int, part_index: int, part: dict[str, Any], provider: str,
                     where: str = "") -> InvalidRequestError:
    """The 400 for a content part ``provider`` cannot take, naming it in ``param``."""
    kind = part.get("type")
    suffix = f" {where}" if where else ""
    return InvalidRequestError(
        f"Content part type {kind!r} is not supported by {provider} models{suffix}.",
        param=f"messages.{index}.content.{part_index}",
    )
