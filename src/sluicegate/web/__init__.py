"""The gateway's browser side: CORS, the JavaScript client, the playground, ``/v1/stats``.

``setup_web(app, config, runs)`` (``runs``: the gateway's live requests, ``Gateway.runs``) adds,
in one place:

- CORS (``server.cors``, ``sluicegate.web.cors``);
- ``GET /static/*``: the files of ``static/`` (the ES module ``/static/sluicegate.js`` and the
  playground's script and style sheet);
- ``GET /playground``: the playground page (model picker, chat, Compare, Live);
- ``GET /v1/stats``: in-flight streams and the last minutes' TTFT and tokens/s
  (``sluicegate.web.stats``).

``/playground`` and ``/static/*`` hold no secret and are served without the API key
(``is_public``); every API call the page makes carries the key the user typed in.
"""

from __future__ import annotations

from collections.abc import Set
from pathlib import Path

import orjson
from aiohttp import web

from ..config import GatewayConfig
from ..relay import Run
from .cors import Cors
from .stats import snapshot

__all__ = ["STATIC_DIR", "is_public", "setup_web"]

STATIC_DIR = Path(__file__).parent / "static"

_NO_CACHE = {"Cache-Control": "no-cache"}  # revalidated: a new gateway version shows at once


def is_public(path: str) -> bool:
    """True for the paths served without the API key: the playground and its static files."""
    return path in ("/playground", "/playground/") or path.startswith("/static/")


def setup_web(app: web.Application, config: GatewayConfig, runs: Set[Run]) -> None:
    Cors(config.server.cors, api_key_set=config.server.api_key is not None).install(app)

    async def playground(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "playground.html", headers=_NO_CACHE)

    async def static(request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        path = (STATIC_DIR / name).resolve()
        if "/" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers=_NO_CACHE)

    async def stats(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(snapshot(runs)),
                            content_type="application/json")

    app.router.add_get("/playground", playground)
    app.router.add_get("/playground/", playground)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/v1/stats", stats)
