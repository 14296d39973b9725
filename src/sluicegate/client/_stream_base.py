"""State and helpers shared by the sync and async stream classes."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from ._stream_core import Engine, Kind, Source, StreamMetadata, StreamState, StreamStats
from .callbacks import StreamCallbacks
from .errors import StreamClosedError
from .types import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    CompletionChunk,
    CompletionUsage,
)

__all__ = ["PENDING", "ChunkT", "FinalT", "Pending", "StreamBase"]

ChunkT = TypeVar("ChunkT", ChatCompletionChunk, CompletionChunk)
FinalT = TypeVar("FinalT", ChatCompletion, Completion)


class Pending:
    """Marker: no chunk yet within the wait (``buffered_text`` must flush)."""


PENDING = Pending()


class StreamBase(Generic[ChunkT, FinalT]):
    """Bookkeeping common to every stream class; the transport work is in the subclasses."""

    _kind: Kind
    _chunk_type: type[ChunkT]
    _final_type: type[FinalT]

    def __init__(self, engine: Engine, *, callbacks: Sequence[StreamCallbacks] = (),
                 progress: Any = None, flush_chars: int | None = None,
                 flush_ms: float | None = None, max_tokens: int | None = None) -> None:
        self._engine = engine
        self._state = StreamState(self._kind)
        self._callbacks = list(callbacks)
        self._progress = progress
        self._flush_chars = flush_chars
        self._flush_ms = flush_ms
        self._queue: deque[dict[str, Any]] = deque()
        self._opened = False
        self._ended = False
        self._closed = False
        self._failed: BaseException | None = None
        self._final: FinalT | None = None
        self._last_text = ""
        if progress is not None and max_tokens is not None:
            set_default = getattr(progress, "set_default_expected", None)
            if callable(set_default):
                set_default(max_tokens)

    # -- public, read-only -------------------------------------------------------------------

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

    @property
    def closed(self) -> bool:
        """True once ``close()`` / ``aclose()`` was called (or its ``with`` block exited)."""
        return self._closed

    # -- helpers for the subclasses ------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise StreamClosedError("The stream is closed.")
        if self._failed is not None:
            raise self._failed

    def _opened_with(self, source: Source) -> None:
        self._opened = True
        self._state.opened(source, self._engine.started)
        if self._progress is not None:
            self._progress.start()

    def _account(self, raw: dict[str, Any]) -> ChunkT:
        """Process one chunk dict (raises ``StreamError`` for an error frame)."""
        self._last_text = text = self._state.process(raw)
        chunk = self._chunk_type.model_validate(raw)
        if text and self._progress is not None:
            self._progress.update(text, 1)
        return chunk

    def _finish_progress(self) -> None:
        self._state.finish()
        if self._progress is not None and self._opened:
            progress, self._progress = self._progress, None
            progress.finish()

    def _build_final(self) -> FinalT:
        if self._final is None:
            self._final = self._final_type.model_validate(self._state.final())
        return self._final
