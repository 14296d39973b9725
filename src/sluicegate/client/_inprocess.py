"""The in-process transport: the gateway's own router, failover and shaping, with no HTTP hop.

A request goes the way ``sluicegate.relay`` takes it: ``Router.plan`` gives the policy and
chain, ``open_first_content`` opens the first attempt that produces content (retries and
fallbacks of the gateway's ``routing`` / deployment settings), every chunk is shaped by a
``StreamShaper``, the stream ends with ``closing_chunks()`` (the usage chunk), and a failure
after the first token becomes the gateway's error frame (which the stream raises as
``StreamError``). A failure before it raises the ``APIStatusError`` subclass of the gateway's
status. Continuation on another deployment is not done in-process.

Resumable streams: ``stream_options.resumable`` is ignored (taken out of the body before it
reaches the router). In-process there is no connection to drop, so nothing to resume: such a
stream runs as a plain one and its ``stream_id`` stays None. ``chat.resume`` and
``chat.cancel`` need the gateway over HTTP and raise ``NotImplementedError`` on an in-process
client.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

from ..chunks import Chunk
from ..config import GatewayConfig
from ..errors import GatewayError, UpstreamTimeoutError
from ..failover import Opened, open_first_content, opener
from ..policy import Policy
from ..providers.base import first_dialect
from ..router import Router
from ..schemas import ChatRequest, CompletionRequest, parse_chat_request, parse_completion_request
from ..shaping import StreamShaper, shaper_for
from ._source import Engine
from ._state import StreamState
from .errors import APIStatusError, status_error

__all__ = ["InProcessSource", "InProcessTransport", "api_error"]


def api_error(exc: GatewayError) -> APIStatusError:
    """The client error for a gateway error raised before streaming (same status and body)."""
    return status_error(exc.status, exc.to_body(), exc.headers())


class InProcessSource:
    """Shaped chunks of one opened attempt; ``aclose()`` closes the provider stream."""

    def __init__(self, opened: Opened, shaper: StreamShaper, policy: Policy,
                 deadline: float | None) -> None:
        self.provider: str | None = opened.target.provider.name
        self.model: str | None = opened.target.upstream_model
        self.attempts: int | None = opened.attempts
        self.request_id: str | None = None
        self.stream_id: str | None = None  # no connection to drop: never resumable
        self.last_event_id: str | None = None
        self._stream = opened.stream
        self._iter: AsyncIterator[list[Chunk]] = opened.iterator
        self._pending = list(opened.pending)
        self._upstream_ended = opened.ended
        self._shaper = shaper
        self._policy = policy
        self._deadline = deadline
        self._done = False

    def _fail(self, exc: GatewayError) -> list[dict[str, Any]]:
        self._done = True
        return [self._shaper.error_chunk(exc)]

    async def _read(self) -> list[Chunk] | None:
        stall = self._policy.timeouts.stall
        loop = asyncio.get_running_loop()
        limit = min(math.inf if stall is None else loop.time() + stall,
                    math.inf if self._deadline is None else self._deadline)
        async with asyncio.timeout_at(None if limit == math.inf else limit):
            try:
                return await anext(self._iter)
            except StopAsyncIteration:
                return None

    async def next_batch(self) -> list[dict[str, Any]] | None:
        shape = self._shaper.shape
        while not self._done:
            if self._pending:
                batch = self._pending.pop(0)
            elif not self._upstream_ended:
                try:
                    read = await self._read()
                except TimeoutError:
                    return self._fail(UpstreamTimeoutError(
                        "No data from the upstream in time.", code="stall_timeout"))
                except GatewayError as exc:
                    return self._fail(exc)
                if read is None:
                    self._upstream_ended = True
                    continue
                batch = read
            else:
                self._done = True
                try:
                    closing = self._shaper.closing_chunks()
                except GatewayError as exc:
                    return self._fail(exc)
                return closing or None
            out = [shaped for chunk in batch if (shaped := shape(chunk)) is not None]
            if out:
                return out
        return None

    async def aclose(self) -> None:
        self._done = True
        await self._stream.aclose()


def _without_resumable(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without ``stream_options.resumable`` (ignored in-process)."""
    options = body.get("stream_options")
    if not isinstance(options, dict) or "resumable" not in options:
        return body
    rest = {k: v for k, v in options.items() if k != "resumable"}
    return {**body, "stream_options": rest}


class InProcessTransport:
    """Serves requests with a ``Router`` built (on first use) from ``config`` (None: the
    defaults, i.e. the embedded model ``default``, loaded on first use)."""

    def __init__(self, config: GatewayConfig | None = None) -> None:
        self.config = config if config is not None else GatewayConfig()
        self._router: Router | None = None

    @property
    def router(self) -> Router:
        if self._router is None:
            self._router = Router(self.config)
        return self._router

    async def open_stream(self, path: str, body: dict[str, Any]) -> InProcessSource:
        """Open ``body`` for ``/chat/completions`` or ``/completions``. Raises
        ``APIStatusError`` subclasses (400 for an invalid body, 404 for an unknown model, the
        upstream's status when every attempt failed before the first token)."""
        chat = path.endswith("chat/completions")
        body = _without_resumable(body)
        try:
            req: ChatRequest | CompletionRequest = (
                parse_chat_request(body) if chat else parse_completion_request(body))
            policy, chain = self.router.plan(req)
        except GatewayError as exc:
            raise api_error(exc) from None
        shaper = shaper_for(req, first_dialect(chain))
        open_one = opener(req, policy)

        total = policy.timeouts.total
        deadline = None if total is None else asyncio.get_running_loop().time() + total
        try:
            async with asyncio.timeout_at(deadline):
                opened = await open_first_content(open_one, chain, policy)
        except TimeoutError:
            raise api_error(UpstreamTimeoutError(
                f"The request did not finish within {total} s.", code="total_timeout")) from None
        except GatewayError as exc:
            raise api_error(exc) from None
        return InProcessSource(opened, shaper, policy, deadline)

    async def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The whole answer to a non-streaming ``body``: the stream run and folded into one
        completion object, as the gateway does. Raises as ``open_stream``."""
        streaming = {**body, "stream": True, "stream_options": {"include_usage": True}}
        engine = Engine(lambda: self.open_stream(path, streaming), timeout=None,
                        stall_timeout=None)
        state = StreamState("chat" if path.endswith("chat/completions") else "text")
        try:
            state.opened(await engine.open(), engine.started)
            while (batch := await engine.next_batch()) is not None:
                for raw in batch:
                    state.process(raw)
        finally:
            await engine.aclose()
        return state.final()

    async def aclose(self) -> None:
        """Close the router's providers and local engines."""
        if self._router is not None:
            await self._router.aclose()
            self._router = None
