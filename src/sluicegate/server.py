"""The HTTP server (aiohttp): routes, auth, body limits, SSE framing, disconnect → cancel.

Routes (OpenAI-compatible):

- ``POST /v1/chat/completions`` and ``POST /v1/completions``: ``stream`` true gives SSE,
  false one JSON completion;
- ``POST /api/v1/chat/completions/stream``: the chat endpoint, always streaming;
- ``GET /v1/models``, ``GET /healthz``, ``GET /metrics`` (Prometheus; once per request, never
  per chunk). ``/healthz`` includes ``state``: the state backend's name and whether it answered
  a PING within ``STATE_PING_S``.
- ``GET /playground``, ``GET /static/*`` (no key needed), ``GET /v1/stats``, and CORS:
  ``sluicegate.web``.
- ``GET /v1/chat/completions/{stream_id}/stream`` (resume, ``Last-Event-ID``) and
  ``DELETE /v1/chat/completions/{stream_id}`` (cancel): resumable streams, ``sluicegate.resume``.
- ``POST /v1/messages``, ``POST /v1/messages/count_tokens`` (Anthropic Messages) and
  ``POST /v1/responses`` (OpenAI Responses): other dialects in, ``sluicegate.ingress``; their
  errors take the dialect's shape.
- ``POST /v1/audio/transcriptions`` (multipart; ``stream=true`` gives ``transcript.text.*``
  events): ``sluicegate.audio``.

SSE responses follow docs/wire.md §1-3 and §7: data-only events (``data: <json>\\n\\n``), no BOM, no
empty events, ``data: [DONE]`` last; headers ``Content-Type: text/event-stream``,
``Cache-Control: no-cache``, ``X-Accel-Buffering: no``; every event is written to the socket as
soon as it is produced. A failure after the headers ends the stream with the error frame of
docs/wire.md §2 and ``[DONE]``; any failure before them is a real 4xx/5xx status with an
OpenAI-shaped body, never a 200.

Disconnects: the server runs with ``handler_cancellation=True``, so a client disconnect cancels
the handler at once, and the ``finally`` closes the provider stream (upstream socket closed,
local generation cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from aiohttp import web

from .audio import register as register_audio
from .cache.service import open_cache
from .config import GatewayConfig
from .errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    RouteNotFoundError,
    ShuttingDownError,
)
from .ingress import error_response_for
from .ingress import register as register_ingress
from .keys import ADMISSION, KeyService, open_keys
from .keys.model import SECRET_PREFIX
from .keys.service import INVALID_KEY, KEY
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .redact import register_value
from .relay import Run
from .resume.service import Resumer
from .router import Router
from .schemas import ChatRequest, CompletionRequest, parse_chat_request, parse_completion_request
from .state import StateBackend, StateUnavailable, open_state
from .telemetry import Telemetry
from .web import is_public, setup_web

__all__ = ["Gateway"]

log = logging.getLogger("sluicegate.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATE_PING_S = 1.0
"""``/healthz`` waits this long (s) for the state backend's PING before reporting it not ok."""


