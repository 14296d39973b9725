"""What makes two requests the same answer: the exact key, the semantic context and text.

The normalized request is the body minus the fields that never change the answer (transport,
accounting and the gateway's own fields: ``stream``, ``stream_options``, ``user``, ``timeouts``,
``cache``, ``models``, ``metadata`` …) and minus nulls and defaults (``n: 1``). Every other
field counts, unknown ones too: a field the gateway does not know may change the answer, so it
is in the key (safe by default). The model is the client's name for it.

- exact key: SHA-256 of the canonical JSON (sorted keys) of the normalized request, its kind
  (chat or text) and the scope (the caller's credential digest, later the virtual key id);
- semantic context: the same, with the last user message's text left out. Two requests are
  candidates for a semantic hit only when their contexts are equal: the same model, system
  prompt, earlier turns, tools and sampling fields;
- semantic text: the last message's text, when it is a user message of text only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["IGNORED_FIELDS", "RequestKeys", "is_deterministic", "request_keys"]

IGNORED_FIELDS = frozenset({
    "stream", "stream_options", "user", "timeouts", "cache", "models", "provider", "metadata",
    "store", "service_tier", "prompt_cache_key", "safety_identifier",
})
"""Body fields that never change the answer, so never part of a key."""

_DEFAULTS: dict[str, Any] = {"n": 1, "echo": False}


@dataclass(frozen=True, slots=True)
class RequestKeys:
    exact: str  # hex digest
    context: str | None  # hex digest; None: no semantic lookup possible
    text: str | None  # the last user message's text


def _normalized(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items()
            if k not in IGNORED_FIELDS and v is not None and _DEFAULTS.get(k, ...) != v}


def _digest(kind: str, scope: str, body: Any) -> str:
    blob = orjson.dumps([kind, scope, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()


def _user_text(message: Any) -> str | None:
    if not isinstance(message, dict) or message.get("role") != "user":
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(
            isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    return None  # images, audio…: exact matches only


def request_keys(raw: dict[str, Any], *, chat: bool, scope: str) -> RequestKeys:
    """The keys of a request body (as the client sent it)."""
    kind = "chat" if chat else "text"
    body = _normalized(raw)
    exact = _digest(kind, scope, body)
    context = text = None
    if chat:
        messages = body.get("messages")
        if isinstance(messages, list) and messages:
            text = _user_text(messages[-1])
            if text is not None and text.strip():
                last = {k: v for k, v in messages[-1].items() if k != "content"}
                context = _digest(kind + "/semantic", scope,
                                  {**body, "messages": [*messages[:-1], last]})
            else:
                text = None
    elif isinstance(body.get("prompt"), str | list):
        prompt = body["prompt"]
        text = prompt if isinstance(prompt, str) else str(prompt[0]) if prompt else None
        if text:
            context = _digest(kind + "/semantic", scope,
                              {k: v for k, v in body.items() if k != "prompt"})
    return RequestKeys(exact, context, text)


def is_deterministic(raw: dict[str, Any]) -> bool:
    """Temperature 0, or a seed given: the requests whose answers are worth replaying by
    default."""
    return raw.get("temperature") == 0 or raw.get("seed") is not None
