"""One request from open to accounting: failover, keep-alives, the relay, continuation.

Streaming (OpenAI dialect, docs/wire.md §2):

1. ``open_first_content`` tries the chain (retries, fallbacks, first-token timeout). Meanwhile,
   every ``keepalive_s`` s without a token, a ``: keep-alive`` comment is sent (the response's
   headers go out with the first one), so proxies keep slow starts open; never an empty event.
2. Once content exists, the headers go out (if no keep-alive sent them) with
   ``X-Sluicegate-Provider``, ``X-Sluicegate-Model`` and ``X-Sluicegate-Attempts``, then every
   batch as it is read: one write per upstream read.
3. After the first token, a failure (upstream error, stall, total timeout) ends the stream with
   the error frame (top-level ``error``, ``finish_reason: "error"``) and ``data: [DONE]``; with
   the deployment's ``continuation`` on, the next deployment of the chain is asked to continue
   instead (the same messages plus the partial assistant text), and the stream goes on.
4. A client that stops reading is cut off once a write has been blocked for ``stall`` s.
   Meanwhile nothing more is read from the upstream, and the gateway holds at most
   ``max_buffered_bytes`` (the transport's high-water mark) + 64 KiB (what aiohttp writes
   before it drains) + one upstream read (≤ 384 KiB: aiohttp pauses the socket past 128 KiB,
   and the read that crosses that line brings up to 256 KiB) for that client.

The chunks are rendered for the client by the run's ``Egress`` (``sluicegate.egress``): Chat
Completions SSE inline on the hot path, or another dialect's events (``sluicegate.ingress``).

Whatever the ending (completed, failed, cancelled, timed out), ``finish`` closes every upstream
stream and records usage once: the upstream's own, else counted exactly by the provider, else
estimated (marked ``"estimated": true``); a continued stream counts both attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from . import telemetry
from .accounting import Accounted, account
from .accumulate import Accumulator
from .chunks import Chunk
from .egress import CHAT, Egress
from .errors import (
    GatewayError,
    UpstreamError,
    UpstreamTimeoutError,
    bad_shape,
    explain_midstream,
)
from .failover import Opened, open_first_content, opener
from .keys.service import ADMISSION, Admission
from .metrics import Metrics
from .policy import Policy
from .providers.base import ChunkStream, Target, first_dialect
from .schemas import ChatRequest, CompletionRequest, parse_chat_request
from .shaping import StreamShaper, shaper_for
from .watchdog import Watchdog

__all__ = ["SSE_HEADERS", "Recorder", "Run", "frame_chunk"]

log = logging.getLogger("sluicegate.server")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

Chain = list[Target | GatewayError]

class Recorder(Protocol):
    """Keeps what a run sends, for the stream cache (``sluicegate.cache.service.Recorder``)."""

    headers: dict[str, str]  # added to the response's route headers

    async def relay(self, run: Run, opened: Opened, response: web.StreamResponse,
                    watch: Watchdog) -> None:
        """The streaming loop of ``_relay``, recording."""

    def tee(self, add: Callable[[Chunk], None]) -> Callable[[Chunk], None]:
        """``add``, also recording (non-stream requests)."""

    def finish(self, run: Run) -> None:
        """The run ended (accounted); called once."""


_CANCEL_CODES = frozenset({"stream_cancelled", "no_reader"})
"""Abort codes that end a run as ``cancelled`` (a resumable stream stopped on purpose)."""


def frame_chunk(chunk: Chunk) -> bytes:
    """One chunk as an SSE event: ``data: <json>\\n\\n``."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class Run:
    """The state of one request. ``serve(stream=...)`` returns the response; the run counts
    itself in ``metrics`` (in flight while it serves) and accounts its usage once at the end
    (``sluicegate.accounting``)."""

    def __init__(self, request: web.Request, req: ChatRequest | CompletionRequest,
                 policy: Policy, chain: Chain, metrics: Metrics | None, *,
                 sink: web.StreamResponse | None = None,
                 shaper: StreamShaper | None = None, egress: Egress = CHAT) -> None:
        """``sink``: a stream's writes go there instead of to ``request``'s client (a
        resumable stream's event log, ``sluicegate.resume``); ``shaper``: one already under
        way (a stream continued on another instance); ``egress``: renders the stream's chunks
        in the client's dialect (``sluicegate.egress``; Chat Completions SSE by default)."""
        self.metrics = metrics
        self.sink = sink
        self.egress = egress
        # A virtual key's reservation (sluicegate.keys): its headers, settled after accounting.
        self.admission: Admission | None = request.get(ADMISSION)
        self.usage_extra: dict[str, Any] = {}  # more fields for the usage log line
        self.recorder: Recorder | None = None  # the stream cache's, on a miss
        self.request = request
        self.req = req
        self.policy = policy
        self.chain = chain
        self.chat = isinstance(req, ChatRequest)
        self.shaper = shaper or shaper_for(req, first_dialect(chain))
        self.started = time.perf_counter()
        self.outcome = "failed"
        self.target: Target | None = None
        self.attempts = 0
        self.streams: list[ChunkStream] = []
        self.response: web.StreamResponse | None = None
        self._task: asyncio.Task[object] | None = None
        self._abort: GatewayError | None = None
        loop = asyncio.get_running_loop()
        total = policy.timeouts.total
        self.deadline = None if total is None else loop.time() + total
        # OpenTelemetry (sluicegate.telemetry): None when off, the only cost then.
        tel = telemetry.active
        self.span = None if tel is None else tel.start(request, req, self.chat)
        if policy.task is not None:
            self.usage_extra["task"] = policy.task.task

    # -- serving ---------------------------------------------------------------------------

    async def serve(self, *, stream: bool) -> web.StreamResponse:
        if self.metrics is not None:
            self.metrics.in_flight.inc()
        self._task = asyncio.current_task()
        try:
            if stream:
                return await self._stream()
            return await self._complete()
        except GatewayError as exc:
            if self.span is not None:
                self.span.failure = exc
            raise
        except asyncio.CancelledError:
            task = self._task
            if self._abort is not None and task is not None and task.uncancel() == 0:
                return await self._aborted(self._abort)
            self.outcome = "cancelled"  # the client disconnected
            raise
        finally:
            await self._finish()

    def abort(self, error: GatewayError) -> None:
        """End this request now with ``error`` (e.g. the gateway shutting down): a stream that
        started gets the error frame and ``[DONE]``, anything else the error's status."""
        if self._abort is None and self._task is not None and not self._task.done():
            self._abort = error
            self._task.cancel()

    async def _aborted(self, error: GatewayError) -> web.StreamResponse:
        response = self.response
        if response is None or not response.prepared:
            raise error  # nothing sent yet: a real status
        await self._end_with_error(response, error)
        if error.code in _CANCEL_CODES:
            self.outcome = "cancelled"  # stopped on purpose, not a failure
        return response

    async def _open(self, chain: Chain, req: ChatRequest | CompletionRequest) -> Opened:
        try:
            async with asyncio.timeout_at(self.deadline):
                open_fn = opener(req, self.policy)
                if self.span is not None:
                    open_fn = self.span.wrap(open_fn)  # a child span per attempt
                opened = await open_first_content(open_fn, chain, self.policy)
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"The request did not finish within {self.policy.timeouts.total} s.",
                code="total_timeout") from None
        self.streams.append(opened.stream)
        self.attempts += opened.attempts
        self.target = opened.target
        return opened

    def _route_headers(self) -> dict[str, str]:
        assert self.target is not None
        headers = {"X-Sluicegate-Provider": self.target.provider.name,
                   "X-Sluicegate-Model": self.target.upstream_model,
                   "X-Sluicegate-Attempts": str(self.attempts)}
        if self.policy.task is not None:
            headers.update(self.policy.task.headers())
        if self.recorder is not None:
            headers.update(self.recorder.headers)
        return headers

    async def _keepalive(self, response: web.StreamResponse) -> None:
        while True:
            if not response.prepared:
                await response.prepare(self.request)
            if data := self.egress.keepalive():
                await response.write(data)
            await asyncio.sleep(self.policy.keepalive_s)

    async def _stream(self) -> web.StreamResponse:
        response = self.response = self.sink or web.StreamResponse(headers=SSE_HEADERS)
        if self.admission is not None:
            response.headers.update(self.admission.headers)
        # A timer, not a task, until a keep-alive is due: most streams start well before it,
        # and a task per request would cost a loop turn on the way to the first token.
        keepalive: list[asyncio.Task[None]] = []
        timer = asyncio.get_running_loop().call_later(
            self.policy.keepalive_s,
            lambda: keepalive.append(asyncio.create_task(self._keepalive(response))))
        try:
            opened = await self._open(self.chain, self.req)
        except GatewayError as exc:
            if not response.prepared:
                raise  # nothing sent yet: a real status
            await self._end_with_error(response, exc)
            return response
        finally:
            timer.cancel()
            for task in keepalive:
                task.cancel()
                await asyncio.wait([task])  # our own cancellation still propagates
        if not response.prepared:
            response.headers.update(self._route_headers())
            await response.prepare(self.request)
        transport = self.request.transport if self.sink is None else None
        if transport is not None:
            transport.set_write_buffer_limits(high=self.policy.max_buffered_bytes)
        try:
            await self._relay(opened, response, None)
            egress = self.egress
            tail = egress.chunks(self.shaper.closing_chunks()) + egress.done()
            await egress.ending()
            await response.write(tail)
            await response.write_eof()
            self.outcome = "completed"
        except GatewayError as exc:
            await self._end_with_error(response, exc)
        except _ClientGone:
            self.outcome = "cancelled"
            if self.sink is None and self.request.transport is not None:
                self.request.transport.abort()  # nothing more can reach a client that stopped
        except ConnectionError:
            self.outcome = "cancelled"  # the client went away mid-write
        return response

    async def _end_with_error(self, response: web.StreamResponse, exc: GatewayError) -> None:
        """The error frame and ``[DONE]``. After content was delivered, the message says what
        happened in words (``explain_midstream``), and a client that asked for usage gets the
        usage chunk (``"estimated": true`` where it is) just before the error frame."""
        self.outcome = "failed"
        if self.span is not None:
            self.span.failure = exc
        self._explain(exc)
        log.warning("stream failed after headers: %s%s", exc.message, _detail(exc))
        out = self.error_bytes(exc)
        await self.egress.ending()
        with contextlib.suppress(ConnectionError):
            await response.write(out)
            await response.write_eof()

    def error_bytes(self, exc: GatewayError) -> bytes:
        """The end of a stream that failed with ``exc``, rendered by the egress: the usage
        chunk (if the client asked for usage and content was sent), the error chunk, the
        stream's end."""
        chunks: list[Chunk] = []
        if self.shaper.started and self.shaper.include_usage:
            chunks.append(self.shaper.usage_chunk())
        chunks.append(self.shaper.error_chunk(exc))
        return self.egress.chunks(chunks) + self.egress.done()

    def _explain(self, exc: GatewayError) -> None:
        """Reword an upstream failure after the first token (provider, tokens delivered);
        anything else, or a failure before content, keeps its message."""
        if not (self.shaper.started and isinstance(exc, UpstreamError)):
            return
        self._settle_usage()
        tokens = int(self.shaper.final_usage().get("completion_tokens") or 0)
        timeouts = self.policy.timeouts
        limit = timeouts.stall if exc.code == "stall_timeout" else timeouts.total
        name = self.target.provider.name if self.target is not None else "unknown"
        explain_midstream(exc, name, tokens, limit)

    async def _complete(self) -> web.Response:
        opened = await self._open(self.chain, self.req)
        accumulator = Accumulator()
        try:
            await self._relay(opened, None, accumulator)
            self.shaper.include_usage = False
            self.shaper.closing_chunks()  # raises if the upstream ended early
        except GatewayError as exc:
            self._explain(exc)
            log.warning("completion failed after the first token: %s%s", exc.message,
                        _detail(exc))
            raise
        self.outcome = "completed"
        headers = self._route_headers()
        if self.admission is not None:
            headers.update(self.admission.headers)
        return web.Response(body=orjson.dumps(accumulator.result(self.shaper)),
                            content_type="application/json", headers=headers)

    async def _relay(self, opened: Opened, response: web.StreamResponse | None,
                     accumulator: Accumulator | None) -> None:
        """Batches to the client (or the accumulator) until the end, continuing on the next
        deployment when allowed. Raises ``GatewayError`` for a failure after the first token,
        ``_ClientGone`` for a client that stopped reading."""
        shape = self.shaper.shape
        dumps = orjson.dumps
        watch = Watchdog(self.policy.timeouts.stall)
        # Chat Completions inline (the hot path); another dialect through its egress.
        render = None if self.egress is CHAT else self.egress.chunks

        def frames(batch: list[Chunk]) -> bytes:
            if render is not None:
                return render([s for c in batch if (s := shape(c)) is not None])
            return b"".join([b"data: " + dumps(s) + b"\n\n" for c in batch
                             if (s := shape(c)) is not None])

        while True:
            try:
                async with asyncio.timeout_at(self.deadline) as timeout:
                    watch.arm(timeout)
                    try:
                        if accumulator is not None:
                            await self._accumulate(opened, accumulator, watch)
                        elif self.recorder is not None:  # the same loop, recording
                            assert response is not None
                            await self.recorder.relay(self, opened, response, watch)
                        else:
                            assert response is not None
                            write = response.write
                            # Everything read up to the first token leaves in one write.
                            if out := b"".join([frames(batch) for batch in opened.pending]):
                                await write(out)
                            if not opened.ended:
                                # The hot loop: one parse per event (in the provider), one
                                # serialise per event, one write per upstream read.
                                async for batch in opened.iterator:
                                    watch.reads += 1
                                    if render is not None:
                                        if out := frames(batch):
                                            watch.writing = True
                                            await write(out)
                                            watch.writing = False
                                        continue
                                    out_list = [b"data: " + dumps(s) + b"\n\n" for c in batch
                                                if (s := shape(c)) is not None]
                                    if out_list:
                                        watch.writing = True
                                        await write(out_list[0] if len(out_list) == 1
                                                    else b"".join(out_list))
                                        watch.writing = False
                    finally:
                        watch.disarm()
                return
            except TimeoutError:
                if watch.reason == "client":
                    log.warning("client stopped reading for %s s with %d bytes buffered; "
                                "stream cancelled", self.policy.timeouts.stall,
                                self._buffered())
                    raise _ClientGone() from None
                stalled = watch.reason == "stall"
                failure: GatewayError = UpstreamTimeoutError(
                    f"No data from the upstream for {self.policy.timeouts.stall} s."
                    if stalled
                    else f"The request did not finish within {self.policy.timeouts.total} s.",
                    code="stall_timeout" if stalled else "total_timeout",
                    reason="stall" if stalled else "total")
            except GatewayError as exc:
                failure = exc
            except (KeyError, TypeError, AttributeError) as exc:
                # A chunk of the wrong shape (no delta, a list index, a string delta, more
                # nesting than JSON output allows): shaping it failed. No per-chunk checks on
                # the hot path; the stream ends with the error frame instead of being cut.
                failure = bad_shape(exc)
            next_opened = await self._continuation(opened, failure)
            if next_opened is None:
                raise failure
            opened = next_opened

    async def _accumulate(self, opened: Opened, accumulator: Accumulator,
                          watch: Watchdog) -> None:
        shape = self.shaper.shape
        add = accumulator.add if self.recorder is None else self.recorder.tee(accumulator.add)
        for batch in opened.pending:
            for chunk in batch:
                if (shaped := shape(chunk)) is not None:
                    add(shaped)
        if opened.ended:
            return
        async for batch in opened.iterator:
            watch.reads += 1
            for chunk in batch:
                if (shaped := shape(chunk)) is not None:
                    add(shaped)

    def _buffered(self) -> int:
        transport = self.request.transport if self.sink is None else None
        return transport.get_write_buffer_size() if transport is not None else 0

    async def _continuation(self, failed: Opened, failure: GatewayError) -> Opened | None:
        """The next deployment, continuing the partial answer; None when not allowed."""
        shaper = self.shaper
        if (not self.policy.continuation or not isinstance(self.req, ChatRequest)
                or self.req.n != 1
                or (self.deadline is not None and asyncio.get_running_loop().time()
                >= self.deadline)):
            return None
        rest = self.chain[self.chain.index(failed.target) + 1:]
        if not any(isinstance(t, Target) for t in rest):
            return None
        log.warning("continuing on the next deployment after: %s", failure.message)
        shaper.carry_usage(failed.stream.partial_usage())
        await failed.stream.aclose()
        raw = dict(self.req.raw)
        raw["messages"] = [*raw["messages"],
                           {"role": "assistant", "content": "".join(shaper.pieces)}]
        raw.pop("models", None)
        try:
            return await self._open(rest, parse_chat_request(raw))
        except GatewayError as exc:
            log.warning("continuation failed: %s", exc.message)
            return None

    # -- accounting ------------------------------------------------------------------------

    async def _close_streams(self, streams: list[ChunkStream]) -> None:
        for stream in streams:
            await stream.aclose()

    async def _finish(self) -> None:
        # Closing may wait (draining a finished body, ≤ 0.5 s, so its connection is reused) and
        # the client may disconnect meanwhile, cancelling this task: the closing goes on
        # shielded, and accounting happens whatever the ending.
        try:
            # Most streams close at once (the body already ended): no task, no loop turn.
            if waiting := [s for s in self.streams if not s.close_now()]:
                await asyncio.shield(self._close_streams(waiting))
        finally:
            self._settle_usage()
            record = self._accounted(time.perf_counter() - self.started)
            account(record, self.metrics)
            if self.span is not None:
                self.span.finish(record, self.target, self.shaper.finished, self.shaper.id,
                                 self.policy.task.task if self.policy.task else None)
            if self.admission is not None:
                self.admission.settle(record, self.target)
            if self.recorder is not None:
                self.recorder.finish(self)

    def _settle_usage(self) -> None:
        """Without the upstream's usage, take what the provider counted exactly, if it can."""
        if self.shaper.usage is None and self.streams:
            self.shaper.usage = self.streams[-1].partial_usage()

    def _accounted(self, duration_s: float) -> Accounted:
        shaper = self.shaper
        target = self.target
        if target is None:  # failed before any attempt opened: charge the first target
            target = next((t for t in self.chain if isinstance(t, Target)), None)
        first_at = shaper.first_content_at
        return Accounted(
            id=shaper.id, model=shaper.model,
            deployment=(target.deployment.name if target is not None
                        and target.deployment is not None else "none"),
            provider=target.provider.name if target is not None else "none",
            upstream_model=target.upstream_model if target is not None else "",
            outcome=self.outcome, attempts=self.attempts, duration_s=duration_s,
            ttft_s=None if first_at is None else first_at - self.started,
            malformed_events=sum(stream.malformed for stream in self.streams),
            usage=shaper.final_usage(),
            extra=self.usage_extra or None,
        )


def _detail(exc: GatewayError) -> str:
    """The technical cause for a log line (never sent to the client)."""
    detail = getattr(exc, "detail", None)
    return f" ({detail})" if detail else ""


class _ClientGone(Exception):
    """The client stopped reading; the stream was cut off."""

