"""The HTTP server (aiohttp): routes, auth, body limits, SSE framing, disconnect → cancel.

Routes (OpenAI-compatible):

- ``POST /v1/chat/completions`` and ``POST /v1/completions``: ``stream`` true gives SSE,
  false one JSON completion;
- ``POST /api/v1/chat/completions/stream``: the chat endpoint, always streaming;
- ``GET /v1/models``, ``GET /healthz``, ``GET /metrics`` (Prometheus; once per request, never
  per chunk).

SSE responses follow WIRE.md §1-3 and §7: data-only events (``data: <json>\\n\\n``), no BOM, no
empty events, ``data: [DONE]`` last; headers ``Content-Type: text/event-stream``,
``Cache-Control: no-cache``, ``X-Accel-Buffering: no``; every event is written to the socket as
soon as it is produced. A failure after the headers ends the stream with the error frame of
WIRE.md §2 and ``[DONE]``; any failure before them is a real 4xx/5xx status with an OpenAI-shaped
body, never a 200.

Disconnects: the server runs with ``handler_cancellation=True``, so a client disconnect cancels
the handler at once, and the ``finally`` closes the provider stream (upstream socket closed,
local generation cancelled).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from .accumulate import Accumulator
from .config import GatewayConfig
from .errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    RouteNotFoundError,
)
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .providers.base import ChunkStream, Target
from .router import Router
from .schemas import ChatRequest, CompletionRequest, parse_chat_request, parse_completion_request
from .shaping import StreamShaper
from .sse import DONE

__all__ = ["SSE_HEADERS", "Gateway"]

log = logging.getLogger("sluicegate.server")
usage_log = logging.getLogger("sluicegate.usage")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: GatewayError) -> web.Response:
    """A JSON response with the error's status, body and headers."""
    return web.Response(
        status=error.status,
        body=orjson.dumps(error.to_body()),
        content_type="application/json",
        headers=error.headers(),
    )


