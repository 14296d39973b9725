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

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from ..chunks import Chunk
from ..config import DeploymentConfig
from ..errors import UpstreamError
from ..redact import scrub
from ..schemas import ChatRequest, CompletionRequest

__all__ = ["ChunkStream", "Provider", "Target", "first_dialect"]

log = logging.getLogger("sluicegate.providers")


class ChunkStream:
    """An async iterator of chunk batches that owns a resource, released by ``aclose()``.

    ``usage_source`` is ``"upstream"``, ``"tokenizer"`` (counted by the model's own tokenizer),
    or ``None`` when the provider cannot report usage and the gateway must estimate it.
    """

    usage_source: str | None = None
    malformed = 0  # upstream events skipped as malformed (not JSON, or not the dialect's shape)
    max_malformed = 8  # in a row; one more fails the stream (set per request by the gateway)
    max_event_bytes: int | None = 1024 * 1024  # one SSE event's limit (set per request too)
    _malformed_run = 0

    def skip_malformed(self, payload: bytes, why: str) -> bool:
        """Count and log one malformed upstream event (first 200 bytes). True once more than
        ``max_malformed`` arrived in a row: the caller then yields what it holds and raises
        ``malformed_error()``."""
        self.malformed += 1
        self._malformed_run += 1
        log.warning("skipped a malformed upstream event (%s): %s", why,
                    scrub(repr(payload[:200])))
        return self._malformed_run > self.max_malformed

    def malformed_error(self) -> UpstreamError:
        """The error that ends a stream after too many malformed events in a row."""
        return UpstreamError(
            f"The upstream sent {self._malformed_run} malformed events in a row.",
            code="malformed_stream", reason="malformed")

    def well_formed(self) -> None:
        """Reset the run of malformed events (call after a good one)."""
        self._malformed_run = 0

    def __aiter__(self) -> AsyncIterator[list[Chunk]]:
        return self._iterate()

    def _iterate(self) -> AsyncIterator[list[Chunk]]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the upstream connection or local generation. Idempotent."""

    def close_now(self) -> bool:
        """Release everything without waiting, if that is possible now; True if done (then
        ``aclose`` has nothing left to do). False (the default) leaves it to ``aclose``."""
        return False

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
    """A resolved request target: the client-facing name, the provider's own model name, and
    the deployment's settings (fallbacks, retries, timeouts) when it has any."""

    requested: str
    upstream_model: str
    provider: Provider
    deployment: DeploymentConfig | None = field(default=None, compare=False)


class Provider(Protocol):
    """One dialect adapter bound to one endpoint (base URL and key, or a local engine)."""

    name: str

    async def open_chat(self, request: ChatRequest, target: Target, *,
                        connect_s: float | None = 10.0) -> ChunkStream:
        """Open a chat stream; ``connect_s`` (s; None: no limit) bounds the TCP connect and
        TLS handshake of a network upstream (not the wait for its answer)."""
        ...

    async def open_text(self, request: CompletionRequest, target: Target, *,
                        connect_s: float | None = 10.0) -> ChunkStream: ...

    async def aclose(self) -> None:
        """Release pooled connections or engines at gateway shutdown."""
        ...


def first_dialect(chain: Sequence[object]) -> str | None:
    """The provider dialect (``"openai"``, ``"anthropic"``, ...) of a chain's first ``Target``
    (entries may be errors of fallbacks that did not resolve); None if none has one."""
    first = next((t for t in chain if isinstance(t, Target)), None)
    dialect = getattr(first.provider, "dialect", None) if first is not None else None
    return dialect if isinstance(dialect, str) else None
