"""Stored responses, for ``previous_response_id`` on ``/v1/responses``.

A response that completed (or ended incomplete) with ``store`` not false is kept in the state
layer (``sluicegate.state``: memory, or Redis shared by every instance) for
``resumable.retention_s`` (600 s by default), as the chat messages of its conversation: the
earlier turns, its own input (without its ``instructions``, which, as OpenAI documents, do not
carry over) and its output (an assistant message with its text and function calls). A request
naming it as ``previous_response_id`` continues from those messages. Its output items are kept
too: an input item ``{"type": "item_reference", "id": …}`` stands for one of them (the Vercel AI
SDK's OpenAI provider sends its earlier answers so while ``store`` is on:
``convertToOpenAIResponsesInput`` in @ai-sdk/openai 3, ``input.push({ type: "item_reference",
id })`` for an assistant text part with an ``itemId``). An item's id names its response
(``item_id``), so one read finds it. Only the credential that created a response can continue
it or reference its items (its SHA-256 is stored, never the key); any other, an unknown or an
expired id is a 400 (``previous_response_not_found``, or ``input.<i>.id`` for an item).
Storing never fails a response: a state failure is logged, and reading one is a 503.
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import Any

import orjson
from aiohttp import web

from ..errors import InvalidRequestError, StateUnavailableError
from ..resume.log import auth_digest
from ..state import StateUnavailable, key

__all__ = ["item_id", "load", "output_message", "resolve_references", "save"]

log = logging.getLogger("sluicegate.ingress")


def _credential(request: web.Request) -> str | None:
    return request.headers.get("Authorization") or request.headers.get("x-api-key")


def _key(response_id: str) -> str:
    return key(response_id, "response")


_ITEM_ID = re.compile(r"[a-z]+_([0-9a-f]{24})[0-9a-f]{4}")


def item_id(prefix: str, response_id: str, index: int) -> str:
    """The id of the output item at ``index`` of ``response_id`` (``resp_`` + 24 hex digits):
    ``<prefix>_`` + those digits + ``index`` in 4 hex digits, e.g. ``msg_<24 hex>0000``."""
    return f"{prefix}_{response_id.removeprefix('resp_')}{index:04x}"


def _response_of(item: Any) -> str | None:
    """The response id an item id names (see ``item_id``), or None."""
    match = _ITEM_ID.fullmatch(item) if isinstance(item, str) else None
    return "resp_" + match[1] if match else None


def output_message(output: list[dict[str, Any]]) -> dict[str, Any]:
    """A response's output items as one assistant chat message."""
    texts = [part.get("text", "") for item in output if item.get("type") == "message"
             for part in item.get("content") or ()]
    calls = [{"id": item["call_id"], "type": "function",
              "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"}}
             for item in output if item.get("type") == "function_call"]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


async def save(gateway: Any, request: web.Request, response_id: str,
               messages: list[dict[str, Any]], output: list[dict[str, Any]]) -> None:
    """Keep a response: its conversation as chat ``messages`` and its ``output`` items."""
    data = orjson.dumps({"auth": auth_digest(_credential(request)), "messages": messages,
                         "output": output})
    try:
        await gateway.state.set(_key(response_id), data,
                                ttl_s=gateway.config.resumable.retention_s)
    except StateUnavailable as exc:
        log.warning("response %s was not stored, the state failed: %s", response_id, exc)


async def _record(gateway: Any, request: web.Request, response_id: Any,
                  ) -> dict[str, Any] | None:
    """The stored record of ``response_id`` if this request's credential made it, else None;
    raises ``StateUnavailableError`` when the state cannot be read."""
    if not isinstance(response_id, str):
        return None
    try:
        data = await gateway.state.get(_key(response_id))
    except ValueError:  # not a valid id at all
        return None
    except StateUnavailable:
        raise StateUnavailableError("The shared state cannot be reached.") from None
    if data is None:
        return None
    stored: dict[str, Any] = orjson.loads(data)
    if not hmac.compare_digest(stored["auth"], auth_digest(_credential(request))):
        return None
    return stored


async def load(gateway: Any, request: web.Request, response_id: Any) -> list[dict[str, Any]]:
    """The conversation of a stored response, to continue it."""
    stored = await _record(gateway, request, response_id)
    if stored is None:
        raise InvalidRequestError(f"Previous response with id {response_id!r} not found.",
                                  param="previous_response_id",
                                  code="previous_response_not_found")
    messages: list[dict[str, Any]] = stored["messages"]
    return messages


async def resolve_references(gateway: Any, request: web.Request, items: list[Any],
                             ) -> list[Any]:
    """``input`` with each ``{"type": "item_reference", "id": …}`` replaced by the stored output
    item it names (a ``message`` or ``function_call`` item); ``items`` itself when there is
    none. Raises ``InvalidRequestError`` (param ``input.<i>.id``) for an item that is unknown,
    expired, of a response stored without ``store``, or of another credential's response."""
    if not any(isinstance(item, dict) and item.get("type") == "item_reference"
               for item in items):
        return items
    records: dict[str, dict[str, Any] | None] = {}
    out: list[Any] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("type") != "item_reference":
            out.append(item)
            continue
        found = None
        if (response_id := _response_of(item.get("id"))) is not None:
            if response_id not in records:
                records[response_id] = await _record(gateway, request, response_id)
            stored = records[response_id] or {}
            found = next((o for o in stored.get("output") or () if o.get("id") == item["id"]),
                         None)
        if found is None:
            raise InvalidRequestError(f"Item with id {item.get('id')!r} not found.",
                                      param=f"input.{i}.id")
        out.append(found)
    return out
