"""Gemini provider: ``POST {base_url}/models/{model}:streamGenerateContent?alt=sse``.

Wire facts: docs/wire.md §6.

The request is built by ``providers.gemini_request``; auth is the ``x-goog-api-key`` header.

Stream translation (docs/wire.md §6; Gemini API reference, ``GenerateContentResponse``): the body is
data-only SSE with no terminator, so its clean end is the end of the stream. Each event is one
``GenerateContentResponse``; per candidate (``index``, default 0) and event the adapter yields at
most one content chunk and one finish chunk:

- ``text`` parts → ``delta.content``; ``text`` parts with ``thought: true`` →
  ``delta.reasoning_content``; each ``functionCall`` part (always whole) → one complete tool-call
  delta ``{index, id, type: "function", function: {name, arguments: <args as JSON>}}``, with
  ``index`` counted per candidate and ``id`` the part's own or ``call_<24 hex>``;
- ``finishReason`` → ``finish_reason`` (``FINISH_REASONS``; ``tool_calls`` when the candidate
  called a function); ``promptFeedback.blockReason`` finishes every choice with
  ``content_filter``;
- the last ``usageMetadata`` → one usage chunk (``choices: []``) after the body's end: prompt
  tokens = ``promptTokenCount`` + ``toolUsePromptTokenCount``, completion tokens =
  ``candidatesTokenCount`` + ``thoughtsTokenCount``, with ``cachedContentTokenCount`` and
  ``thoughtsTokenCount`` as the OpenAI details.

Errors: an event with a top-level ``error`` raises ``UpstreamError`` after the chunks before it;
a connection lost mid-body raises ``UpstreamError``; an event that is not JSON or not a response
object is skipped and counted (``ChunkStream.skip_malformed``, which fails the stream after too
many in a row). Before the stream, a non-2xx answer
(``{"error": {"code", "message", "status"}}``) keeps its HTTP status (``gemini_status_error``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from ..chunks import Chunk, chat_chunk, make_usage, usage_chunk
from ..errors import UpstreamError, UpstreamStatusError
from ..schemas import ChatRequest
from .base import ChunkStream, Target
from .gemini_request import build_request
from .http import HTTPProvider, MalformedEvent, UpstreamStream, retry_after

__all__ = ["FINISH_REASONS", "GeminiProvider", "GeminiStream", "gemini_status_error"]

FINISH_REASONS: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
}
"""Gemini ``finishReason`` → OpenAI ``finish_reason`` (docs/wire.md §6). ``IMAGE_*`` values are
``content_filter`` too; anything else is ``stop``."""

_MAX_MODEL_PAGES = 10


def finish_reason(reason: str) -> str:
    """The OpenAI ``finish_reason`` for a Gemini ``finishReason``."""
    mapped = FINISH_REASONS.get(reason)
    if mapped is not None:
        return mapped
    return "content_filter" if reason.startswith("IMAGE_") else "stop"


def error_type(status: int) -> str:
    """The OpenAI-style error ``type`` for an HTTP status from Gemini."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status == 503:
        return "overloaded_error"
    if status >= 500:
        return "api_error"
    return "invalid_request_error"


def _error_object(parsed: Any) -> dict[str, Any] | None:
    # Google answers ``{"error": {...}}``, and some front ends wrap it in a one-item list.
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    err = parsed.get("error") if isinstance(parsed, dict) else None
    return err if isinstance(err, dict) else None


def gemini_status_error(status: int, body: bytes,
                        headers: Mapping[str, str]) -> UpstreamStatusError:
    """The typed error for a non-2xx Gemini answer: its ``message``, ``type`` by status
    (``error_type``), ``code`` = the Gemini ``status`` string (e.g. ``RESOURCE_EXHAUSTED``),
    ``retry_after`` (s) from the headers."""
    message = f"The upstream answered HTTP {status}."
    code: str | None = None
    try:
        err = _error_object(orjson.loads(body)) if body else None
    except orjson.JSONDecodeError:
        err = None
    if err is not None:
        message = str(err.get("message") or message)
        if isinstance(err.get("status"), str):
            code = err["status"]
    return UpstreamStatusError(status, message, type=error_type(status), code=code,
                               retry_after=retry_after(headers))


def midstream_error(error: Any) -> UpstreamError:
    """The ``UpstreamError`` for a mid-stream ``error`` object (``code``, ``message``,
    ``status``)."""
    if not isinstance(error, dict):
        return UpstreamError(str(error), reason="reported")
    message = str(error.get("message") or "The upstream reported an error mid-stream.")
    status = error.get("status")
    err = UpstreamError(message, code=status if isinstance(status, str) else "upstream_error",
                        reason="reported")
    if isinstance(error.get("code"), int):
        err.type = error_type(error["code"])
    return err


def _usage(meta: dict[str, Any]) -> dict[str, Any]:
    def count(key: str) -> int:
        value = meta.get(key)
        return value if isinstance(value, int) else 0

    thoughts = count("thoughtsTokenCount")
    usage = make_usage(count("promptTokenCount") + count("toolUsePromptTokenCount"),
                       count("candidatesTokenCount") + thoughts)
    usage["prompt_tokens_details"] = {"cached_tokens": count("cachedContentTokenCount")}
    usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


