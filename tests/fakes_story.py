"""A fake OpenAI upstream that knows one answer and continues it, and a TCP proxy that cuts.

``StoryUpstream`` streams ``words`` (one content chunk each, ``gap_s`` apart, then the finish
chunk and, when asked, usage). A request whose last message is a partial assistant answer (a
continuation) gets the words after that text, so a continued stream adds up to the whole
answer exactly once.

``CuttingProxy`` forwards loopback TCP connections to a rotation of backends (connection i to
``backends[i % len]``) and can drop the first connection after it relayed ``cut_after`` SSE
events, as a network that fails mid-stream would.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
from aiohttp import web

from .fakes import FakeUpstream


class StoryUpstream(FakeUpstream[None]):
    def __init__(self, words: list[str], gap_s: float = 0.0) -> None:
        super().__init__(lambda: None)
        self.words = words
        self.gap_s = gap_s
        self.continued: list[str] = []  # the partial texts continuation requests carried

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self._handle)]

    def rest(self, partial: str) -> list[str]:
        text = ""
        for i, word in enumerate(self.words):
            if text == partial:
                return self.words[i:]
            text += word
        assert text == partial, f"not a prefix of the answer: {partial[-40:]!r}"
        return []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = (await self.record(request)).body
        last = body["messages"][-1]
        words = self.words
        if last["role"] == "assistant":
            self.continued.append(last["content"])
            words = self.rest(last["content"])
        return await self.stream(request, lambda r: self._send(r, body, words))

    async def _send(self, response: web.StreamResponse, body: dict[str, Any],
                    words: list[str]) -> None:
        base = {"id": "up-1", "object": "chat.completion.chunk", "created": 1700000000,
                "model": body["model"]}

        async def send(obj: dict[str, Any]) -> None:
            await response.write(b"data: " + orjson.dumps({**base, **obj}) + b"\n\n")

        await send({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "finish_reason": None}]})
        for word in words:
            await send({"choices": [{"index": 0, "delta": {"content": word},
                                     "finish_reason": None}]})
            if self.gap_s:
                await asyncio.sleep(self.gap_s)
        await send({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({"choices": [], "usage": {"prompt_tokens": 7,
                                                 "completion_tokens": len(words),
                                                 "total_tokens": 7 + len(words)}})
        await response.write(b"data: [DONE]\n\n")


class CuttingProxy:
    """Loopback TCP proxy in its own thread; ``connections`` logs (backend port, first line)."""

    def __init__(self, backends: list[int], cut_after: int | None = None) -> None:
        self.backends = backends
        self.cut_after = cut_after
        self.connections: list[tuple[int, bytes]] = []
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)

    def _main(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def boot() -> None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        self.loop.run_until_complete(boot())
        ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(self.connections)
        backend = self.backends[number % len(self.backends)]
        self.connections.append((backend, b""))
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend)
        cut = self.cut_after if number == 0 else None

        async def upward() -> None:
            first = True
            while data := await reader.read(65536):
                if first:
                    self.connections[number] = (backend, data.split(b"\r\n", 1)[0])
                    first = False
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downward() -> None:
            events = 0
            while data := await up_reader.read(65536):
                if cut is not None and events + data.count(b"\n\n") >= cut:
                    end = -2
                    for _ in range(cut - events):  # forward up to the cut-th event's end
                        end = data.index(b"\n\n", end + 2)
                    writer.write(data[:end + 2])
                    await writer.drain()
                    writer.transport.abort()
                    up_writer.transport.abort()
                    return
                if cut is not None:
                    events += data.count(b"\n\n")
                writer.write(data)
                await writer.drain()
            writer.close()

        tasks = [asyncio.ensure_future(upward()), asyncio.ensure_future(downward())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            up_writer.transport.abort()

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
