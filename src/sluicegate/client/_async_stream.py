"""The stream implementation: ``AsyncChatStream`` / ``AsyncCompletionStream``. The sync
streams (``stream.ChatStream`` / ``CompletionStream``) drive these on the client's loop thread.

A stream opens its connection at first use (iteration, ``recv``, ``final``, ``with``). It yields
every chunk, the usage chunk (``choices == []``) included. Errors raised while streaming:
``APIStatusError`` subclasses (a status before the stream), ``APIConnectionError``,
``APITimeoutError`` (``timeout`` / ``stall_timeout``), ``StreamError`` (the mid-stream error
frame, with ``partial_text``), ``StreamClosedError`` (use after ``close()`` / ``aclose()``).
Any error, a ``break`` out of a loop, ``close()`` or cancelling the consuming task closes the
connection. An error sticks: the stream raises it again on further use. An
``APIConnectionError`` (``APITimeoutError`` included) raised by a stream carries the text
received before it in ``partial_text``, as ``StreamError`` does.

A resumable stream (``chat.stream(..., resumable=True)`` or ``chat.resume``, see ``_resume``)
reconnects by itself when its connection drops and goes on as one stream: every chunk once, in
order, the same stats, callbacks and progress. ``stream_id`` and ``last_event_id`` name it and
the last event received; it raises ``StreamResumeError`` (with ``partial_text``) when the
gateway refuses to resume it.

Callbacks: an async stream calls a sync callback directly and awaits an async one. A sync stream
runs every callback on the thread that consumes it (the one in ``for`` / ``recv`` /
``final``), as plain sync code (an async callback with ``asyncio.run``); the client's loop thread
meanwhile waits for that stream only, so a slow callback never holds up the client's other
streams. A ``progress`` sink is called where the stream runs (the loop thread for sync streams):
it must be thread-safe and quick, as ``ProgressTracker`` and ``RichProgress`` are.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Generic, NoReturn, Self, TypeVar

from ._source import Engine
from ._state import Kind, StateView, StreamState
from .buffering import FlushPolicy
from .callbacks import Callback, StreamCallbacks, acall_callback
from .errors import APIConnectionError, StreamClosedError, StreamResumeError
from .types import ChatCompletion, ChatCompletionChunk, Completion, CompletionChunk

__all__ = ["AsyncChatStream", "AsyncCompletionStream", "ChunkT", "FinalT", "Invoker"]

ChunkT = TypeVar("ChunkT", ChatCompletionChunk, CompletionChunk)
FinalT = TypeVar("FinalT", ChatCompletion, Completion)

Invoker = Callable[..., Awaitable[Any]]
"""``await invoke(callback, *args)``: how a stream runs one callback (``acall_callback`` by
default)."""


class _Pending:
    """Marker: no chunk yet within the wait (``buffered_text`` must flush)."""


_PENDING = _Pending()


class _AsyncStream(StateView, Generic[ChunkT, FinalT]):
    """The stream: reads its ``Engine`` on the running loop, accounts every chunk in a
    ``StreamState``, runs the callbacks (through ``invoke``) and the progress sink."""

    _kind: Kind
    _chunk_type: type[ChunkT]
    _final_type: type[FinalT]

    def __init__(self, engine: Engine, *, callbacks: Sequence[StreamCallbacks] = (),
                 progress: Any = None, flush_chars: int | None = None,
                 flush_ms: float | None = None, max_tokens: int | None = None,
                 invoke: Invoker = acall_callback) -> None:
        self._engine = engine
        self._state = StreamState(self._kind)
        self._callbacks = list(callbacks)
        self._invoke = invoke
        self._progress = progress
        self._flush_chars = flush_chars
        self._flush_ms = flush_ms
        self._queue: deque[dict[str, Any]] = deque()
        self._task: asyncio.Task[list[dict[str, Any]] | None] | None = None
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

    # -- public, read-only (and ``usage``, ``stats``, ``metadata``) --------------------------

    @property
    def closed(self) -> bool:
        """True once ``close()`` / ``aclose()`` was called (or its ``with`` block exited)."""
        return self._closed

    @property
    def stream_id(self) -> str | None:
        """A resumable stream's id (the gateway's ``X-Sluicegate-Stream-Id``), for
        ``chat.resume`` / ``chat.cancel``; None for other streams and before the response (a
        stream from ``chat.resume`` knows it from the start)."""
        return self._engine.stream_id

    @property
    def last_event_id(self) -> str | None:
        """The SSE id of the last event received (``<stream_id>:<seq>`` on a resumable
        stream); None before any and on streams without ids."""
        return self._engine.last_event_id

    # -- plumbing ------------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise StreamClosedError("The stream is closed.")
        if self._failed is not None:
            raise self._failed

    async def _emit(self, event: str, *args: Any) -> None:
        for callbacks in self._callbacks:
            fn: Callback | None = getattr(callbacks, event)
            if fn is not None:
                await self._invoke(fn, *args)

    def _finish_progress(self) -> None:
        self._state.finish()
        if self._progress is not None and self._opened:
            progress, self._progress = self._progress, None
            progress.finish()

    async def _fail(self, exc: BaseException) -> NoReturn:
        self._ended = True
        if isinstance(exc, APIConnectionError | StreamResumeError) and not exc.partial_text:
            exc.partial_text = "".join(self._state.text)
        if isinstance(exc, Exception):
            self._failed = exc
        else:
            self._closed = True  # cancelled: the stream is unusable from now on
        await self._close_engine()
        self._finish_progress()
        if isinstance(exc, Exception):
            await self._emit("on_error", exc)
        raise exc

    async def _open(self) -> None:
        self._check()
        if self._opened:
            return
        try:
            source = await self._engine.open()
        except BaseException as exc:
            await self._fail(exc)
        self._opened = True
        self._state.opened(source, self._engine.started)
        if self._progress is not None:
            self._progress.start()
        await self._emit("on_start", self._state.metadata())

    async def _pull(self, wait: float | None) -> list[dict[str, Any]] | _Pending | None:
        task = self._task
        if task is None:
            if wait is None:
                return await self._engine.next_batch()
            task = self._task = asyncio.ensure_future(self._engine.next_batch())
        done, _ = await asyncio.wait([task], timeout=wait)
        if not done:
            return _PENDING
        self._task = None
        return task.result()

    async def _next(self, wait: float | None = None) -> ChunkT | _Pending | None:
        """The next chunk, None at the clean end, _PENDING if none came within ``wait`` s."""
        try:
            return await self._step(wait)
        except BaseException:
            if not self._ended:  # e.g. a callback raised: the stream is abandoned
                await self.aclose()
            raise

    async def _step(self, wait: float | None) -> ChunkT | _Pending | None:
        await self._open()
        while not self._queue:
            if self._ended:
                return None
            try:
                batch = await self._pull(wait)
            except BaseException as exc:
                await self._fail(exc)
            if isinstance(batch, _Pending):
                return batch
            if batch is None:
                self._ended = True
                self._finish_progress()
                await self._emit("on_end", self._state.metadata())
                return None
            self._queue.extend(batch)
        try:
            raw = self._queue.popleft()
            self._last_text = text = self._state.process(raw)
            chunk = self._chunk_type.model_validate(raw)
        except BaseException as exc:
            await self._fail(exc)
        if text and self._progress is not None:
            self._progress.update(text, 1)
        if self._callbacks:
            await self._emit("on_chunk", chunk, self._state.metadata())
        return chunk

    async def _next_chunk(self) -> ChunkT | None:
        item = await self._next()
        assert not isinstance(item, _Pending)
        return item

    async def _close_engine(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        await self._engine.aclose()

    def _mark_closed(self) -> bool:
        """Flag the stream closed (no I/O); True if its engine and progress still need closing."""
        if self._closed:
            return False
        self._closed = True
        if self._ended:
            return False
        self._ended = True
        return True

    # -- public --------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[ChunkT]:
        """Every chunk (typed), the usage chunk included."""
        self._check()
        return self._iterate()

    async def _iterate(self) -> AsyncGenerator[ChunkT, None]:
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

    async def _texts(self) -> AsyncGenerator[str, None]:
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

    async def _buffered(self) -> AsyncGenerator[str, None]:
        policy = FlushPolicy(self._flush_chars, self._flush_ms)
        try:
            while True:
                item = await self._next(policy.due_in())
                if item is None:
                    break
                out = policy.flush() if isinstance(item, _Pending) else policy.add(self._last_text)
                if out:
                    yield out
            if rest := policy.flush():
                yield rest
        except GeneratorExit:
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
        self._final = self._final_type.model_validate(self._state.final())
        return self._final

    async def aclose(self) -> None:
        """Close the connection. Idempotent; using the stream afterwards raises
        ``StreamClosedError``."""
        if self._mark_closed():
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

