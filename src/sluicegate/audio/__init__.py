"""Audio: ``POST /v1/audio/transcriptions`` (``transcriptions``) and the local speech model
(``whisper``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .transcriptions import GatewayParts, Transcriptions

__all__ = ["register"]


def register(app: web.Application, gateway: GatewayParts) -> Transcriptions:
    """Add the transcription route. At start-up, with the local speech model installed, load
    it (``local.preload``) or at least assemble its file."""
    from .transcriptions import Transcriptions

    handler = Transcriptions(gateway)
    handler.register(app)

    async def preload(app: web.Application) -> None:
        import asyncio

        if handler.local is None:
            return
        if gateway.config.local.preload:
            await asyncio.to_thread(handler.local.load)
        else:  # the halves joined now (a no-op once done), never during a request
            from .whisper import assemble

            await asyncio.to_thread(assemble)

    app.on_startup.append(preload)
    return handler
