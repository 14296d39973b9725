"""Ingress dialects: the APIs the gateway serves besides Chat Completions.

- ``POST /v1/messages``, ``POST /v1/messages/count_tokens``: Anthropic Messages
  (``anthropic_messages``);
- ``POST /v1/responses``: OpenAI Responses (``responses``; ``previous_response_id`` through
  ``response_store``); ``background: true``, ``GET /v1/responses/{id}`` and
  ``POST /v1/responses/{id}/cancel`` through ``background``.

Each translates its request into the gateway's chat request, serves it with ``Run`` (failover,
keep-alives, limits, usage accounting, disconnect cancellation) and rewrites the chat stream
into its own events on the way out (``common.DialectEgress``). ``register`` adds the routes;
``error_response_for`` renders an error in the dialect of the path it happened on.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..errors import GatewayError
from . import anthropic_messages, background, responses

__all__ = ["error_response_for", "register"]


def register(app: web.Application, gateway: Any) -> None:
    """Add the ingress routes for ``gateway`` (a ``sluicegate.server.Gateway``)."""

    async def messages(request: web.Request) -> web.StreamResponse:
        return await anthropic_messages.messages(gateway, request)

    async def count_tokens(request: web.Request) -> web.StreamResponse:
        return await anthropic_messages.count_tokens(gateway, request)

    async def create_response(request: web.Request) -> web.StreamResponse:
        return await responses.create(gateway, request)

    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_post("/v1/responses", create_response)
    background.register(app, gateway)


def error_response_for(path: str, error: GatewayError) -> web.Response | None:
    """The error in the dialect of ``path`` (Anthropic's body on ``/v1/messages…``); None
    where the gateway's own OpenAI shape applies."""
    if not path.startswith("/v1/messages"):
        return None
    return web.Response(status=error.status,
                        body=orjson.dumps(anthropic_messages.error_body(error)),
                        content_type="application/json", headers=error.headers())