class GeminiStream(UpstreamStream[bytes]):
    """Chat chunks translated from one Gemini SSE response of ``candidates`` candidates."""

    def __init__(self, response: aiohttp.ClientResponse, candidates: int = 1) -> None:
        super().__init__(response)
        self.candidates = candidates
        self._calls: dict[int, int] = {}  # candidate index → function calls seen
        self._finished: set[int] = set()
        self._usage_meta: dict[str, Any] | None = None

    def _event(self, payload: bytes, batch: list[Chunk]) -> int | None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise MalformedEvent(payload, "not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("candidates", []),
                                                         list | None):
            raise MalformedEvent(payload, "not a GenerateContentResponse")
        error = event.get("error")
        if error:
            raise midstream_error(error)
        self._translate(event, batch)
        return None

    def _body_end(self) -> list[Chunk]:
        self._done = True  # no terminator in this dialect: the body's end is the end
        if self._usage_meta is None:
            return []
        return [usage_chunk("chat", _usage(self._usage_meta))]

    def _translate(self, event: dict[str, Any], batch: list[Chunk]) -> None:
        meta = event.get("usageMetadata")
        if isinstance(meta, dict):
            self._usage_meta = meta
        for candidate in event.get("candidates") or ():
            if isinstance(candidate, dict):
                self._candidate(candidate, batch)
        feedback = event.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            for index in range(self.candidates):
                if index not in self._finished:
                    self._finished.add(index)
                    batch.append(chat_chunk(index, {}, "content_filter"))

    def _candidate(self, candidate: dict[str, Any], batch: list[Chunk]) -> None:
        index = candidate.get("index", 0)
        if not isinstance(index, int) or index in self._finished:
            return
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in parts or ():
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if isinstance(text, str):
                if text:
                    (thoughts if part.get("thought") else texts).append(text)
                continue
            call = part.get("functionCall")
            if isinstance(call, dict):
                calls.append(self._tool_call(index, call))
        delta: dict[str, Any] = {}
        if thoughts:
            delta["reasoning_content"] = "".join(thoughts)
        if texts:
            delta["content"] = "".join(texts)
        if calls:
            delta["tool_calls"] = calls
        if delta:
            batch.append(chat_chunk(index, delta))
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason != "FINISH_REASON_UNSPECIFIED":
            self._finished.add(index)
            mapped = "tool_calls" if self._calls.get(index) else finish_reason(reason)
            batch.append(chat_chunk(index, {}, mapped))

    def _tool_call(self, index: int, call: dict[str, Any]) -> dict[str, Any]:
        number = self._calls.get(index, 0)
        self._calls[index] = number + 1
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = "call_" + secrets.token_hex(12)
        args = call.get("args")
        return {
            "index": number,
            "id": call_id,
            "type": "function",
            "function": {"name": str(call.get("name") or ""),
                         "arguments": orjson.dumps(args if args is not None else {}).decode()},
        }

    def partial_usage(self) -> dict[str, Any] | None:
        """The usage of the last ``usageMetadata`` seen, when the stream ended early."""
        return _usage(self._usage_meta) if self._usage_meta is not None else None


class GeminiProvider(HTTPProvider):
    """A Gemini API endpoint: ``base_url`` like ``https://generativelanguage.googleapis.com/
    v1beta``; key in ``x-goog-api-key``. Chat only (text completions are a 400)."""

    dialect = "gemini"

    def request_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self.api_key()
        if key:
            headers["x-goog-api-key"] = key
        return headers

    def status_error(self, status: int, body: bytes,
                     headers: Mapping[str, str]) -> UpstreamStatusError:
        return gemini_status_error(status, body, headers)

    async def open_chat(self, request: ChatRequest, target: Target, *,
                        connect_s: float | None = 10.0) -> ChunkStream:
        """Translate, POST and return the stream. Raises ``InvalidRequestError`` (400) for a
        request Gemini cannot take, and as ``HTTPProvider.open_stream`` before the stream."""
        body = build_request(request)
        model = target.upstream_model.removeprefix("models/")
        url = f"{self.base_url}/models/{quote(model, safe='')}:streamGenerateContent?alt=sse"
        response = await self.open_stream(url, body, connect_s=connect_s)
        return GeminiStream(response, candidates=request.n)

    async def list_models(self) -> list[str]:
        """``GET {base_url}/models`` (all pages): the ``name`` of each model whose
        ``supportedGenerationMethods`` include ``generateContent``, without ``models/``.
        Raises ``UpstreamError`` / ``UpstreamStatusError``."""
        ids: list[str] = []
        token = ""
        for _ in range(_MAX_MODEL_PAGES):
            url = f"{self.base_url}/models?pageSize=1000"
            if token:
                url += "&pageToken=" + quote(token, safe="")
            body = await self.get_json(url)
            if not isinstance(body, dict):
                break
            for model in body.get("models") or ():
                if not isinstance(model, dict) or not isinstance(model.get("name"), str):
                    continue
                if "generateContent" in (model.get("supportedGenerationMethods") or ()):
                    ids.append(model["name"].removeprefix("models/"))
            token = body.get("nextPageToken") or ""
            if not isinstance(token, str) or not token:
                break
        return ids
