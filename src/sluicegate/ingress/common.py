"""What the ingress dialects share: a response that rewrites the gateway's OpenAI chat stream
into another dialect's events as ``Run`` writes it, and running a translated request.

``Run`` (``sluicegate.relay``) writes OpenAI SSE frames (docs/wire.md §2): ``data: <chunk>``,
``: keep-alive`` comments, the mid-stream error frame and ``data: [DONE]``. A ``DialectSink``
stands in for the client's ``StreamResponse`` (``Run(..., sink=...)``), decodes each frame and
hands it to its dialect's hooks, which return the bytes the client gets instead. Failover,
keep-alives, stall and total limits, usage accounting and disconnect cancellation stay
``Run``'s.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_request import BaseRequest

from ..keys.service import ADMISSION, KEY
from ..policy import Policy
from ..relay import SSE_HEADERS, Chain, Run
from ..schemas import ChatRequest

__all__ = ["DialectSink", "named_event", "run_request"]


def named_event(name: str, payload: dict[str, Any]) -> bytes:
    """One SSE event with an ``event:`` name: ``event: <name>\\ndata: <json>\\n\\n``."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class DialectSink(web.StreamResponse):
    """The client's response; ``write`` translates ``Run``'s OpenAI frames on the way.

    Hooks: ``on_chunk(chunk)`` for each chunk (the error frame included: it has a top-level
    ``error``), ``on_keepalive()`` for a keep-alive comment, ``on_done()`` for ``[DONE]``; each
    returns the bytes to send (may be empty).
    """

    def __init__(self) -> None:
        super().__init__(headers=dict(SSE_HEADERS))
        self.run: Run | None = None
        self._buffer = b""
        self._done = False
        self._ending_run = False
        self.max_buffered_bytes: int | None = None

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        writer = await super().prepare(request)
        if self.max_buffered_bytes is not None and request.transport is not None:
            request.transport.set_write_buffer_limits(high=self.max_buffered_bytes)
        return writer

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        out = self.translate(bytes(data))
        if self._done and not self._ending_run:
            self._ending_run = True
            await self.ending()
        if out:
            await super().write(out)

    async def write_eof(self, data: bytes | bytearray | memoryview = b"") -> None:
        out = self.translate(bytes(data)) if data else b""
        if not self._done:
            self._done = True
            out += self.on_done()
        if not self._ending_run:
            self._ending_run = True
            await self.ending()
        if out:
            await super().write(out)
        await super().write_eof()

    async def ending(self) -> None:
        """Runs once the stream's end was translated, before its last events are sent."""

    def translate(self, data: bytes) -> bytes:
        """The dialect's bytes for ``data`` (whole frames; a partial one waits for the rest)."""
        buffer = self._buffer + data
        *frames, self._buffer = buffer.split(b"\n\n")
        out: list[bytes] = []
        for frame in frames:
            if not frame:
                continue
            if frame.startswith(b":"):
                out.append(self.on_keepalive())
            elif frame.startswith(b"data: "):
                payload = frame.split(b"\n", 1)[0][6:]
                if payload == b"[DONE]":
                    if not self._done:
                        self._done = True
                        out.append(self.on_done())
                else:
                    out.append(self.on_chunk(orjson.loads(payload)))
            # id: lines and anything else: none are written for these endpoints
        return b"".join(out)

    def on_chunk(self, chunk: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def on_keepalive(self) -> bytes:
        raise NotImplementedError

    def on_done(self) -> bytes:
        raise NotImplementedError

    def estimated_prompt_tokens(self) -> int:
        """The prompt's tokens as the gateway estimates them before the upstream says."""
        if self.run is None:
            return 0
        return int(self.run.shaper.final_usage().get("prompt_tokens") or 0)


async def run_request(gateway: Any, request: web.Request, req: ChatRequest, policy: Policy,
                      chain: Chain, sink: DialectSink | None) -> tuple[Run, web.StreamResponse]:
    """Serve ``req`` with ``Run``: streamed into ``sink``, or whole (``sink`` None). Raises
    ``GatewayError`` for a failure before anything was sent."""
    if (key := request.get(KEY)) is not None and gateway.keys is not None:
        # A virtual key: the same admission (limits, budget, allowed models) as chat.
        request[ADMISSION] = await gateway.keys.admit(key, req, policy, chain)
    run = Run(request, req, policy, chain, gateway.metrics, sink=sink)
    if sink is not None:
        sink.run = run
        sink.max_buffered_bytes = policy.max_buffered_bytes
    with gateway._tracked(run):
        response = await run.serve(stream=sink is not None)
    if sink is not None and run.outcome == "cancelled" and request.transport is not None:
        # A client cut off for not reading (``Run`` only aborts its own responses): nothing
        # more, the end of the stream included, can reach it.
        request.transport.abort()
    return run, response


def route_headers(response: web.StreamResponse) -> dict[str, str]:
    """The gateway's own headers of a whole answer (route, cache, rate limits), for the same
    answer in another dialect."""
    return {k: v for k, v in response.headers.items()
            if k.startswith("X-Sluicegate-") or k.lower().startswith("x-ratelimit-")}
