"""OpenAI-dialect upstream provider: OpenAI, OpenRouter, vLLM, llama.cpp server, Ollama, Groq.

Requests pass through as the client sent them, with three changes: ``model`` becomes the
deployment's upstream model, ``stream`` is true (non-stream requests are accumulated by the
gateway), and ``stream_options.include_usage`` is true so usage can always be accounted (the
gateway strips the usage chunk again if the client did not ask for it).

Stream parsing: one SSE decode and one ``orjson.loads`` per event, yielded in batches of one
network read; ``data: [DONE]`` ends the stream (WIRE.md §2). An event whose JSON has a truthy
top-level ``error`` raises ``UpstreamError`` (what openai-python does, and what OpenRouter sends
mid-stream), after the chunks before it. A connection lost mid-body raises ``UpstreamError``.

Errors before the stream: connect failures → ``UpstreamError`` (502); a non-2xx status →
``UpstreamStatusError`` with the upstream's status and its OpenAI-shaped error fields, and
``retry_after`` (s) from ``retry-after-ms`` or ``retry-after`` (WIRE.md §7).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from ..chunks import Chunk
from ..errors import UpstreamError, UpstreamStatusError, UpstreamTimeoutError
from ..schemas import ChatRequest, CompletionRequest
from ..sse import SSEDecoder
from .base import ChunkStream, Target

__all__ = ["OpenAIProvider", "OpenAIStream"]

log = logging.getLogger("sluicegate.providers.openai")

_MAX_ERROR_BODY = 64 * 1024
_DRAIN_TIMEOUT_S = 0.5


class OpenAIStream(ChunkStream):
    """Chunks parsed from one upstream SSE response; ``aclose()`` closes its connection."""

    usage_source = "upstream"

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._done = False
        self.malformed = 0

    async def _iterate(self) -> AsyncIterator[list[Chunk]]:
        decoder = SSEDecoder()
        loads = orjson.loads
        try:
            async for data in self._response.content.iter_any():
                batch: list[Chunk] = []
                for payload in decoder.feed_data(data):
                    if payload[:6] == b"[DONE]":
                        self._done = True
                        if batch:
                            yield batch
                        return
                    try:
                        chunk = loads(payload)
                    except orjson.JSONDecodeError:
                        self.malformed += 1
                        log.warning("skipped a malformed upstream event: %r", payload[:200])
                        continue
                    if not isinstance(chunk, dict):
                        self.malformed += 1
                        continue
                    error = chunk.get("error")
                    if error:
                        if batch:
                            yield batch  # everything before the error reaches the client
                        raise _midstream_error(error)
                    batch.append(chunk)
                if batch:
                    yield batch
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise UpstreamError(f"The upstream connection was lost mid-stream: {exc}") from exc

    async def aclose(self) -> None:
        # A finished body returns its connection to the pool; anything else closes the socket,
        # so the upstream sees the disconnect at once and stops generating.
        response = self._response
        if self._done and not response.content.is_eof():
            # After [DONE] only the body's end (e.g. the last chunk of chunked encoding) is
            # left; read it so the connection can be reused instead of reconnecting.
            try:
                async with asyncio.timeout(_DRAIN_TIMEOUT_S):
                    while await response.content.readany():
                        pass
            except (TimeoutError, aiohttp.ClientError):
                pass
        if self._done and response.content.is_eof():
            response.release()
        else:
            response.close()


def _midstream_error(error: Any) -> UpstreamError:
    if isinstance(error, dict):
        message = str(error.get("message") or "The upstream reported an error mid-stream.")
        code = error.get("code")
        err = UpstreamError(message, code=str(code) if code is not None else "upstream_error")
        if isinstance(error.get("type"), str):
            err.type = error["type"]
        return err
    return UpstreamError(str(error))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    seconds = headers.get("retry-after")
    if seconds:
        try:
            return float(seconds)
        except ValueError:
            return None
    return None


def _status_error(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamStatusError:
    message = f"The upstream answered HTTP {status}."
    etype: str | None = None
    code: str | None = None
    param: str | None = None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or message)
        etype = err.get("type") if isinstance(err.get("type"), str) else None
        code = str(err["code"]) if err.get("code") is not None else None
        param = err.get("param") if isinstance(err.get("param"), str) else None
    elif isinstance(err, str):
        message = err
    return UpstreamStatusError(
        status, message, type=etype, code=code, param=param, retry_after=_retry_after(headers)
    )


class OpenAIProvider:
    """An OpenAI-dialect endpoint: ``base_url`` (ending in ``/v1``), key from ``api_key_env``.

    One pooled ``aiohttp.ClientSession`` per provider, created on first use inside the loop.
    ``connect_timeout`` is in s.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key_env: str | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.extra_headers = dict(headers or {})
        self.connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        headers.update(self.extra_headers)
        return headers

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
                auto_decompress=True,
            )
        return self._session

    async def open_chat(self, request: ChatRequest, target: Target) -> ChunkStream:
        return await self._open("/chat/completions", request.raw, target)

    async def open_text(self, request: CompletionRequest, target: Target) -> ChunkStream:
        return await self._open("/completions", request.raw, target)

    async def _open(self, path: str, raw: dict[str, Any], target: Target) -> OpenAIStream:
        body = dict(raw)
        body["model"] = target.upstream_model
        body["stream"] = True
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
        body.pop("models", None)  # a gateway-level fallback list, not the upstream's business
        session = self._get_session()
        try:
            response = await session.post(
                self.base_url + path, data=orjson.dumps(body), headers=self._headers()
            )
        except TimeoutError as exc:
            raise UpstreamTimeoutError(f"Connecting to the upstream timed out: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"Cannot reach the upstream: {exc}") from exc
        if response.status != 200:
            try:
                raw_body = await response.content.read(_MAX_ERROR_BODY)
            except aiohttp.ClientError:
                raw_body = b""
            finally:
                response.close()
            raise _status_error(response.status, raw_body, response.headers)
        return OpenAIStream(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
