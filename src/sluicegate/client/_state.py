"""The state of one stream, without I/O: ``StreamStats``, ``StreamMetadata`` and
``StreamState``, the per-chunk bookkeeping (stats, usage, choice 0's text, the accumulation for
``final()``, error frames). The stream classes (``stream``) feed it the chunk dicts they read."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..accumulate import Accumulator
from .errors import StreamError
from .types import CompletionUsage

if TYPE_CHECKING:
    from ._source import Source

__all__ = ["Kind", "RateLimits", "StateView", "StreamMetadata", "StreamState", "StreamStats"]

Kind = Literal["chat", "text"]


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A virtual key's limits as the gateway reported them with the response (OpenAI's
    ``x-ratelimit-*`` headers); a field is None when its header was absent. Resets are the
    headers' text (``1s``, ``6m0s``, ``250ms``)."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: str | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: str | None = None

    @classmethod
    def from_headers(cls, headers: Any) -> RateLimits | None:
        """From a case-insensitive header mapping; None when it has no ``x-ratelimit-*``."""
        def num(name: str) -> int | None:
            value = headers.get(name)
            try:
                return int(value) if value is not None else None
            except ValueError:
                return None

        limits = cls(num("x-ratelimit-limit-requests"), num("x-ratelimit-remaining-requests"),
                     headers.get("x-ratelimit-reset-requests"),
                     num("x-ratelimit-limit-tokens"), num("x-ratelimit-remaining-tokens"),
                     headers.get("x-ratelimit-reset-tokens"))
        return None if limits == cls() else limits


@dataclass(slots=True)
class StreamStats:
    """Live statistics of one stream.

    ``ttft_ms``: request start to first content (ms); ``chunks``: chunks received;
    ``characters``: content characters (all choices); ``tokens``: usage.completion_tokens when
    known, else the count of content chunks; ``tokens_per_s``: tokens / (duration − TTFT);
    ``duration_s``: request start to the end (or to now while streaming, s); ``provider`` /
    ``model``: from the gateway's headers, else the chunk's ``model``; ``attempts``: the
    gateway's ``X-Sluicegate-Attempts``; ``finish_reason``: choice 0's.
    """

    ttft_ms: float | None = None
    chunks: int = 0
    characters: int = 0
    tokens: int = 0
    tokens_per_s: float | None = None
    duration_s: float = 0.0
    provider: str | None = None
    model: str | None = None
    attempts: int | None = None
    finish_reason: str | None = None
    rate_limits: RateLimits | None = None


@dataclass(slots=True)
class StreamMetadata:
    """Passed to callbacks. ``request_id``: the chunks' ``id``; ``chunk_index``: 0-based index
    of the current chunk (-1 before any); ``total_tokens``: usage.total_tokens when known,
    else ``stats.tokens``; ``ttft_ms`` in ms."""

    request_id: str | None = None
    model: str | None = None
    provider: str | None = None
    chunk_index: int = -1
    stats: StreamStats = field(default_factory=StreamStats)
    finish_reason: str | None = None
    total_tokens: int | None = None
    ttft_ms: float | None = None


class StreamState:
    """Bookkeeping per chunk dict: stats, usage, choice-0 text, accumulation, error frames."""

    def __init__(self, kind: Kind) -> None:
        self.kind: Kind = kind
        self.stats = StreamStats()
        self.usage: CompletionUsage | None = None
        self.accumulator = Accumulator()
        self.text: list[str] = []  # choice 0's content so far
        self.started: float | None = None
        self.first_content: float | None = None
        self.ended_at: float | None = None
        self.content_chunks = 0
        self.chunk_index = -1
        self.id: str | None = None
        self.created = 0
        self.model: str | None = None

    def opened(self, source: Source, started: float | None) -> None:
        """Record the route of an open source and the request start (perf_counter)."""
        self.started = started if started is not None else time.perf_counter()
        stats = self.stats
        stats.provider = source.provider
        stats.model = source.model
        stats.attempts = source.attempts
        stats.rate_limits = getattr(source, "rate_limits", None)

    def process(self, raw: dict[str, Any]) -> str:
        """Account one chunk dict; returns choice 0's content text ("" if none). Raises
        ``StreamError`` for an error frame."""
        now = time.perf_counter()
        stats = self.stats
        error = raw.get("error")
        if error is not None:
            stats.finish_reason = "error"
            self.finish(now)
            err = error if isinstance(error, dict) else {"message": str(error)}
            raise StreamError(str(err.get("message") or "The stream failed."),
                              partial_text="".join(self.text), error=err,
                              code=err.get("code"), type=err.get("type"))
        self.chunk_index += 1
        stats.chunks += 1
        if self.id is None and raw.get("id"):
            self.id = str(raw["id"])
            self.created = int(raw.get("created") or 0)
        if raw.get("model") and self.model is None:
            self.model = str(raw["model"])
            if stats.model is None:
                stats.model = self.model
        usage = raw.get("usage")
        if usage:
            self.usage = CompletionUsage.model_validate(usage)
        self.accumulator.add(raw)
        chat = self.kind == "chat"
        text0 = ""
        content = False
        for choice in raw.get("choices") or ():
            delta = (choice.get("delta") or {}) if chat else None
            piece = (delta.get("content") if delta is not None else choice.get("text")) or ""
            index = choice.get("index", 0)
            if piece:
                content = True
                stats.characters += len(piece)
                if index == 0:
                    text0 += piece
            elif delta and (delta.get("tool_calls") or delta.get("reasoning_content")
                            or delta.get("refusal")):
                content = True
            if index == 0 and choice.get("finish_reason") is not None:
                stats.finish_reason = choice["finish_reason"]
        if content:
            self.content_chunks += 1
            if self.first_content is None:
                self.first_content = now
        if text0:
            self.text.append(text0)
        self._update(now)
        return text0

    def _update(self, now: float) -> None:
        stats = self.stats
        start = self.started if self.started is not None else now
        stats.duration_s = (self.ended_at or now) - start
        if self.first_content is not None:
            stats.ttft_ms = (self.first_content - start) * 1000.0
        usage = self.usage
        stats.tokens = usage.completion_tokens if usage is not None else self.content_chunks
        if stats.ttft_ms is not None:
            span = stats.duration_s - stats.ttft_ms / 1000.0
            stats.tokens_per_s = stats.tokens / span if span > 0 else None

    def finish(self, now: float | None = None) -> None:
        """Freeze the duration at the end of the stream (clean or not)."""
        if self.ended_at is None:
            self.ended_at = time.perf_counter() if now is None else now
            self._update(self.ended_at)

    def metadata(self) -> StreamMetadata:
        stats = self.stats
        usage = self.usage
        return StreamMetadata(
            request_id=self.id, model=stats.model, provider=stats.provider,
            chunk_index=self.chunk_index, stats=stats, finish_reason=stats.finish_reason,
            total_tokens=usage.total_tokens if usage is not None else stats.tokens,
            ttft_ms=stats.ttft_ms,
        )

    def final(self) -> dict[str, Any]:
        """The completion object built from every chunk seen (all choices, tool calls)."""
        usage = self.usage.model_dump(exclude_defaults=False) if self.usage else None
        return self.accumulator.build(self.kind, self.id or "", self.created,
                                      self.model or "", usage)


class StateView:
    """The read-only properties every stream class (sync and async) shows of its state."""

    _state: StreamState

    @property
    def usage(self) -> CompletionUsage | None:
        """Token usage, once the usage chunk has arrived (None before)."""
        return self._state.usage

    @property
    def stats(self) -> StreamStats:
        """Live ``StreamStats`` (ms, s, tokens, characters)."""
        return self._state.stats

    @property
    def metadata(self) -> StreamMetadata:
        """A ``StreamMetadata`` snapshot, as callbacks receive it."""
        return self._state.metadata()
