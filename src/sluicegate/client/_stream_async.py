"""The async stream classes: ``AsyncChatStream`` and ``AsyncCompletionStream``.

Same behaviour as the sync ones (see ``stream``), on the caller's event loop: the connection
opens at first use (``async for``, ``recv``, ``final``, ``async with``); cancelling the
consuming task closes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Generic, NoReturn, Self

from ._stream_base import PENDING, ChunkT, FinalT, Pending, StreamBase
from .buffering import FlushPolicy
from .callbacks import acall_callback
from .types import ChatCompletion, ChatCompletionChunk, Completion, CompletionChunk

__all__ = ["AsyncChatStream", "AsyncCompletionStream"]


class _AsyncStream(StreamBase[ChunkT, FinalT], Generic[ChunkT, FinalT]):
    """The async stream: the transport runs on the running loop."""

    _task: asyncio.Task[list[dict[str, Any]] | None] | None = None

    # -- plumbing ------------------------------------------------------------------------------

    async def _fail(self, exc: BaseException) -> NoReturn:
        self._ended = True
        if isinstance(exc, Exception):
            self._failed = exc
        else:
            self._closed = True  # cancelled: the stream is unusable from now on
        await self._close_engine()
        self._finish_progress()
        if isinstance(exc, Exception):
            for callbacks in self._callbacks:
                if callbacks.on_error is not None:
                    await acall_callback(callbacks.on_error, exc)
        raise exc

    async def _open(self) -> None:
        self._check()
        if self._opened:
            return
        try:
            source = await self._engine.open()
        except BaseException as exc:
            await self._fail(exc)
        self._opened_with(source)
        for callbacks in self._callbacks:
            if callbacks.on_start is not None:
                await acall_callback(callbacks.on_start, self._state.metadata())

    async def _pull(self, wait: float | None) -> list[dict[str, Any]] | Pending | None:
        task = self._task
        if task is None:
            if wait is None:
                return await self._engine.next_batch()
            task = self._task = asyncio.ensure_future(self._engine.next_batch())
        done, _ = await asyncio.wait([task], timeout=wait)
        if not done:
            return PENDING
        self._task = None
        return task.result()

    async def _next(self, wait: float | None = None) -> ChunkT | Pending | None:
        """The next chunk, None at the clean end, PENDING if none came within ``wait`` s."""
        try:
            return await self._step(wait)
        except BaseException:
            if not self._ended:  # e.g. a callback raised: the stream is abandoned
                await self.aclose()
            raise

    async def _step(self, wait: float | None) -> ChunkT | Pending | None:
        await self._open()
        while not self._queue:
            if self._ended:
                return None
            try:
                batch = await self._pull(wait)
            except BaseException as exc:
                await self._fail(exc)
            if isinstance(batch, Pending):
                return batch
            if batch is None:
                self._ended = True
                self._finish_progress()
                metadata = self._state.metadata()
                for callbacks in self._callbacks:
                    if callbacks.on_end is not None:
                        await acall_callback(callbacks.on_end, metadata)
                return None
            self._queue.extend(batch)
        try:
            chunk = self._account(self._queue.popleft())
        except BaseException as exc:
            await self._fail(exc)
        if self._callbacks:
            metadata = self._state.metadata()
            for callbacks in self._callbacks:
                if callbacks.on_chunk is not None:
                    await acall_callback(callbacks.on_chunk, chunk, metadata)
        return chunk

    async def _next_chunk(self) -> ChunkT | None:
        item = await self._next()
        assert not isinstance(item, Pending)
        return item

    async def _close_engine(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        await self._engine.aclose()

    # -- public --------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[ChunkT]:
        """Every chunk (typed), the usage chunk included."""
        self._check()
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ChunkT]:
        try:
            while (chunk := await self._next_chunk()) is not None:
                yield chunk
        except GeneratorExit:
            await self.aclose()
            raise

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """Content deltas of choice 0 only (str, empty ones skipped)."""
        self._check()
        return self._texts()

    async def _texts(self) -> AsyncIterator[str]:
        try:
            while await self._next_chunk() is not None:
                if self._last_text:
                    yield self._last_text
        except GeneratorExit:
            await self.aclose()
            raise

    def buffered_text(self) -> AsyncIterator[str]:
        """Choice 0's text in pieces of at least ``flush_chars`` characters or gathered over at
        most ``flush_ms`` ms, whichever comes first; the first piece is never held back."""
        self._check()
        return self._buffered()

    async def _buffered(self) -> AsyncIterator[str]:
        policy = FlushPolicy(self._flush_chars, self._flush_ms)
        try:
            while True:
                item = await self._next(policy.due_in())
                if item is None:
                    break
                out = policy.flush() if isinstance(item, Pending) else policy.add(self._last_text)
                if out:
                    yield out
            if rest := policy.flush():
                yield rest
        except BaseException:
            await self.aclose()
            raise

    async def recv(self) -> ChunkT:
        """The next chunk. Raises ``StopAsyncIteration`` at the clean end."""
        self._check()
        chunk = await self._next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def final(self) -> FinalT:
        """Read the rest and return the whole completion: every choice (n), tool calls rebuilt
        from their deltas, finish reasons, usage. Raises what the stream raises."""
        if self._final is not None:
            return self._final
        self._check()
        while await self._next_chunk() is not None:
            pass
        return self._build_final()

    async def aclose(self) -> None:
        """Close the connection. Idempotent; using the stream afterwards raises
        ``StreamClosedError``."""
        if self._closed:
            return
        self._closed = True
        if not self._ended:
            self._ended = True
            await self._close_engine()
            self._finish_progress()

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


class AsyncChatStream(_AsyncStream[ChatCompletionChunk, ChatCompletion]):
    """A chat completion stream (async). ``await final()`` returns a ``ChatCompletion``."""

    _kind = "chat"
    _chunk_type = ChatCompletionChunk
    _final_type = ChatCompletion


class AsyncCompletionStream(_AsyncStream[CompletionChunk, Completion]):
    """A text completion stream (async). ``await final()`` returns a ``Completion``."""

    _kind = "text"
    _chunk_type = CompletionChunk
    _final_type = Completion
