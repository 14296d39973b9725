"""Cross-origin access for browsers (CORS, **Fetch** §3.2), configured by ``server.cors``.

Two hooks, both outside the routes:

- a middleware, first in the chain, answers every preflight (``OPTIONS`` with ``Origin`` and
  ``Access-Control-Request-Method``) on any path before authentication runs: browsers never send
  credentials on a preflight. An allowed origin gets 204 with the allowed methods, the requested
  headers and ``Access-Control-Max-Age``; any other origin a 403 with no CORS header;
- an ``on_response_prepare`` signal adds ``Access-Control-Allow-Origin`` (and the exposed headers,
  credentials, ``Vary: Origin``) to every response to an allowed origin, just before its headers
  are sent: JSON answers, error answers from any middleware, and SSE streams alike. It runs once
  per response, never per event.

The default (``origins: null``) allows pages served from loopback (``localhost``,
``127.0.0.1``, ``[::1]``, any port, http or https): local development works, and no page of
another site the developer visits can drive a gateway that holds provider keys, whether or not an
API key is set. The API key travels in ``Authorization`` (never a cookie), so credentials stay
off by default. ``"*"`` allows every origin: sensible for a gateway with ``api_key`` set (a page
must then know the key), and logged as a warning without one.

Why not ``aiohttp-cors``: it registers preflights as ``OPTIONS`` routes, which run behind the
application's middlewares (the API-key check answers a preflight 401) and exist only for the
routes it was told about (an unknown path's 404 gets no CORS header).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from ..config import CorsSettings

__all__ = ["EXPOSED", "Cors"]

log = logging.getLogger("sluicegate.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOOPBACK = re.compile(r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?", re.ASCII)

EXPOSED = ("X-Sluicegate-Provider", "X-Sluicegate-Model", "X-Sluicegate-Attempts",
           "X-Sluicegate-Stream-Id", "Retry-After")
"""Always exposed to pages; any other ``X-Sluicegate-*`` or rate-limit header a response carries
(``X-RateLimit-*``, ``RateLimit-*``) is exposed too."""

_EXPOSE_PREFIXES = ("x-sluicegate-", "x-ratelimit-", "ratelimit")
METHODS = "GET, POST, DELETE, OPTIONS"


class Cors:
    """``server.cors`` applied to an aiohttp application (``install``)."""

    def __init__(self, settings: CorsSettings, *, api_key_set: bool) -> None:
        self.settings = settings
        origins = settings.origins
        self.any = origins == "*"
        self.exact = frozenset(o.rstrip("/") for o in origins) if isinstance(origins, list) else (
            frozenset())
        self.loopback = origins is None
        self.max_age = str(settings.max_age_s)
        if self.any and not api_key_set:
            log.warning("server.cors.origins is \"*\" and no api_key is set: any web page a "
                        "visitor opens can use this gateway")

    def install(self, app: web.Application) -> None:
        app.middlewares.insert(0, self.preflight)
        app.on_response_prepare.append(self.decorate)

    def allowed(self, origin: str) -> bool:
        if self.any:
            return True
        if self.loopback:
            return LOOPBACK.fullmatch(origin) is not None
        return origin in self.exact

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        origin = request.headers.get("Origin")
        if origin is None or not self.allowed(origin):
            return web.Response(status=403, content_type="application/json", body=orjson.dumps(
                {"error": {"message": f"The origin {origin!r} is not allowed (server.cors).",
                           "type": "permission_error", "param": None,
                           "code": "origin_not_allowed"}}))
        headers = {"Access-Control-Allow-Methods": METHODS,
                   "Access-Control-Max-Age": self.max_age}
        if requested := request.headers.get("Access-Control-Request-Headers"):
            headers["Access-Control-Allow-Headers"] = requested
        return web.Response(status=204, headers=headers)  # ``decorate`` adds the origin

    async def decorate(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None or not self.allowed(origin):
            return
        headers = response.headers
        if self.any and not self.settings.credentials:
            headers["Access-Control-Allow-Origin"] = "*"
        else:
            headers["Access-Control-Allow-Origin"] = origin
            headers.add("Vary", "Origin")
        if self.settings.credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        if request.method != "OPTIONS":
            extra = [name for name in headers
                     if name.lower().startswith(_EXPOSE_PREFIXES) and name not in EXPOSED]
            headers["Access-Control-Expose-Headers"] = ", ".join([*EXPOSED, *extra])
