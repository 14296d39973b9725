"""The byte loop every upstream dialect shares (``providers.http.UpstreamStream``), driven with
scripted network reads instead of a socket: batches per read, the malformed-event budget, what
reaches the client before an error, the connection-lost mapping and each dialect's body end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from sluicegate.errors import UpstreamError
from sluicegate.providers.anthropic import AnthropicStream
from sluicegate.providers.gemini import GeminiStream
from sluicegate.providers.http import UpstreamStream
from sluicegate.providers.openai import OpenAIStream


class _Content:
    def __init__(self, reads: list[bytes | BaseException]) -> None:
        self.reads = reads

    async def iter_any(self) -> AsyncIterator[bytes]:
        for read in self.reads:
            if isinstance(read, BaseException):
                raise read
            yield read

    def is_eof(self) -> bool:
        return True


class _Response:
    """Just what ``UpstreamStream`` reads of an ``aiohttp.ClientResponse``."""

    def __init__(self, reads: list[bytes | BaseException]) -> None:
        self.content = _Content(reads)
        self.released = self.closed = False

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


def _data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _chunk(text: str) -> dict[str, Any]:
    return {"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": text}}]}


async def _run(stream: UpstreamStream[Any]) -> tuple[list[list[Any]], UpstreamError | None]:
    batches: list[list[Any]] = []
    try:
        async for batch in stream:
            batches.append(batch)
    except UpstreamError as exc:
        return batches, exc
    return batches, None


async def test_openai_one_batch_per_read_until_done() -> None:
    response = _Response([_data(_chunk("a")) + _data(_chunk("b")), _data(_chunk("c")),
                          b"data: [DONE]\n\n", _data(_chunk("never"))])
    stream = OpenAIStream(response)  # type: ignore[arg-type]
    batches, error = await _run(stream)
    assert error is None
    assert [[c["choices"][0]["delta"]["content"] for c in b] for b in batches] == [["a", "b"],
                                                                                  ["c"]]
    await stream.aclose()
    assert response.released and not response.closed


async def test_openai_body_end_without_done_ends_quietly() -> None:
    response = _Response([_data(_chunk("a"))])
    stream = OpenAIStream(response)  # type: ignore[arg-type]
    batches, error = await _run(stream)
    assert error is None and len(batches) == 1
    await stream.aclose()
    assert response.closed and not response.released  # no end event: the socket is not reused


async def test_malformed_run_fails_after_the_budget_with_what_came_before() -> None:
    stream = OpenAIStream(_Response([  # type: ignore[arg-type]
        _data(_chunk("a")) + b"data: {oops\n\n" + _data([1]) + _data(_chunk("b")),
        _data(_chunk("c")) + b"data: {1\n\n" * 3 + _data(_chunk("never"))]))
    stream.max_malformed = 2
    batches, error = await _run(stream)
    assert [len(b) for b in batches] == [2, 1]  # a, b (the run of two was reset), then c
    assert error is not None and error.reason == "malformed" and error.code == "malformed_stream"
    assert stream.malformed == 5


async def test_midstream_error_comes_after_the_chunks_before_it() -> None:
    stream = OpenAIStream(_Response([  # type: ignore[arg-type]
        _data(_chunk("a")) + _data({"error": {"message": "boom", "code": 502}, "choices": []})]))
    batches, error = await _run(stream)
    assert len(batches) == 1
    assert error is not None and error.reason == "reported" and str(error.code) == "502"


async def test_connection_lost_after_earlier_reads() -> None:
    stream = OpenAIStream(_Response([  # type: ignore[arg-type]
        _data(_chunk("a")), aiohttp.ClientPayloadError("cut")]))
    batches, error = await _run(stream)
    assert len(batches) == 1
    assert error is not None and error.reason == "connection_lost"


def _event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\n" + _data(obj)


async def test_anthropic_ping_does_not_end_a_malformed_run() -> None:
    stream = AnthropicStream(_Response([  # type: ignore[arg-type]
        b"event: content_block_delta\ndata: {x\n\n" + _event("ping", {"type": "ping"})
        + b"event: content_block_delta\ndata: {x\n\n"]))
    stream.max_malformed = 1
    batches, error = await _run(stream)
    assert batches == []
    assert error is not None and error.reason == "malformed"


async def test_anthropic_body_end_before_message_stop() -> None:
    stream = AnthropicStream(_Response([  # type: ignore[arg-type]
        _event("message_start", {"type": "message_start",
                                 "message": {"usage": {"input_tokens": 3}}})]))
    batches, error = await _run(stream)
    assert len(batches) == 1
    assert error is not None and error.reason == "ended_early"


async def test_gemini_body_end_is_the_end_and_brings_usage() -> None:
    event = {"candidates": [{"index": 0, "content": {"parts": [{"text": "hi"}]},
                             "finishReason": "STOP"}],
             "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1}}
    response = _Response([_data(event)])
    stream = GeminiStream(response)  # type: ignore[arg-type]
    batches, error = await _run(stream)
    assert error is None
    assert batches[-1][0]["choices"] == [] and batches[-1][0]["usage"]["prompt_tokens"] == 4
    await stream.aclose()
    assert response.released


@pytest.mark.parametrize("payload", [b"[1, 2]", b'{"candidates": 3}'])
async def test_gemini_wrong_shape_is_malformed(payload: bytes) -> None:
    stream = GeminiStream(_Response([b"data: " + payload + b"\n\n"]))  # type: ignore[arg-type]
    stream.max_malformed = 0
    _, error = await _run(stream)
    assert error is not None and error.reason == "malformed"
