"""Test helpers: servers on loopback in background threads, and a scripted OpenAI-dialect fake.

The fake upstream speaks the OpenAI chat/completions stream byte for byte (docs/wire.md §2): role
chunk, content chunks, finish chunk per choice, optional usage chunk, ``data: [DONE]``. A script
sets the texts, the gap between chunks, a status error before the stream, an error event or an
abrupt disconnect mid-stream. Every request it receives and every connection the gateway closes
early are recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar

import orjson
from aiohttp import web

from sluicegate.app import start_server
from sluicegate.config import GatewayConfig
from sluicegate.server import Gateway


class ServerThread:
    """Runs ``start()`` (returning an AppRunner and port) in a private event loop thread."""

    def __init__(self, start: Callable[[], Awaitable[tuple[web.AppRunner, int]]]) -> None:
        self._start = start
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._runner, self.port = self.loop.run_until_complete(self._start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    @classmethod
    def serve(cls, build_app: Callable[[], web.Application]) -> ServerThread:
        """Serve the app ``build_app()`` returns on a free loopback port; started."""

        async def boot() -> tuple[web.AppRunner, int]:
            runner = web.AppRunner(build_app(), handler_cancellation=True, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            return runner, int(runner.addresses[0][1])

        return cls(boot).start()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(120)
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop and return its result."""
        done = threading.Event()
        box: list[Any] = []
        self.loop.call_soon_threadsafe(lambda: (box.append(fn()), done.set()))
        done.wait(10)
        return box[0]

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_gateway(config: GatewayConfig) -> tuple[ServerThread, Gateway]:
    """Start a gateway on a free loopback port; returns the thread and the Gateway object."""
    config.server.host = "127.0.0.1"
    config.server.port = 0
    gateway = Gateway(config)
    server = ServerThread(lambda: start_server(config, gateway)).start()
    return server, gateway


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    """One request a fake upstream got: path, headers, JSON body (``empty`` when there was none,
    see ``FakeUpstream.record``), method, query and the peer's port."""

    path: str
    headers: dict[str, str]
    body: Any
    method: str = "POST"
    query: dict[str, str] = field(default_factory=dict)
    peer_port: int = 0


S = TypeVar("S")


