"""The way out of the gateway's event model: rendering chunks in the client's dialect.

The gateway's internal event model is the OpenAI chat chunk (``sluicegate.chunks.Chunk``,
docs/wire.md §2): each provider module translates its upstream's stream into chunks (one module
in: ``sluicegate.providers``), ``StreamShaper`` normalises them, and an ``Egress`` renders them
for the client (one module out). There are no pairwise translators: a new client dialect is one
``Egress``, a new upstream dialect one provider.

``Run`` (``sluicegate.relay``) hands an egress every batch of shaped chunks as it is read, the
closing chunks, the mid-stream error chunk (top-level ``error``, docs/wire.md §2) and the end
of the stream; it writes the bytes returned to the client's response (or a resumable stream's
log). ``Egress`` itself renders Chat Completions SSE; ``sluicegate.ingress`` has the Messages
and Responses egresses.
"""

from __future__ import annotations

from typing import Any

import orjson

from .chunks import Chunk
from .sse import DONE, KEEP_ALIVE

__all__ = ["CHAT", "Egress", "named_event"]


class Egress:
    """Renders shaped chunks as Chat Completions SSE: ``data: <chunk>`` events, ``: keep-alive``
    comments and ``data: [DONE]`` (the openai SDKs' terminator). Subclasses render another
    dialect; one instance serves one stream (it may keep the stream's state)."""

    def chunks(self, chunks: list[Chunk]) -> bytes:
        """The bytes for ``chunks`` (one upstream read's, shaped; may be empty)."""
        dumps = orjson.dumps
        return b"".join([b"data: " + dumps(c) + b"\n\n" for c in chunks])

    def keepalive(self) -> bytes:
        """The bytes sent while no token arrives for ``keepalive_s`` s (may be empty)."""
        return KEEP_ALIVE

    def done(self) -> bytes:
        """The stream's last bytes, after its closing (or error) chunks. Called once."""
        return DONE

    async def ending(self) -> None:
        """Runs once the end was rendered, before its bytes are sent (e.g. to store the
        finished answer first)."""


CHAT = Egress()
"""The Chat Completions egress (it keeps no state, so one serves every stream)."""


def named_event(name: str, payload: dict[str, Any]) -> bytes:
    """One SSE event with an ``event:`` name: ``event: <name>\\ndata: <json>\\n\\n``."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
