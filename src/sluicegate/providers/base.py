"""The provider interface: one dialect adapter plus one endpoint.

A provider turns a validated request into a ``ChunkStream`` of OpenAI-dialect chunks
(``chat.completion.chunk`` for chat, ``text_completion`` for text; see ``sluicegate.chunks``).

``open_chat`` / ``open_text`` do everything that can fail before the first byte is sent (queueing,
connecting, reading the upstream status) and raise ``GatewayError`` subclasses for it. Iterating
the stream yields batches of chunks (``list[Chunk]``: the chunks that became available together,
e.g. from one upstream read, so the server can write them in one syscall without adding latency);
a failure after that raises ``UpstreamError``. ``aclose()`` must release
everything (close the upstream connection, stop local generation) and is safe to call twice;
the server calls it on every exit path, including client disconnect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from ..chunks import Chunk
from ..schemas import ChatRequest, CompletionRequest

__all__ = ["ChunkStream", "Provider", "Target"]


class ChunkStream:
    """An async iterator of chunk batches that owns a resource, released by ``aclose()``.

    ``usage_source`` is ``"upstream"``, ``"tokenizer"`` (counted by the model's own tokenizer),
    or ``None`` when the provider cannot report usage and the gateway must estimate it.
    """

    usage_source: str | None = None

    def __aiter__(self) -> AsyncIterator[list[Chunk]]:
        return self._iterate()

    def _iterate(self) -> AsyncIterator[list[Chunk]]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the upstream connection or local generation. Idempotent."""

    def partial_usage(self) -> dict[str, Any] | None:
        """Usage counted so far when the stream ended without its usage chunk (cancelled or
        failed), if the provider can count it exactly; None lets the gateway estimate it."""
        return None

    async def __aenter__(self) -> ChunkStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved request target: the client-facing name and the provider's own model name."""

    requested: str
    upstream_model: str
    provider: Provider


class Provider(Protocol):
    """One dialect adapter bound to one endpoint (base URL and key, or a local engine)."""

    name: str

    async def open_chat(self, request: ChatRequest, target: Target) -> ChunkStream: ...

    async def open_text(self, request: CompletionRequest, target: Target) -> ChunkStream: ...

    async def aclose(self) -> None:
        """Release pooled connections or engines at gateway shutdown."""
        ...
