"""One test body for ``Client`` and ``AsyncClient`` (the ``api`` fixture runs it once each), and
``MockUpstream``: scripted HTTP answers through ``httpx.MockTransport`` (no thread, no port)."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from sluicegate.client import AsyncClient, Client

from .fakes import Received, Script


async def _await(value: Awaitable[Any]) -> Any:
    return await value


async def _collect(items: AsyncIterable[Any], limit: int | None, out: list[Any]) -> list[Any]:
    async for item in items:
        out.append(item)
        if limit is not None and len(out) == limit:
            break  # abandoned as a user's ``break`` abandons it
    return out


async def _timed(items: AsyncIterable[Any]) -> list[tuple[float, Any]]:
    return [(time.monotonic(), item) async for item in items]


class Api:
    """``Client`` (sync) or ``AsyncClient`` (async, on this test's own event loop) behind the
    same calls: ``run(x)`` is ``x``, or ``x`` awaited when it is awaitable."""

    def __init__(self, asynchronous: bool) -> None:
        self.asynchronous = asynchronous
        self.Client: type[Client] | type[AsyncClient] = AsyncClient if asynchronous else Client
        self.StopIteration: type[Exception] = (StopAsyncIteration if asynchronous
                                               else StopIteration)
        self._runner = asyncio.Runner() if asynchronous else None

    def run(self, value: Any) -> Any:
        if inspect.isawaitable(value):
            assert self._runner is not None
            return self._runner.run(_await(value))
        return value

    def list(self, items: Any, limit: int | None = None, into: list[Any] | None = None
             ) -> list[Any]:
        """Every item of a sync or async iterable (the first ``limit`` ones, then ``break``),
        appended to ``into`` (a new list by default) as they come."""
        out: list[Any] = [] if into is None else into
        if isinstance(items, AsyncIterable):
            return self.run(_collect(items, limit, out))  # type: ignore[no-any-return]
        for item in items:
            out.append(item)
            if limit is not None and len(out) == limit:
                break
        return out

    def timed(self, items: Any) -> list[tuple[float, Any]]:
        """Every item of a sync or async iterable, with the ``time.monotonic()`` it came at."""
        if isinstance(items, AsyncIterable):
            return self.run(_timed(items))  # type: ignore[no-any-return]
        return [(time.monotonic(), item) for item in items]

    @contextmanager
    def open(self, manager: Any) -> Iterator[Any]:
        """``with`` / ``async with`` ``manager``."""
        if not self.asynchronous:
            with manager as value:
                yield value
            return
        value = self.run(manager.__aenter__())
        try:
            yield value
        finally:
            self.run(manager.__aexit__(None, None, None))

    def close(self, closable: Any) -> None:
        self.run(closable.aclose() if self.asynchronous else closable.close())

    def http_client(self, mock: MockUpstream) -> httpx.Client | httpx.AsyncClient:
        transport = httpx.MockTransport(mock.handle)
        return (httpx.AsyncClient(transport=transport) if self.asynchronous
                else httpx.Client(transport=transport))

    def wait_until(self, predicate: Callable[[], object], timeout_s: float = 5.0) -> bool:
        """Poll ``predicate`` every 20 ms (letting the event loop run, e.g. to close an
        abandoned async generator) until it is truthy or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            if self._runner is not None:
                self._runner.run(asyncio.sleep(0.02))
            else:
                time.sleep(0.02)
        return True

    def shutdown(self) -> None:
        if self._runner is not None:
            self._runner.close()


class _Events(httpx.SyncByteStream, httpx.AsyncByteStream):
    """An SSE body; ``die_after`` content events drops it, ``gap_s`` paces the contents."""

    def __init__(self, owner: MockUpstream, events: list[bytes | None], gap_s: float) -> None:
        self._owner = owner
        self._events = events
        self._gap_s = gap_s
        self._done = False

    def _next(self, index: int) -> bytes:
        event = self._events[index]
        if event is None:
            raise httpx.ReadError("The mock upstream dropped the connection.")
        if index == len(self._events) - 1:
            self._done = True
        return event

    def __iter__(self) -> Iterator[bytes]:
        for index in range(len(self._events)):
            if index and self._gap_s:
                time.sleep(self._gap_s)
            yield self._next(index)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index in range(len(self._events)):
            if index and self._gap_s:
                await asyncio.sleep(self._gap_s)
            yield self._next(index)

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._owner.closed_early += 1

    async def aclose(self) -> None:
        self.close()


class MockUpstream:
    """A scripted OpenAI-compatible server for a client's ``http_client``: the subset of
    ``Script`` a client-logic test needs (texts, n, status and error body / headers,
    ``error_after``, ``die_after``, ``gap_s``, ``raw_chunks``, usage). Records what it
    received and counts streams the client closed before their end."""

    base_url = "http://mock.test/v1"

    def __init__(self) -> None:
        self.script = Script()
        self.queue: list[Script] = []
        self.received: list[Received] = []
        self.closed_early = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        script = self.queue.pop(0) if self.queue else self.script
        self.received.append(Received(request.url.path, dict(request.headers), body))
        if script.status != 200:
            error = script.error_body or {"error": {"message": "fake failure",
                                                    "type": "server_error"}}
            return httpx.Response(script.status, json=error, headers=script.error_headers)
        events = self._events(body, script, request.url.path.endswith("/chat/completions"))
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=_Events(self, events, script.gap_s))

    def _events(self, body: dict[str, Any], script: Script, chat: bool) -> list[bytes | None]:
        base = {"id": "upstream-id-1", "created": 1700000000, "model": body.get("model"),
                "object": "chat.completion.chunk" if chat else "text_completion"}

        def event(obj: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps({**base, **obj}).encode() + b"\n\n"

        def choice(index: int, text: str | None, finish: str | None) -> dict[str, Any]:
            if not chat:
                return {"index": index, "text": text or "", "finish_reason": finish}
            delta = {"content": text} if text is not None else {}
            return {"index": index, "delta": delta, "finish_reason": finish}

        if script.raw_chunks is not None:
            return [*map(event, script.raw_chunks), b"data: [DONE]\n\n"]
        n = int(body.get("n", 1))
        out: list[bytes | None] = []
        if chat:
            out += [event({"choices": [{"index": i, "delta": {"role": "assistant",
                                                              "content": ""},
                                        "finish_reason": None}]}) for i in range(n)]
        for k, text in enumerate(script.texts):
            if k == script.die_after:
                return [*out, None]
            if k == script.error_after:
                return [*out, event({"error": {"message": "Provider disconnected",
                                               "type": "server_error", "code": 502},
                                     "choices": [choice(0, "", "error")]}), b"data: [DONE]\n\n"]
            out += [event({"choices": [choice(i, text, None)]}) for i in range(n)]
        out += [event({"choices": [choice(i, None, script.finish_reason)]}) for i in range(n)]
        if script.send_usage and (body.get("stream_options") or {}).get("include_usage"):
            tokens = len(script.texts) * n
            out.append(event({"choices": [], "usage": {"prompt_tokens": 11,
                                                       "completion_tokens": tokens,
                                                       "total_tokens": 11 + tokens}}))
        return [*out, b"data: [DONE]\n\n"]
