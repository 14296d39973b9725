"""Many chat streams at once, with bounded concurrency (behind ``client.chat.stream_many`` /
``run_many`` and their async twins).

A request is a ``ChatRequest`` or a dict of ``chat.stream()`` keyword arguments. At most
``concurrency`` streams are open at a time; requests start in input order. The first error of any
request (``APIStatusError``, ``APIConnectionError``, ``StreamError``, ...) is raised to the caller
and every other stream is closed. Stopping early (``break``, ``close()`` / ``aclose()`` of the
iterator, cancelling the consuming task) closes every open stream and stops every worker thread
or task before returning. ``concurrency`` below 1 raises ``ValueError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from .builder import ChatRequest
from .types import ChatCompletion, ChatCompletionChunk

if TYPE_CHECKING:
    from .stream import AsyncChatStream, ChatStream


class _Chat(Protocol):
    def stream(self, *args: Any, **kwargs: Any) -> ChatStream: ...


class _AsyncChat(Protocol):
    def stream(self, *args: Any, **kwargs: Any) -> AsyncChatStream: ...


class Client(Protocol):
    """What a batch uses of a ``Client``: ``chat.stream`` (a protocol, so this module needs no
    import of ``client``)."""

    @property
    def chat(self) -> _Chat: ...


class AsyncClient(Protocol):
    """What a batch uses of an ``AsyncClient``: ``chat.stream``."""

    @property
    def chat(self) -> _AsyncChat: ...

__all__ = ["BatchRequest", "arun_many", "astream_many", "run_many", "stream_many"]

BatchRequest: TypeAlias = ChatRequest | Mapping[str, Any]

# What workers report: a chunk, a finished request (with its completion in "final" mode), an error.
_Kind = Literal["chunk", "done", "error"]
_Item: TypeAlias = tuple[_Kind, int, Any]

_QUEUE_PER_STREAM = 64  # chunks buffered per concurrent stream before producers wait
_PUT_POLL_S = 0.05  # how often a waiting producer thread checks for a stop
_JOIN_S = 10.0  # longest wait for one worker thread to stop, s


def _check(requests: Iterable[BatchRequest], concurrency: int) -> list[BatchRequest]:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer of at least 1, got {concurrency!r}")
    items = list(requests)
    for index, request in enumerate(items):
        if not isinstance(request, ChatRequest | Mapping):
            raise TypeError(f"request {index} must be a ChatRequest or a dict of stream() "
                            f"arguments, not {type(request).__name__}")
    return items


def _open(client: Client, request: BatchRequest) -> ChatStream:
    if isinstance(request, ChatRequest):
        return client.chat.stream(request)
    return client.chat.stream(**request)


def _aopen(aclient: AsyncClient, request: BatchRequest) -> AsyncChatStream:
    if isinstance(request, ChatRequest):
        return aclient.chat.stream(request)
    return aclient.chat.stream(**request)


class _Threads:
    """Worker threads taking requests in order, each running one stream at a time and reporting
    to a bounded queue; ``stop()`` closes the open streams and joins the threads."""

    def __init__(self, client: Client, requests: list[BatchRequest], concurrency: int,
                 final: bool) -> None:
        self._client = client
        self._requests = requests
        self._final = final
        workers = min(concurrency, len(requests))
        self.results: queue.Queue[_Item] = queue.Queue(maxsize=_QUEUE_PER_STREAM * workers)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._next = itertools.count()
        self._open: dict[int, ChatStream] = {}
        self._remaining = len(requests)
        self._threads = [threading.Thread(target=self._work, name=f"sluicegate-batch-{n}",
                                          daemon=True) for n in range(workers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _put(self, item: _Item) -> bool:
        while not self._stopping.is_set():
            try:
                self.results.put(item, timeout=_PUT_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _take(self) -> int | None:
        with self._lock:
            index = next(self._next)
        return index if index < len(self._requests) and not self._stopping.is_set() else None

    def _work(self) -> None:
        while (index := self._take()) is not None:
            try:
                self._run(index)
            except BaseException as exc:
                self._put(("error", index, exc))
                return

    def _run(self, index: int) -> None:
        stream = _open(self._client, self._requests[index])
        registered = False
        try:
            for chunk in stream:
                if not registered:
                    # Closable from the consumer's thread only once open: a close racing the
                    # open could leave the connection behind. Until then the worker checks
                    # ``_stopping`` itself, after the open.
                    with self._lock:
                        if self._stopping.is_set():
                            return
                        self._open[index] = stream
                        registered = True
                if not self._final and not self._put(("chunk", index, chunk)):
                    return
                if self._stopping.is_set():
                    return
            self._put(("done", index, stream.final() if self._final else None))
        finally:
            with self._lock:
                self._open.pop(index, None)
            stream.close()

    def __iter__(self) -> Iterator[_Item]:
        return self

    def __next__(self) -> _Item:
        """The next report until every request is done; raises the first error."""
        if self._remaining == 0:
            raise StopIteration
        kind, index, payload = self.results.get()
        if kind == "error":
            raise payload
        if kind == "done":
            self._remaining -= 1
        return kind, index, payload

    def stop(self) -> None:
        """Stop taking requests, close every open stream, wait for the threads to end."""
        self._stopping.set()
        with self._lock:
            streams = list(self._open.values())
        for stream in streams:
            with contextlib.suppress(Exception):  # its worker may be closing it at the same time
                stream.close()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(_JOIN_S)


def stream_many(client: Client, requests: Iterable[BatchRequest],
                concurrency: int = 4) -> Iterator[tuple[int, ChatCompletionChunk]]:
    """Yield ``(request_index, chunk)`` as chunks arrive from up to ``concurrency`` streams at
    once (worker threads). Chunks of one request keep their order; requests interleave.

    Raises ``ValueError`` (concurrency < 1), ``TypeError`` (a request of another type), or the
    first request's error. Closing the iterator early closes all streams and joins the threads.
    """
    items = _check(requests, concurrency)
    if not items:
        return
    threads = _Threads(client, items, concurrency, final=False)
    threads.start()
    try:
        for kind, index, payload in threads:
            if kind == "chunk":
                yield index, payload
    finally:
        threads.stop()


def run_many(client: Client, requests: Iterable[BatchRequest],
             concurrency: int = 4) -> list[ChatCompletion]:
    """Run every request (``stream().final()``) with up to ``concurrency`` at once; returns the
    ``ChatCompletion`` list in input order. Raises like ``stream_many``."""
    items = _check(requests, concurrency)
    if not items:
        return []
    results: list[ChatCompletion | None] = [None] * len(items)
    threads = _Threads(client, items, concurrency, final=True)
    threads.start()
    try:
        for kind, index, payload in threads:
            if kind == "done":
                results[index] = payload
    finally:
        threads.stop()
    return [r for r in results if r is not None]


class _Tasks:
    """One task per request, gated by a semaphore of ``concurrency``, reporting to a bounded
    ``asyncio.Queue``; ``stop()`` cancels them (closing their streams) and awaits them."""

    def __init__(self, aclient: AsyncClient, requests: list[BatchRequest], concurrency: int,
                 final: bool) -> None:
        self._aclient = aclient
        self._requests = requests
        self._final = final
        self._gate = asyncio.Semaphore(concurrency)
        self.results: asyncio.Queue[_Item] = asyncio.Queue(
            maxsize=_QUEUE_PER_STREAM * min(concurrency, len(requests)))
        self._tasks: list[asyncio.Task[None]] = []
        self._remaining = len(requests)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(i), name=f"sluicegate-batch-{i}")
                       for i in range(len(self._requests))]

    async def _run(self, index: int) -> None:
        try:
            async with self._gate:
                stream = _aopen(self._aclient, self._requests[index])
                async with stream:
                    if self._final:
                        completion = await stream.final()
                        await self.results.put(("done", index, completion))
                        return
                    async for chunk in stream:
                        await self.results.put(("chunk", index, chunk))
                await self.results.put(("done", index, None))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.results.put(("error", index, exc))

    async def next(self) -> _Item | None:
        """The next report, None once every request is done; raises the first error."""
        if self._remaining == 0:
            return None
        kind, index, payload = await self.results.get()
        if kind == "error":
            raise payload
        if kind == "done":
            self._remaining -= 1
        return kind, index, payload

    async def stop(self) -> None:
        """Cancel every unfinished task (their ``async with`` closes the stream) and await all."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def astream_many(aclient: AsyncClient, requests: Iterable[BatchRequest],
                       concurrency: int = 4) -> AsyncIterator[tuple[int, ChatCompletionChunk]]:
    """Async ``stream_many``: yields ``(request_index, chunk)`` from up to ``concurrency`` streams
    (tasks). Close it early with ``aclose()`` (e.g. ``contextlib.aclosing``) or by cancelling the
    consuming task: every stream is closed and every task awaited. Raises like ``stream_many``.
    """
    items = _check(requests, concurrency)
    if not items:
        return
    tasks = _Tasks(aclient, items, concurrency, final=False)
    tasks.start()
    try:
        while (item := await tasks.next()) is not None:
            kind, index, payload = item
            if kind == "chunk":
                yield index, payload
    finally:
        await tasks.stop()


async def arun_many(aclient: AsyncClient, requests: Iterable[BatchRequest],
                    concurrency: int = 4) -> list[ChatCompletion]:
    """Async ``run_many``: the ``ChatCompletion`` list in input order. The first error cancels
    the other requests and is raised; cancelling the caller cancels them all."""
    items = _check(requests, concurrency)
    if not items:
        return []
    results: list[ChatCompletion | None] = [None] * len(items)
    tasks = _Tasks(aclient, items, concurrency, final=True)
    tasks.start()
    try:
        while (item := await tasks.next()) is not None:
            kind, index, payload = item
            if kind == "done":
                results[index] = payload
    finally:
        await tasks.stop()
    return [r for r in results if r is not None]
