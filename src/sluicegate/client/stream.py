"""Streams of typed chunks: ``ChatStream`` / ``CompletionStream`` (sync) here, and
``AsyncChatStream`` / ``AsyncCompletionStream`` (from ``_stream_async``), ``StreamStats`` and
``StreamMetadata`` re-exported.

A stream opens its connection at first use (iteration, ``recv``, ``final``, ``with``). It yields
every chunk, the usage chunk (``choices == []``) included. Errors raised while streaming:
``APIStatusError`` subclasses (a status before the stream), ``APIConnectionError``,
``APITimeoutError`` (``timeout`` / ``stall_timeout``), ``StreamError`` (the mid-stream error
frame, with ``partial_text``), ``StreamClosedError`` (use after ``close()``). Any error, a
``break`` out of a loop, or ``close()`` closes the connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Generic, NoReturn, Self

from ._loop import LoopThread
from ._stream_async import AsyncChatStream, AsyncCompletionStream
from ._stream_base import PENDING, ChunkT, FinalT, Pending, StreamBase
from ._stream_core import Engine, StreamMetadata, StreamStats
from .buffering import FlushPolicy
from .callbacks import call_callback
from .errors import StreamClosedError
from .types import ChatCompletion, ChatCompletionChunk, Completion, CompletionChunk

__all__ = [
    "AsyncChatStream",
    "AsyncCompletionStream",
    "ChatStream",
    "CompletionStream",
    "StreamMetadata",
    "StreamStats",
]


class _SyncStream(StreamBase[ChunkT, FinalT], Generic[ChunkT, FinalT]):
    """The sync stream: the transport runs on the client's private loop thread."""

    def __init__(self, engine: Engine, runner: LoopThread, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self._runner = runner
        self._inflight: concurrent.futures.Future[list[dict[str, Any]] | None] | None = None
        self._task: asyncio.Task[Any] | None = None

    # -- plumbing ------------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> NoReturn:
        if isinstance(exc, concurrent.futures.CancelledError):
            # Closed from another thread while a read was waiting: the user's own doing, so
            # a StreamClosedError for the reader and no on_error.
            self._ended = self._closed = True
            self._close_engine()
            self._finish_progress()
            raise StreamClosedError("The stream was closed.") from None
        self._ended = True
        if isinstance(exc, Exception):
            self._failed = exc
        else:
            self._closed = True
        self._close_engine()
        self._finish_progress()
        if isinstance(exc, Exception):
            for callbacks in self._callbacks:
                if callbacks.on_error is not None:
                    call_callback(callbacks.on_error, exc)
        raise exc

    def _open(self) -> None:
        self._check()
        if self._opened:
            return
        try:
            source = self._runner.run(self._engine.open())
        except BaseException as exc:
            self._fail(exc)
        self._opened_with(source)
        for callbacks in self._callbacks:
            if callbacks.on_start is not None:
                call_callback(callbacks.on_start, self._state.metadata())

    async def _next_batch(self) -> list[dict[str, Any]] | None:
        self._task = asyncio.current_task()
        return await self._engine.next_batch()

    def _pull(self, wait: float | None) -> list[dict[str, Any]] | Pending | None:
        fut = self._inflight
        if fut is None:
            fut = self._inflight = self._runner.submit(self._next_batch())
        try:
            return fut.result(wait)
        except concurrent.futures.TimeoutError:
            if not fut.done():
                return PENDING
            raise
        finally:
            if fut.done():
                self._inflight = None

    def _next(self, wait: float | None = None) -> ChunkT | Pending | None:
        """The next chunk, None at the clean end, PENDING if none came within ``wait`` s."""
        try:
            return self._step(wait)
        except BaseException:
            if not self._ended:  # e.g. a callback raised: the stream is abandoned
                self.close()
            raise

    def _step(self, wait: float | None) -> ChunkT | Pending | None:
        self._open()
        while not self._queue:
            if self._ended:
                return None
            try:
                batch = self._pull(wait)
            except BaseException as exc:
                self._fail(exc)
            if isinstance(batch, Pending):
                return batch
            if batch is None:
                self._ended = True
                self._finish_progress()
                metadata = self._state.metadata()
                for callbacks in self._callbacks:
                    if callbacks.on_end is not None:
                        call_callback(callbacks.on_end, metadata)
                return None
            self._queue.extend(batch)
        try:
            chunk = self._account(self._queue.popleft())
        except BaseException as exc:
            self._fail(exc)
        if self._callbacks:
            metadata = self._state.metadata()
            for callbacks in self._callbacks:
                if callbacks.on_chunk is not None:
                    call_callback(callbacks.on_chunk, chunk, metadata)
        return chunk

    def _next_chunk(self) -> ChunkT | None:
        item = self._next()
        assert not isinstance(item, Pending)
        return item

    def _close_engine(self) -> None:
        if not self._runner.running:
            return
        task = self._task
        engine = self._engine

        async def stop() -> None:
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task])
            await engine.aclose()

        self._inflight = None
        self._runner.run(stop())

    # -- public --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[ChunkT]:
        """Every chunk (typed), the usage chunk included."""
        self._check()
        return self._iterate()

    def _iterate(self) -> Iterator[ChunkT]:
        try:
            while (chunk := self._next_chunk()) is not None:
                yield chunk
        except GeneratorExit:
            self.close()
            raise

    @property
    def text_stream(self) -> Iterator[str]:
        """Content deltas of choice 0 only (str, empty ones skipped)."""
        self._check()
        return self._texts()

    def _texts(self) -> Iterator[str]:
        try:
            while self._next_chunk() is not None:
                if self._last_text:
                    yield self._last_text
        except GeneratorExit:
            self.close()
            raise

    def buffered_text(self) -> Iterator[str]:
        """Choice 0's text in pieces of at least ``flush_chars`` characters or gathered over at
        most ``flush_ms`` ms, whichever comes first; the first piece is never held back."""
        self._check()
        return self._buffered()

    def _buffered(self) -> Iterator[str]:
        policy = FlushPolicy(self._flush_chars, self._flush_ms)
        try:
            while True:
                item = self._next(policy.due_in())
                if item is None:
                    break
                out = policy.flush() if isinstance(item, Pending) else policy.add(self._last_text)
                if out:
                    yield out
            if rest := policy.flush():
                yield rest
        except GeneratorExit:
            self.close()
            raise

    def recv(self) -> ChunkT:
        """The next chunk. Raises ``StopIteration`` at the clean end."""
        self._check()
        chunk = self._next_chunk()
        if chunk is None:
            raise StopIteration
        return chunk

    def final(self) -> FinalT:
        """Read the rest and return the whole completion: every choice (n), tool calls rebuilt
        from their deltas, finish reasons, usage. Raises what the stream raises."""
        if self._final is not None:
            return self._final
        self._check()
        while self._next_chunk() is not None:
            pass
        return self._build_final()

    def close(self) -> None:
        """Close the connection. Idempotent; using the stream afterwards raises
        ``StreamClosedError``."""
        if self._closed:
            return
        self._closed = True
        if not self._ended:
            self._ended = True
            self._close_engine()
            self._finish_progress()

    def __del__(self) -> None:
        # A stream dropped while open (e.g. after a few ``recv()``) releases its connection.
        try:
            if self._opened and not self._ended and self._runner.running:
                self._runner.submit(self._engine.aclose())
        except Exception:  # interpreter shutdown, loop already stopped
            pass

    def __enter__(self) -> Self:
        self._open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ChatStream(_SyncStream[ChatCompletionChunk, ChatCompletion]):
    """A chat completion stream (sync). ``final()`` returns a ``ChatCompletion``."""

    _kind = "chat"
    _chunk_type = ChatCompletionChunk
    _final_type = ChatCompletion


class CompletionStream(_SyncStream[CompletionChunk, Completion]):
    """A text completion stream (sync). ``final()`` returns a ``Completion``."""

    _kind = "text"
    _chunk_type = CompletionChunk
    _final_type = Completion
