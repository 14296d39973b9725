"""Stored responses, for ``previous_response_id`` on ``/v1/responses``.

A response that completed (or ended incomplete) with ``store`` not false is kept in the state
layer (``sluicegate.state``: memory, or Redis shared by every instance) for
``resumable.retention_s`` (600 s by default), as the chat messages of its conversation: the
earlier turns, its own input (without its ``instructions``, which, as OpenAI documents, do not
carry over) and its output (an assistant message with its text and function calls). A request
naming it as ``previous_response_id`` continues from those messages. Only the credential that
created a response can continue it (its SHA-256 is stored, never the key); any other, an
unknown or an expired id is a 400 ``previous_response_not_found``. Storing never fails a
response: a state failure is logged, and reading one is a 503.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import orjson
from aiohttp import web

from ..errors import InvalidRequestError, StateUnavailableError
from ..resume.log import auth_digest
from ..state import StateUnavailable, key

__all__ = ["load", "output_message", "save"]

log = logging.getLogger("sluicegate.ingress")


def _credential(request: web.Request) -> str | None:
    return request.headers.get("Authorization") or request.headers.get("x-api-key")


def _key(response_id: str) -> str:
    return key(response_id, "response")


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
               messages: list[dict[str, Any]]) -> None:
    data = orjson.dumps({"auth": auth_digest(_credential(request)), "messages": messages})
    try:
        await gateway.state.set(_key(response_id), data,
                                ttl_s=gateway.config.resumable.retention_s)
    except StateUnavailable as exc:
        log.warning("response %s was not stored, the state failed: %s", response_id, exc)


async def load(gateway: Any, request: web.Request, response_id: Any) -> list[dict[str, Any]]:
    """The conversation of a stored response, to continue it."""
    missing = InvalidRequestError(f"Previous response with id {response_id!r} not found.",
                                  param="previous_response_id",
                                  code="previous_response_not_found")
    if not isinstance(response_id, str):
        raise missing
    try:
        data = await gateway.state.get(_key(response_id))
    except ValueError:  # not a valid id at all
        raise missing from None
    except StateUnavailable:
        raise StateUnavailableError("The shared state cannot be reached.") from None
    if data is None:
        raise missing
    stored = orjson.loads(data)
    if not hmac.compare_digest(stored["auth"], auth_digest(_credential(request))):
        raise missing
    messages: list[dict[str, Any]] = stored["messages"]
    return messages
