"""Taking over a stream whose producer died (its lease expired), under the same stream id.

The reader that finds the orphan takes its lease (one instance wins), reads the log back, and:

- if the answer had already finished (a ``finish_reason`` was sent), writes what is owed: the
  usage chunk if the client asked for it, then ``[DONE]``;
- otherwise continues it with the continuation mechanism of ``sluicegate.relay``: the same
  request, plus the text delivered so far as a partial assistant message, on the request's own
  chain. A ``StreamShaper`` seeded with the stream's ``id``, ``created`` and text keeps it one
  stream: no second role chunk from the gateway, the same id on every chunk. Usage counts both
  parts (the first estimated from its text, the producer having died before recording it) and
  the usage log line carries ``continued_at_seq``, the seam.

It cannot continue (error frame ``stream_lost``, then ``[DONE]``) when the log no longer holds
the whole answer (the size cap dropped its start), or for ``n`` > 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from ..config import ResumableSettings
from ..errors import GatewayError, UpstreamError
from ..metrics import Metrics
from ..policy import Policy
from ..providers.base import first_dialect
from ..relay import SSE_HEADERS, Chain, Run, frame_chunk
from ..schemas import ChatRequest, parse_chat_request
from ..shaping import StreamShaper, shaper_for
from ..sse import DONE
from ..state import StateBackend
from .log import StreamKeys, StreamMeta, event_data, split_events
from .sink import LogSink

__all__ = ["Host", "take_over"]

log = logging.getLogger("sluicegate.resume")


class Host(Protocol):
    """What a take-over uses of the instance's ``Resumer``."""

    state: StateBackend
    settings: ResumableSettings
    owner: str
    metrics: Metrics | None
    plan: Callable[[ChatRequest], tuple[Policy, Chain]]

    def adopt(self, run: Run, sink: LogSink) -> None: ...


class _Story:
    """What the log says the client received."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.id: str | None = None
        self.created: int | None = None
        self.pieces: list[str] = []
        self.finished = False
        self.usage_sent = False
        self.done = False
        self.choices: set[int] = set()


async def _read_story(resumer: Host, keys: StreamKeys) -> _Story:
    story = _Story()
    while True:
        entries = await resumer.state.log_read(keys.log, story.last_seq, limit=512)
        if not entries:
            return story
        for _, payload in entries:
            for seq, event in split_events(payload):
                if seq <= story.last_seq:
                    continue
                story.last_seq = seq
                data = event_data(event)
                if data == b"[DONE]":
                    story.done = True
                    continue
                chunk: dict[str, Any] = orjson.loads(data)
                story.id = story.id or chunk.get("id")
                story.created = story.created or chunk.get("created")
                if chunk.get("usage") and not chunk.get("choices"):
                    story.usage_sent = True
                for choice in chunk.get("choices") or ():
                    story.choices.add(int(choice.get("index", 0)))
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        story.pieces.append(content)
                    if choice.get("finish_reason") is not None:
                        story.finished = True


def _seeded(req: ChatRequest, story: _Story, dialect: str | None) -> StreamShaper:
    """A shaper that carries on the stream the log tells of: its id, created, started choices
    and delivered text (usage estimated with ``dialect``'s tokenizer)."""
    shaper = shaper_for(req, dialect)
    shaper.id = story.id or shaper.id
    shaper.created = story.created or shaper.created
    shaper.started.update(story.choices or {0})
    shaper.pieces = list(story.pieces)
    return shaper


async def take_over(resumer: Host, request: web.Request, keys: StreamKeys,
                    meta: StreamMeta) -> None:
    """Continue an orphaned stream here, if this instance wins its lease (else nothing)."""
    state = resumer.state
    settings = resumer.settings
    if not await state.acquire_lease(keys.lease, resumer.owner, ttl_s=settings.lease_s):
        return
    stream_id = keys.meta.partition("}")[0].removeprefix("{sg:")
    info = await state.log_info(keys.log)
    story = await _read_story(resumer, keys)
    if story.done:
        await state.release_lease(keys.lease, resumer.owner)
        return
    log.warning("stream %s: its producer stopped renewing its lease after event %d; "
                "continuing it here", stream_id, story.last_seq)
    req = parse_chat_request(meta.raw)
    shaper = _seeded(req, story, None)
    sink = LogSink(state, settings, stream_id, dict(SSE_HEADERS), next_seq=story.last_seq + 1,
                   local=False)
    await sink.prepare(request)
    whole = info is None or info.trimmed_through == 0
    if story.finished or not whole or req.n != 1:
        if story.finished:
            closing = [shaper.usage_chunk()] if req.include_usage and not story.usage_sent else []
            out = b"".join(frame_chunk(c) for c in closing)
        else:
            error = UpstreamError(
                f"The instance producing stream {stream_id} stopped, and the stream cannot be "
                "continued (its start is no longer kept, or it has several choices).",
                code="stream_lost")
            out = frame_chunk(shaper.error_chunk(error))
        await sink.write(out + DONE)
        await sink.write_eof()
        await state.release_lease(keys.lease, resumer.owner)
        return
    partial = "".join(story.pieces)
    raw = dict(meta.raw)
    raw["messages"] = [*raw["messages"], {"role": "assistant", "content": partial}]
    raw.pop("models", None)
    try:
        continued = parse_chat_request(raw)
        policy, chain = resumer.plan(continued)
    except GatewayError as exc:
        await sink.write(frame_chunk(shaper.error_chunk(exc)) + DONE)
        await sink.write_eof()
        await state.release_lease(keys.lease, resumer.owner)
        return
    # The first part's usage, counted from what was delivered (its producer never recorded it).
    shaper = _seeded(req, story, first_dialect(chain))
    shaper.carry_usage(None)
    shaper.prompt_text = shaper.prompt_text + "\n" + partial
    run = Run(request, continued, policy, chain, resumer.metrics, sink=sink, shaper=shaper)
    run.usage_extra.update({"stream_id": stream_id, "continued_at_seq": story.last_seq})
    resumer.adopt(run, sink)
