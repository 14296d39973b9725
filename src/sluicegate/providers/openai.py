"""OpenAI-dialect upstream provider: OpenAI, OpenRouter, vLLM, llama.cpp server, Ollama, Groq.

Requests pass through as the client sent them, with three changes: ``model`` becomes the
deployment's upstream model, ``stream`` is true (non-stream requests are accumulated by the
gateway), and ``stream_options.include_usage`` is true so usage can always be accounted (the
gateway strips the usage chunk again if the client did not ask for it). The gateway-level
fields ``models`` (fallback list) and ``provider`` (routing preferences) pass through only to
OpenRouter, whose own fields they are; other upstreams never see them.

Stream parsing: one SSE decode and one ``orjson.loads`` per event, yielded in batches of one
network read; ``data: [DONE]`` ends the stream (docs/wire.md §2). Comments such as OpenRouter's
``: OPENROUTER PROCESSING`` are skipped by the decoder. An event whose JSON has a truthy
top-level ``error`` raises ``UpstreamError`` (what openai-python does, and what OpenRouter sends
mid-stream with ``finish_reason: "error"``), after the chunks before it. A connection lost
mid-body raises ``UpstreamError``.

Errors before the stream: see ``providers.http`` (OpenAI-shaped bodies keep their message, type
and code).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ..chunks import Chunk
from ..errors import UpstreamError
from ..schemas import ChatRequest, CompletionRequest
from .base import ChunkStream, Target
from .http import END, HTTPProvider, MalformedEvent, UpstreamStream

__all__ = ["OpenAIProvider", "OpenAIStream", "midstream_error"]

_OPENROUTER_ONLY = ("models", "provider")

_loads = orjson.loads


class OpenAIStream(UpstreamStream[bytes]):
    """Chunks parsed from one upstream SSE response; ``aclose()`` closes its connection.

    A body that ends without ``[DONE]`` ends the stream without an error, as it always has."""

    def _event(self, payload: bytes, batch: list[Chunk]) -> int | None:
        if payload[:6] == b"[DONE]":
            return END
        try:
            chunk = _loads(payload)
        except orjson.JSONDecodeError:
            raise MalformedEvent(payload, "not JSON") from None
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices", []), list | None):
            raise MalformedEvent(payload, "not a chunk object")
        error = chunk.get("error")
        if error:
            raise midstream_error(error)
        batch.append(chunk)
        return None


def midstream_error(error: Any) -> UpstreamError:
    """The ``UpstreamError`` for a mid-stream ``error`` object (OpenAI / OpenRouter shape:
    ``message``, ``type``, ``code``; a bare string is the message)."""
    if isinstance(error, dict):
        message = str(error.get("message") or "The upstream reported an error mid-stream.")
        code = error.get("code")
        err = UpstreamError(message, code=str(code) if code is not None else "upstream_error",
                            reason="reported")
        if isinstance(error.get("type"), str):
            err.type = error["type"]
        return err
    return UpstreamError(str(error), reason="reported")


class OpenAIProvider(HTTPProvider):
    """An OpenAI-dialect endpoint: ``base_url`` ends in ``/v1``; ``Authorization: Bearer``.

    ``openrouter=True`` keeps the ``models`` and ``provider`` request fields and adds the
    attribution headers ``HTTP-Referer`` / ``X-Title`` from ``OPENROUTER_SITE_URL`` /
    ``OPENROUTER_APP_NAME`` when set.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key_env: str | Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
        openrouter: bool = False,
    ) -> None:
        super().__init__(name, base_url, api_key_env=api_key_env, headers=headers,
                         connect_timeout=connect_timeout)
        self.openrouter = openrouter
        self.dialect = "openrouter" if openrouter else "openai"

    def request_headers(self) -> dict[str, str]:
        headers = super().request_headers()
        headers["Accept"] = "text/event-stream"
        if self.openrouter:
            if site := os.environ.get("OPENROUTER_SITE_URL"):
                headers["HTTP-Referer"] = site
            if app := os.environ.get("OPENROUTER_APP_NAME"):
                headers["X-Title"] = app
        return headers

    async def open_chat(self, request: ChatRequest, target: Target, *,
                        connect_s: float | None = 10.0) -> ChunkStream:
        return await self._open("/chat/completions", request.raw, target, connect_s)

    async def open_text(self, request: CompletionRequest, target: Target, *,
                        connect_s: float | None = 10.0) -> ChunkStream:
        return await self._open("/completions", request.raw, target, connect_s)

    async def _open(self, path: str, raw: dict[str, Any], target: Target,
                    connect_s: float | None) -> OpenAIStream:
        body = dict(raw)
        body["model"] = target.upstream_model
        body["stream"] = True
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        options.pop("resumable", None)  # the gateway's own
        body["stream_options"] = options
        body.pop("timeouts", None)  # the gateway's own per-request limits
        body.pop("cache", None)  # the gateway's own cache control
        body.pop("task", None)  # the gateway's own task routing
        if not self.openrouter:
            for field in _OPENROUTER_ONLY:
                body.pop(field, None)
        response = await self.open_stream(self.base_url + path, body, connect_s=connect_s)
        return OpenAIStream(response)
