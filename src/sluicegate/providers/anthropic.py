"""Anthropic Messages provider (WIRE.md §5). Placeholder until the adapter lands."""

from __future__ import annotations

from ..errors import InvalidRequestError
from ..schemas import ChatRequest
from .base import ChunkStream, Target
from .http import HTTPProvider

__all__ = ["AnthropicProvider"]


class AnthropicProvider(HTTPProvider):
    dialect = "anthropic"

    async def open_chat(self, request: ChatRequest, target: Target) -> ChunkStream:
        raise InvalidRequestError("not implemented yet")