class Gateway:
    """The gateway application. ``build_app()`` returns the aiohttp ``Application``."""

    def __init__(self, config: GatewayConfig, router: Router | None = None) -> None:
        self.config = config
        self.router = router or Router(config)
        self.usage_totals = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.metrics = Metrics() if config.server.metrics else None
        self._api_key = config.server.api_key.encode() if config.server.api_key else None

    # -- application -----------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._errors],
            client_max_size=self.config.server.max_body_bytes,
        )
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/api/v1/chat/completions/stream", self.chat_stream_alias)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/healthz", self.healthz)
        if self.metrics is not None:
            app.router.add_get("/metrics", self.metrics_text)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        if self.config.local.preload:
            await asyncio.to_thread(self.router.preload)

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.router.aclose()

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if self._api_key is not None and request.path != "/healthz":
                self._check_auth(request)
            return await handler(request)
        except GatewayError as exc:
            if self.metrics is not None:
                self.metrics.rejected.labels(str(exc.status)).inc()
            return error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            return error_response(PayloadTooLargeError(
                f"The request body exceeds {self.config.server.max_body_bytes} bytes."))
        except web.HTTPNotFound:
            return error_response(RouteNotFoundError(f"No route for {request.path}."))
        except web.HTTPMethodNotAllowed as exc:
            response = error_response(MethodNotAllowedError(
                f"{request.method} is not allowed on {request.path}."))
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
            return response

    def _check_auth(self, request: web.Request) -> None:
        assert self._api_key is not None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("Missing API key: send 'Authorization: Bearer <key>'.")
        if not hmac.compare_digest(token.strip().encode(), self._api_key):
            raise AuthenticationError("Incorrect API key provided.")

    # -- routes ----------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        engines = {name: engine.loaded for name, engine in self.router.engines.items()}
        return web.json_response({"status": "ok", "local_models_loaded": engines})

    async def metrics_text(self, request: web.Request) -> web.Response:
        assert self.metrics is not None
        return web.Response(body=self.metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(self, request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps({"object": "list", "data": await self.router.list_models_async()}),
            content_type="application/json",
        )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        req = parse_chat_request(await self._json(request))
        return await self._serve(request, req, "chat", stream=req.stream)

    async def chat_stream_alias(self, request: web.Request) -> web.StreamResponse:
        req = parse_chat_request(await self._json(request))
        return await self._serve(request, req, "chat", stream=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        req = parse_completion_request(await self._json(request))
        return await self._serve(request, req, "text", stream=req.stream)

    async def _json(self, request: web.Request) -> Any:
        limit = self.config.server.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLargeError(f"The request body exceeds {limit} bytes.")
        raw = await request.read()
        if not raw:
            raise InvalidRequestError("The request body is empty; expected a JSON object.")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None

    # -- the streaming path ----------------------------------------------------------------

    async def _serve(
        self,
        request: web.Request,
        req: ChatRequest | CompletionRequest,
        kind: str,
        *,
        stream: bool,
    ) -> web.StreamResponse:
        target = self.router.resolve(req.model)
        if isinstance(req, ChatRequest):
            prompt_chars = sum(len(m.text()) for m in req.messages)
            chunks = await target.provider.open_chat(req, target)
            shaper = StreamShaper("chat", req.model, include_usage=req.include_usage,
                                  prompt_chars=prompt_chars)
        else:
            chunks = await target.provider.open_text(req, target)
            shaper = StreamShaper("text", req.model, include_usage=req.include_usage,
                                  prompt_chars=len(req.prompt_text()))
        started = time.perf_counter()
        outcome = "failed"
        if self.metrics is not None:
            self.metrics.in_flight.inc()
        try:
            if stream:
                response, outcome = await self._stream(request, chunks, shaper, target)
                return response
            response = await self._complete(chunks, shaper, target)
            outcome = "completed"
            return response
        except asyncio.CancelledError:
            outcome = "cancelled"  # the client disconnected
            raise
        finally:
            await chunks.aclose()
            if shaper.usage is None:
                shaper.usage = chunks.partial_usage()
            self._account(shaper, target, outcome, started)

    async def _complete(self, chunks: ChunkStream, shaper: StreamShaper,
                        target: Target) -> web.Response:
        accumulator = Accumulator()
        async for batch in chunks:
            for chunk in batch:
                shaped = shaper.shape(chunk)
                if shaped is not None:
                    accumulator.add(shaped)
        shaper.include_usage = False
        shaper.closing_chunks()  # raises if the upstream ended early
        return web.Response(
            body=orjson.dumps(accumulator.result(shaper)),
            content_type="application/json",
            headers=self._route_headers(target),
        )

    def _route_headers(self, target: Target) -> dict[str, str]:
        return {"X-Sluicegate-Provider": target.provider.name,
                "X-Sluicegate-Model": target.upstream_model}

    async def _stream(self, request: web.Request, chunks: ChunkStream, shaper: StreamShaper,
                      target: Target) -> tuple[web.StreamResponse, str]:
        response = web.StreamResponse(headers={**SSE_HEADERS, **self._route_headers(target)})
        await response.prepare(request)
        write = response.write
        dumps = orjson.dumps
        shape = shaper.shape
        outcome = "completed"
        try:
            tail: bytes
            try:
                async for batch in chunks:
                    # One write per batch: chunks that arrived together leave together, which
                    # saves syscalls without holding anything back.
                    out = [b"data: " + dumps(shaped) + b"\n\n" for chunk in batch
                           if (shaped := shape(chunk)) is not None]
                    if out:
                        await write(out[0] if len(out) == 1 else b"".join(out))
                tail = b"".join(b"data: " + dumps(c) + b"\n\n" for c in shaper.closing_chunks())
            except GatewayError as exc:
                outcome = "failed"
                log.warning("stream failed after headers: %s", exc.message)
                tail = b"data: " + dumps(shaper.error_chunk(exc)) + b"\n\n"
            except (ConnectionError, asyncio.CancelledError):
                raise
            except Exception:
                outcome = "failed"
                log.exception("unexpected error while streaming")
                err = GatewayError("The gateway failed while streaming.")
                tail = b"data: " + dumps(shaper.error_chunk(err)) + b"\n\n"
            await write(tail + DONE)
            await response.write_eof()
        except ConnectionError:
            outcome = "cancelled"  # the client went away; the caller's finally closes upstream
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        return response, outcome

    def _account(self, shaper: StreamShaper, target: Target, outcome: str,
                 started: float) -> None:
        """Once per request: usage totals, metrics and one structured log line."""
        duration_s = time.perf_counter() - started
        usage = shaper.final_usage()
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        totals = self.usage_totals
        totals["requests"] += 1
        totals["prompt_tokens"] += prompt_tokens
        totals["completion_tokens"] += completion_tokens
        if self.metrics is not None:
            self.metrics.in_flight.dec()
            first = shaper.first_content_at
            self.metrics.observe(
                model=shaper.model, provider=target.provider.name, outcome=outcome,
                ttft_s=None if first is None else first - started, duration_s=duration_s,
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            )
        usage_log.info(
            "usage %s",
            orjson.dumps({
                "id": shaper.id,
                "model": shaper.model,
                "provider": target.provider.name,
                "upstream_model": target.upstream_model,
                "outcome": outcome,
                "duration_ms": round(duration_s * 1000, 1),
                "usage": usage,
            }).decode(),
        )
