"""Audio: ``POST /v1/audio/transcriptions`` (``transcriptions``) and the local speech model
(``whisper``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..server import Gateway
    from .transcriptions import Transcriptions

__all__ = ["register"]


def register(app: web.Application, gateway: Gateway) -> Transcriptions:
    """Add the transcription route; load the local speech model at start-up when
    ``local.preload`` is on and it is installed."""
    from .transcriptions import Transcriptions

    handler = Transcriptions(gateway)
    handler.register(app)

    async def preload(app: web.Application) -> None:
        import asyncio

        if handler.local is not None and gateway.config.local.preload:
            await asyncio.to_thread(handler.local.load)

    app.on_startup.append(preload)
    return handler
