"""Streams of typed chunks: ``ChatStream`` / ``CompletionStream`` (sync) here,
``AsyncChatStream`` / ``AsyncCompletionStream`` (the implementation, in ``_async_stream``),
``StreamStats`` and ``StreamMetadata`` re-exported.

A sync stream drives its async twin on the client's private loop thread: each method is one
call into it (``iter``, ``next``, ``recv``, ``final``, ``close``), so both behave the same.
Opening, errors and closing are described in ``_async_stream``: the connection opens at first
use; ``APIStatusError`` subclasses, ``APIConnectionError``, ``APITimeoutError``, ``StreamError``
and ``StreamClosedError`` are raised as they are; any error, a ``break``, ``close()`` (also from
another thread: a read waiting in the consuming thread then raises ``StreamClosedError``) or
dropping the stream closes the connection. A resumable stream reconnects on the loop thread,
inside the read that found the connection dropped.

Callbacks of a sync stream run on the thread that consumes it (the one in ``for`` / ``recv`` /
``final`` / ``with``): the loop thread hands each call over and waits for it, so the stream
pauses while its callback runs but the client's other streams go on. An async callback runs
there with ``asyncio.run`` (in a helper thread when that thread already runs a loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import queue
from collections.abc import AsyncGenerator, Coroutine, Iterator
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from ._async_stream import AsyncChatStream, AsyncCompletionStream, ChunkT, FinalT, _AsyncStream
from ._loop import LoopThread
from ._source import Engine
from ._state import StateView, StreamMetadata, StreamStats
from .callbacks import Callback, call_callback
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

T = TypeVar("T")

# A callback to run on the consuming thread: (callback, args, the loop's future for its result).
_Call = tuple[Callback, tuple[Any, ...], asyncio.Future[Any]]

_caller: contextvars.ContextVar[queue.SimpleQueue[_Call | None] | None] = (
    contextvars.ContextVar("sluicegate_stream_caller", default=None))
"""Inside an operation of a sync stream: where the thread waiting for it takes callbacks."""


async def _invoke_on_caller(fn: Callback, *args: Any) -> Any:
    """The sync streams' ``Invoker``: hand ``fn(*args)`` to the consuming thread and wait."""
    calls = _caller.get()
    if calls is None:  # nobody waiting (not expected): keep the loop free anyway
        return await asyncio.to_thread(call_callback, fn, *args)
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    calls.put((fn, args, done))
    return await done


def _settle(done: asyncio.Future[Any], result: Any, error: Exception | None) -> None:
    if done.done():  # the operation was cancelled meanwhile
        return
    if error is None:
        done.set_result(result)
    else:
        done.set_exception(error)


async def _anext(items: AsyncGenerator[T, None]) -> T:
    return await anext(items)


