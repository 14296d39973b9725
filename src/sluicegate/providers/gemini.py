"""Gemini provider (WIRE.md §6). Placeholder until the adapter lands."""

from __future__ import annotations

from ..errors import InvalidRequestError
from ..schemas import ChatRequest
from .base import ChunkStream, Target
from .http import HTTPProvider

__all__ = ["GeminiProvider"]


class GeminiProvider(HTTPProvider):
    dialect = "gemini"

    async def open_chat(self, request: ChatRequest, target: Target) -> ChunkStream:
        raise InvalidRequestError("not implemented yet")
