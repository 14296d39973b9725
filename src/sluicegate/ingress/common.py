"""What the ingress dialects share: an egress that renders the gateway's chunks as another
dialect's events, and running a translated request.

``Run`` (``sluicegate.relay``) hands its egress (``sluicegate.egress``) each read's shaped chunks,
the closing chunks, the mid-stream error chunk (top-level ``error``) and the end of the stream.
A ``DialectEgress`` passes each chunk to its dialect's hooks, which return the bytes the client
gets. Failover, keep-alives, stall and total limits, usage accounting and disconnect
cancellation stay ``Run``'s.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..chunks import Chunk
from ..egress import CHAT, Egress, named_event
from ..keys.service import ADMISSION, KEY
from ..policy import Policy
from ..relay import Chain, Run
from ..schemas import ChatRequest

__all__ = ["DialectEgress", "named_event", "run_request"]


class DialectEgress(Egress):
    """Another dialect's rendering of one stream.

    Hooks: ``on_chunk(chunk)`` for each chunk (the error chunk included: it has a top-level
    ``error``), ``on_keepalive()`` while waiting, ``on_done()`` for the end of the stream;
    each returns the bytes to send (may be empty).
    """

    def __init__(self) -> None:
        self.run: Run | None = None

    def chunks(self, chunks: list[Chunk]) -> bytes:
        on_chunk = self.on_chunk
        if len(chunks) == 1:
            return on_chunk(chunks[0])
        return b"".join([on_chunk(c) for c in chunks])

    def keepalive(self) -> bytes:
        return self.on_keepalive()

    def done(self) -> bytes:
        return self.on_done()

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
                      chain: Chain, egress: DialectEgress | None
                      ) -> tuple[Run, web.StreamResponse]:
    """Serve ``req`` with ``Run``: streamed through ``egress``, or whole (``egress`` None).
    Raises ``GatewayError`` for a failure before anything was sent."""
    await admit(gateway, request, req, policy, chain)
    run = Run(request, req, policy, chain, gateway.metrics, egress=egress or CHAT)
    if egress is not None:
        egress.run = run
    with gateway._tracked(run):
        response = await run.serve(stream=egress is not None)
    return run, response


async def admit(gateway: Any, request: web.Request, req: ChatRequest, policy: Policy,
                chain: Chain) -> None:
    """A virtual key's admission (limits, budget, allowed models), as for chat. Raises what
    ``sluicegate.keys.service.Keys.admit`` raises (429, 403)."""
    if (key := request.get(KEY)) is not None and gateway.keys is not None:
        request[ADMISSION] = await gateway.keys.admit(key, req, policy, chain)


def route_headers(response: web.StreamResponse) -> dict[str, str]:
    """The gateway's own headers of a whole answer (route, cache, rate limits), for the same
    answer in another dialect."""
    return {k: v for k, v in response.headers.items()
            if k.startswith("X-Sluicegate-") or k.lower().startswith("x-ratelimit-")}