class _SyncStream(StateView, Generic[ChunkT, FinalT]):
    """Runs an ``_AsyncStream`` on the client's ``LoopThread`` (and shows its state: ``usage``,
    ``stats``, ``metadata``)."""

    _async_type: type[_AsyncStream[ChunkT, FinalT]]

    def __init__(self, engine: Engine, runner: LoopThread, **kwargs: Any) -> None:
        self._runner = runner
        self._stream: _AsyncStream[ChunkT, FinalT] = self._async_type(
            engine, invoke=_invoke_on_caller, **kwargs)
        self._state = self._stream._state
        self._op: asyncio.Task[Any] | None = None  # the operation running on the loop

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and return its result, serving its callbacks on this
        thread meanwhile. Raises what it raises; ``StreamClosedError`` if ``close()`` cut it."""
        calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()

        async def operation() -> T:
            _caller.set(calls)
            task = self._op = asyncio.current_task()
            try:
                return await coro
            finally:
                if self._op is task:
                    self._op = None

        pending = operation()
        try:
            loop = self._runner.loop
            future = self._runner.submit(pending)
        except BaseException:  # the client is closed
            pending.close()
            coro.close()
            raise
        future.add_done_callback(lambda _: calls.put(None))
        try:
            while (call := calls.get()) is not None:
                fn, args, done = call
                result, error = None, None
                try:
                    result = call_callback(fn, *args)
                except Exception as exc:
                    error = exc
                loop.call_soon_threadsafe(_settle, done, result, error)
            return future.result()
        except concurrent.futures.CancelledError:
            raise StreamClosedError("The stream was closed.") from None
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt here: stop the operation too
            raise

    def _drive(self, items: AsyncGenerator[T, None]) -> Iterator[T]:
        """``items`` as a sync iterator: one loop call per item; closing it closes ``items``."""
        try:
            while True:
                try:
                    item = self._call(_anext(items))
                except StopAsyncIteration:
                    return
                yield item
        except GeneratorExit:
            if self._runner.running:
                self._call(items.aclose())
            raise

    async def _aclose(self) -> None:
        task = self._op
        if task is not None and not task.done():
            task.cancel()  # a read waiting in another thread
            await asyncio.wait([task])
        await self._stream.aclose()

    # -- public --------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called (or its ``with`` block exited)."""
        return self._stream.closed

    @property
    def stream_id(self) -> str | None:
        """A resumable stream's id (the gateway's ``X-Sluicegate-Stream-Id``), for
        ``chat.resume`` / ``chat.cancel``; None for other streams and before the response (a
        stream from ``chat.resume`` knows it from the start)."""
        return self._stream.stream_id

    @property
    def last_event_id(self) -> str | None:
        """The SSE id of the last event received (``<stream_id>:<seq>`` on a resumable
        stream); None before any and on streams without ids."""
        return self._stream.last_event_id

    def __iter__(self) -> Iterator[ChunkT]:
        """Every chunk (typed), the usage chunk included."""
        self._stream._check()
        return self._drive(self._stream._iterate())

    @property
    def text_stream(self) -> Iterator[str]:
        """Content deltas of choice 0 only (str, empty ones skipped)."""
        self._stream._check()
        return self._drive(self._stream._texts())

    def buffered_text(self) -> Iterator[str]:
        """Choice 0's text in pieces of at least ``flush_chars`` characters or gathered over at
        most ``flush_ms`` ms, whichever comes first; the first piece is never held back."""
        self._stream._check()
        return self._drive(self._stream._buffered())

    def recv(self) -> ChunkT:
        """The next chunk. Raises ``StopIteration`` at the clean end."""
        try:
            return self._call(self._stream.recv())
        except StopAsyncIteration:
            raise StopIteration from None

    def final(self) -> FinalT:
        """Read the rest and return the whole completion: every choice (n), tool calls rebuilt
        from their deltas, finish reasons, usage. Raises what the stream raises."""
        return self._call(self._stream.final())

    def close(self) -> None:
        """Close the connection (from any thread). Idempotent; using the stream afterwards
        raises ``StreamClosedError``."""
        stream = self._stream
        if stream.closed:
            return
        if self._runner.running:
            self._runner.run(self._aclose())
        elif stream._mark_closed():  # the loop is gone, and the connection with it
            stream._finish_progress()

    def __del__(self) -> None:
        # A stream dropped while open (e.g. after a few ``recv()``) releases its connection.
        try:
            stream = self._stream
            if stream._opened and not stream._ended and self._runner.running:
                self._runner.submit(stream.aclose())
        except Exception:  # interpreter shutdown, loop already stopped
            pass

    def __enter__(self) -> Self:
        self._call(self._stream.__aenter__())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ChatStream(_SyncStream[ChatCompletionChunk, ChatCompletion]):
    """A chat completion stream (sync). ``final()`` returns a ``ChatCompletion``."""

    _async_type = AsyncChatStream


class CompletionStream(_SyncStream[CompletionChunk, Completion]):
    """A text completion stream (sync). ``final()`` returns a ``Completion``."""

    _async_type = AsyncCompletionStream