def error_response(error: GatewayError, path: str = "") -> web.Response:
    """A JSON response with the error's status, body (in the dialect of ``path``: see
    ``sluicegate.ingress``) and headers."""
    if (dialect := error_response_for(path, error)) is not None:
        return dialect
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
        self.metrics = Metrics() if config.server.metrics else None
        self._api_key = config.server.api_key.encode() if config.server.api_key else None
        register_value(config.server.api_key)
        self.runs: set[Run] = set()  # requests being served
        self.state: StateBackend = open_state(config.state)  # connects on first use
        self.resumer = Resumer(config, self.state, self.metrics, self._tracked, self.router.plan)
        # Virtual keys (sluicegate.keys) need the master key, which creates them.
        self.keys: KeyService | None = open_keys(config) if self._api_key is not None else None
        self.cache = open_cache(config, self.state, self.metrics)  # None: no cache configured
        self._idle: asyncio.Event | None = None  # set when ``runs`` empties (shutdown)
        self.telemetry: Telemetry | None = None  # sluicegate.telemetry, when enabled
        if config.telemetry.enabled:
            from . import telemetry

            self.telemetry = telemetry.enable(config.telemetry)

    # -- application -----------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._errors],
            client_max_size=self.config.server.max_body_bytes,
        )
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/api/v1/chat/completions/stream", self.chat_stream_alias)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/chat/completions/{stream_id}/stream", self.resume_stream)
        app.router.add_delete("/v1/chat/completions/{stream_id}", self.cancel_stream)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/healthz", self.healthz)
        register_ingress(app, self)  # /v1/messages, /v1/responses
        self.audio = register_audio(app, self)  # /v1/audio/transcriptions
        if self.metrics is not None:
            app.router.add_get("/metrics", self.metrics_text)
        if self.keys is not None:
            from .keys.admin import add_admin_routes

            add_admin_routes(app.router, self.keys)
        setup_web(app, self.config, self.runs)  # CORS, /playground, /static/*, /v1/stats
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        if self.config.local.preload:
            await asyncio.to_thread(self.router.preload)
        if self.cache is not None:
            await self.cache.start()

    async def _on_cleanup(self, app: web.Application) -> None:
        try:
            await self.router.aclose()
        finally:
            try:
                if self.keys is not None:
                    await self.keys.aclose()
            finally:
                await self.state.aclose()
                if self.telemetry is not None:
                    from . import telemetry

                    await asyncio.to_thread(telemetry.disable, self.telemetry)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if (self._api_key is not None and request.path != "/healthz"
                    and not is_public(request.path)
                    and (token := self._check_auth(request)) is not None):
                assert self.keys is not None
                request[KEY] = await self.keys.authenticate(token)
            return await handler(request)
        except GatewayError as exc:
            if self.metrics is not None:
                self.metrics.rejected.labels(str(exc.status)).inc()
            response = error_response(exc, request.path)
            if (admission := request.get(ADMISSION)) is not None:
                response.headers.extend(admission.headers)  # x-ratelimit-* on errors too
            return response
        except web.HTTPRequestEntityTooLarge:
            return error_response(PayloadTooLargeError(
                f"The request body exceeds {self.config.server.max_body_bytes} bytes."),
                request.path)
        except web.HTTPNotFound:
            return error_response(RouteNotFoundError(f"No route for {request.path}."),
                                  request.path)
        except web.HTTPMethodNotAllowed as exc:
            response = error_response(MethodNotAllowedError(
                f"{request.method} is not allowed on {request.path}."), request.path)
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
            return response

    def _check_auth(self, request: web.Request) -> str | None:
        """None for the master key; a virtual key's secret (``sk-sg-…``) to look up."""
        assert self._api_key is not None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header and "x-api-key" in request.headers:  # the Anthropic SDK's header
            scheme, token = "bearer", request.headers["x-api-key"]
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("Missing API key: send 'Authorization: Bearer <key>' "
                                      "(or 'x-api-key: <key>').")
        # Header bytes that are not UTF-8 arrive as surrogates: a wrong key, not a crash.
        token = token.strip()
        if hmac.compare_digest(token.encode("utf-8", "surrogateescape"), self._api_key):
            return None
        if self.keys is not None and token.startswith(SECRET_PREFIX):
            return token
        raise AuthenticationError(INVALID_KEY)

    # -- routes ----------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        engines = self.router.engines.items()
        return web.json_response({
            "status": "ok",
            "pid": os.getpid(),  # which worker answered (serve --workers N)
            "local_models_loaded": {name: engine.loaded for name, engine in engines},
            "local_models": {name: engine.describe() for name, engine in engines},
            "state": {"backend": self.state.name, "ok": await self._state_ok()},
        })

    async def _state_ok(self) -> bool:
        try:
            async with asyncio.timeout(STATE_PING_S):
                await self.state.ping()
        except (StateUnavailable, TimeoutError) as exc:
            log.warning("healthz: the %s state backend is not ok: %s", self.state.name,
                        str(exc) or f"no answer within {STATE_PING_S:g} s")
            return False
        return True

    async def metrics_text(self, request: web.Request) -> web.Response:
        assert self.metrics is not None
        # Rendered off the event loop: streams never wait for a scrape.
        return web.Response(body=await asyncio.to_thread(self.metrics.render),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(self, request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps({"object": "list", "data": await self.router.list_models_async()}),
            content_type="application/json",
        )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        req = parse_chat_request(await self._json(request))
        return await self._serve(request, req, stream=req.stream)

    async def chat_stream_alias(self, request: web.Request) -> web.StreamResponse:
        req = parse_chat_request(await self._json(request))
        return await self._serve(request, req, stream=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        req = parse_completion_request(await self._json(request))
        return await self._serve(request, req, stream=req.stream)

    async def resume_stream(self, request: web.Request) -> web.StreamResponse:
        return await self.resumer.resume(request, request.match_info["stream_id"])

    async def cancel_stream(self, request: web.Request) -> web.StreamResponse:
        return await self.resumer.cancel(request, request.match_info["stream_id"])

    async def _json(self, request: web.Request) -> Any:
        limit = self.config.server.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLargeError(f"The request body exceeds {limit} bytes.")
        if request.content.is_eof():
            raw = await request.read()  # the whole body came with the head: no wait
        else:
            # A body trickled in a byte at a time must not hold a handler forever.
            limit_s = self.config.server.header_timeout_s
            try:
                async with asyncio.timeout(limit_s):
                    raw = await request.read()
            except TimeoutError:
                raise RequestTimeoutError(
                    f"The request body did not arrive within {limit_s:g} s.") from None
        if not raw:
            raise InvalidRequestError("The request body is empty; expected a JSON object.")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None

    # -- the streaming path ----------------------------------------------------------------

    async def _serve(self, request: web.Request, req: ChatRequest | CompletionRequest, *,
                     stream: bool) -> web.StreamResponse:
        policy, chain = self.router.plan(req)
        if (key := request.get(KEY)) is not None:  # a virtual key: admission
            assert self.keys is not None
            request[ADMISSION] = await self.keys.admit(key, req, policy, chain)
        if self.cache is not None and (cached := await self.cache.serve(
                request, req, policy, chain, stream=stream, track=self._tracked)) is not None:
            return cached
        if stream and policy.resumable and isinstance(req, ChatRequest):
            return await self.resumer.start(request, req, policy, chain)
        run = Run(request, req, policy, chain, self.metrics)
        with self._tracked(run):
            return await run.serve(stream=stream)

    @contextlib.contextmanager
    def _tracked(self, run: Run) -> Iterator[None]:
        """``run`` counts as live (``shutdown`` waits for it) for the length of the block."""
        self.runs.add(run)
        try:
            yield
        finally:
            self.runs.discard(run)
            if not self.runs and self._idle is not None:
                self._idle.set()

    async def shutdown(self, grace_s: float) -> None:
        """Let live requests finish for up to ``grace_s`` (s), then end the rest: a started
        stream gets the error frame (``code: "shutting_down"``) and ``[DONE]``, a request not
        yet answered a 503. Returns once every request has ended (bounded: 5 s more)."""
        if await self._idle_within(grace_s):
            return
        log.warning("shutting down: ending %d live request(s) after the %s s grace",
                    len(self.runs), grace_s)
        for run in list(self.runs):
            run.abort(ShuttingDownError(
                f"The gateway is shutting down; the request was stopped after the {grace_s:g} s "
                "grace period."))
        await self._idle_within(5.0)

    async def _idle_within(self, timeout_s: float) -> bool:
        """Wait until no request is live, at most ``timeout_s`` (s); True if none is."""
        self._idle = asyncio.Event()
        if self.runs:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._idle.wait()
        return not self.runs