class FakeUpstream(Generic[S]):
    """Base of the scripted fake upstreams: serves ``routes()`` on loopback (``base_url`` is the
    server's URL + ``prefix``), holds the ``script`` for the next requests (``new_script()``
    after ``reset()``), and records every request (``received``), every stream the peer left
    before its end (``closed_early``, monotonic s) and every stream sent to its end
    (``completed``)."""

    prefix = "/v1"

    def __init__(self, new_script: Callable[[], S]) -> None:
        self._new_script = new_script
        self.script = new_script()
        self.received: list[Received] = []
        self.closed_early: list[float] = []
        self.completed = 0
        self.server: ServerThread | None = None

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def start(self) -> Self:
        def app() -> web.Application:
            app = web.Application()
            app.add_routes(self.routes())
            return app

        self.server = ServerThread.serve(app)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def reset(self) -> None:
        """A fresh script, no records."""
        self.script = self._new_script()
        self.received.clear()
        self.closed_early.clear()

    def set(self, event: asyncio.Event) -> None:
        """Set ``event`` (a script's ``release``) from another thread, on the server's loop."""
        assert self.server is not None
        self.server.loop.call_soon_threadsafe(event.set)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.url + self.prefix

    async def record(self, request: web.Request, empty: Any = None) -> Received:
        """Read the request's JSON body (``empty`` if it has none) and record the request."""
        raw = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        received = Received(request.path, dict(request.headers),
                            orjson.loads(raw) if raw else empty, request.method,
                            dict(request.query), int(peer[1]) if peer else 0)
        self.received.append(received)
        return received

    @staticmethod
    def error_response(status: int, body: Any, headers: dict[str, str]) -> web.Response:
        """A status error with a JSON body, before any stream."""
        return web.Response(status=status, body=orjson.dumps(body),
                            content_type="application/json", headers=headers)

    @staticmethod
    def abort(request: web.Request) -> None:
        """Drop the connection at once (no end of body)."""
        if request.transport is not None:
            request.transport.abort()

    async def stream(self, request: web.Request,
                     send: Callable[[web.StreamResponse], Awaitable[bool | None]], *,
                     headers: dict[str, str] | None = None,
                     headers_delay_s: float = 0.0) -> web.StreamResponse:
        """Answer ``text/event-stream`` (plus ``headers``), after ``headers_delay_s`` of silence,
        with what ``send(response)`` writes. ``send`` returns False when it dropped the
        connection on purpose (not counted as completed); a peer that leaves while it writes is
        recorded in ``closed_early``."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               **(headers or {})})
        if headers_delay_s:
            await asyncio.sleep(headers_delay_s)  # a model loading, a queue
        await response.prepare(request)
        try:
            finished = await send(response) is not False
        except (ConnectionError, asyncio.CancelledError):
            self.closed_early.append(time.monotonic())
            raise
        if finished:
            self.completed += 1
        return response


@dataclass
class Script:
    """What the fake upstream does with the next requests."""

    texts: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    gap_s: float = 0.0
    status: int = 200
    error_body: dict[str, Any] | None = None
    error_headers: dict[str, str] = field(default_factory=dict)
    send_usage: bool = True
    error_after: int | None = None  # send an error event after this many content chunks
    die_after: int | None = None  # drop the connection after this many content chunks
    finish_reason: str = "stop"
    send_finish: bool = True
    comments: int = 0  # ": OPENROUTER PROCESSING" comment lines before the first chunk
    first_delay_s: float = 0.0  # silence after the headers, before the first chunk
    headers_delay_s: float = 0.0  # silence before the status line and headers
    stall_after: int | None = None  # go silent after this many content chunks...
    stall_s: float = 30.0  # ...for this long
    release: asyncio.Event | None = None  # with stall_after: resume once set (FakeUpstream.set)
    malformed_after: int | None = None  # garbage events after this many content chunks
    malformed_count: int = 1
    raw_chunks: list[dict[str, Any]] | None = None  # sent as is (over id/model/...), then [DONE]


def tool_call_chunks(text: str | None = None, *, call_id: str = "call_1",
                     name: str = "get_weather", pieces: tuple[str, ...] = ('{"city": "Pa', 'ris"}'),
                     usage: tuple[int, int] = (30, 9)) -> list[dict[str, Any]]:
    """``Script.raw_chunks`` for one tool call as OpenAI streams it (docs/wire.md §2): the role
    chunk, ``text`` if given, the call's first fragment ``{index, id, type, function: {name,
    arguments: ""}}``, one fragment per argument piece, ``finish_reason: "tool_calls"``, then
    the usage chunk (prompt, completion tokens)."""

    def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]}

    prompt, completion = usage
    return [
        delta({"role": "assistant", "content": ""}),
        *([delta({"content": text})] if text else []),
        delta({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                               "function": {"name": name, "arguments": ""}}]}),
        *(delta({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
          for piece in pieces),
        delta({}, "tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                  "total_tokens": prompt + completion}},
    ]


class FakeOpenAIUpstream(FakeUpstream[Script]):
    """A scripted OpenAI-dialect server. ``script`` may be replaced between requests."""

    def __init__(self) -> None:
        super().__init__(Script)
        self.queue: list[Script] = []  # scripts for the next requests, before ``script``
        self.sent = 0  # content chunks written, over all requests

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self._handle),
                web.post("/v1/completions", self._handle),
                web.get("/v1/models", self._models)]

    async def _models(self, request: web.Request) -> web.Response:
        await self.record(request, {})
        return web.json_response({"object": "list", "data": [
            {"id": "fake-model-a", "object": "model", "created": 0, "owned_by": "fake"},
            {"id": "fake-model-b", "object": "model", "created": 0, "owned_by": "fake"},
        ]})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = (await self.record(request)).body
        script = self.queue.pop(0) if self.queue else self.script
        if script.status != 200:
            return self.error_response(
                script.status,
                script.error_body or {"error": {"message": "fake failure", "type": "server_error",
                                                "param": None, "code": None}},
                script.error_headers)
        chat = request.path.endswith("/chat/completions")
        return await self.stream(
            request, lambda response: self._stream(request, response, body, script, chat),
            headers_delay_s=script.headers_delay_s)

    @staticmethod
    async def _stall(script: Script) -> None:
        """Silence for ``stall_s``, or until ``release`` is set if sooner."""
        if script.release is None:
            await asyncio.sleep(script.stall_s)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(script.release.wait(), script.stall_s)

    async def _stream(self, request: web.Request, response: web.StreamResponse,
                      body: dict[str, Any], script: Script, chat: bool) -> None:
        base = {"id": "upstream-id-1", "created": 1700000000, "model": body.get("model"),
                "object": "chat.completion.chunk" if chat else "text_completion",
                "system_fingerprint": "fp_fake"}

        async def send(obj: dict[str, Any]) -> None:
            await response.write(b"data: " + orjson.dumps(obj) + b"\n\n")

        def choice(index: int, text: str | None, finish: str | None,
                   role: bool = False) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {}
                if role:
                    delta = {"role": "assistant", "content": ""}
                elif text is not None:
                    delta = {"content": text}
                return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}

        if script.raw_chunks is not None:
            for raw in script.raw_chunks:
                await send({**base, **raw})
            await response.write(b"data: [DONE]\n\n")
            return
        for _ in range(script.comments):
            await response.write(b": OPENROUTER PROCESSING\n\n")
        if script.first_delay_s:
            await asyncio.sleep(script.first_delay_s)
        n = int(body.get("n", 1))
        if chat:
            for i in range(n):
                await send({**base, "choices": [choice(i, None, None, role=True)]})
        for k, text in enumerate(script.texts):
            if script.die_after is not None and k == script.die_after:
                self.abort(request)
                return  # counted as completed, as it always was
            if script.error_after is not None and k == script.error_after:
                await send({**base, "error": {"message": "Provider disconnected",
                                              "type": "server_error", "code": 502},
                            "choices": [choice(0, "", "error")]})
                await response.write(b"data: [DONE]\n\n")
                return
            if script.stall_after is not None and k == script.stall_after:
                await self._stall(script)
            if script.malformed_after is not None and k == script.malformed_after:
                for _ in range(script.malformed_count):
                    await response.write(b'data: {"choices": [{"delta": {"content": "x"\n\n')
            for i in range(n):
                await send({**base, "choices": [choice(i, text, None)]})
            self.sent += 1
            if script.gap_s:
                await asyncio.sleep(script.gap_s)
        if script.send_finish:
            for i in range(n):
                finish = choice(i, None if chat else "", script.finish_reason)
                await send({**base, "choices": [finish]})
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if script.send_usage and wants_usage:
            completion = len(script.texts) * n
            await send({**base, "choices": [], "usage": {"prompt_tokens": 11,
                                                         "completion_tokens": completion,
                                                         "total_tokens": 11 + completion}})
        await response.write(b"data: [DONE]\n\n")
