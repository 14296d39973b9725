"""Builders for OpenAI-dialect stream chunks and completions (docs/wire.md §2, §3).

Chunks are plain dicts serialised once with orjson on the hot path:

- chat: ``{"id","object":"chat.completion.chunk","created","model",
  "choices":[{"index","delta","logprobs","finish_reason"}]}``;
- text: ``{"id","object":"text_completion","created","model",
  "choices":[{"index","text","logprobs","finish_reason"}]}``.

Usage objects are ``{"prompt_tokens","completion_tokens","total_tokens"}`` (tokens), with
``"estimated": true`` added when the gateway counted them itself.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Literal

__all__ = [
    "Chunk",
    "Kind",
    "chat_chunk",
    "estimate_tokens",
    "make_usage",
    "new_id",
    "now",
    "text_chunk",
]

Chunk = dict[str, Any]
Kind = Literal["chat", "text"]

_OBJECT = {"chat": "chat.completion.chunk", "text": "text_completion"}


def new_id(kind: Kind) -> str:
    """A fresh completion id: ``chatcmpl-…`` for chat, ``cmpl-…`` for text."""
    # Unique, not secret: the PRNG (~0.3 µs) instead of os.urandom (a syscall per request).
    return f"{'chatcmpl-' if kind == 'chat' else 'cmpl-'}{random.getrandbits(96):024x}"


def now() -> int:
    """Unix time in whole seconds, as the ``created`` field carries it."""
    return int(time.time())


def chat_chunk(
    index: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    *,
    id: str = "",
    created: int = 0,
    model: str = "",
) -> Chunk:
    """One chat.completion.chunk carrying one choice."""
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [
            {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ],
    }


def text_chunk(
    index: int,
    text: str,
    finish_reason: str | None = None,
    *,
    id: str = "",
    created: int = 0,
    model: str = "",
) -> Chunk:
    """One text_completion chunk carrying one choice."""
    return {
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
        ],
    }


def usage_chunk(kind: Kind, usage: dict[str, Any]) -> Chunk:
    """The final usage chunk: ``choices: []`` and the ``usage`` object."""
    return {"id": "", "object": _OBJECT[kind], "created": 0, "model": "", "choices": [],
            "usage": usage}


def make_usage(prompt_tokens: int, completion_tokens: int, *, estimated: bool = False) -> dict[
    str, Any
]:
    """``{"prompt_tokens","completion_tokens","total_tokens"}`` (+ ``"estimated": true``)."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if estimated:
        usage["estimated"] = True
    return usage


def estimate_tokens(chars: int) -> int:
    """Token estimate for text of ``chars`` characters when no tokenizer is at hand.

    About 4 characters a token for English BPE vocabularies (OpenAI's published rule of thumb).
    """
    return math.ceil(chars / 4) if chars > 0 else 0
