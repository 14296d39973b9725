"""SDK callbacks (sync and async callables, per client and per call, on_error) and buffered
text (first piece never held; flushes every N characters or M ms), sync and async."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sluicegate.client import (
    AsyncClient,
    ChatCompletionChunk,
    Client,
    StreamCallbacks,
    StreamError,
    StreamMetadata,
)
from sluicegate.client.buffering import FlushPolicy
from sluicegate.client.callbacks import acall_callback, call_callback

from .client_helpers import MESSAGES, wait_until
from .fakes import FakeOpenAIUpstream, Script, ServerThread


class Recorder:
    """Records every callback as (tag, event, detail); ``asynchronous`` gives async callables."""

    def __init__(self, tag: str, events: list[tuple[str, str, Any]], asynchronous: bool) -> None:
        self.tag = tag
        self.events = events
        self.asynchronous = asynchronous

    def callbacks(self) -> StreamCallbacks:
        def make(name: str) -> Any:
            def record(*args: Any) -> None:
                self.events.append((self.tag, name, args))

            async def arecord(*args: Any) -> None:
                self.events.append((self.tag, name, args))

            return arecord if self.asynchronous else record

        return StreamCallbacks(on_start=make("start"), on_chunk=make("chunk"),
                               on_end=make("end"), on_error=make("error"))


def _check_events(events: list[tuple[str, str, Any]]) -> None:
    names = [(tag, name) for tag, name, _ in events]
    assert names[:2] == [("client", "start"), ("call", "start")]
    assert names[-2:] == [("client", "end"), ("call", "end")]
    chunks = [args for tag, name, args in events if name == "chunk" and tag == "call"]
    assert len(chunks) == 7
    chunk, meta = chunks[1]
    assert isinstance(chunk, ChatCompletionChunk) and isinstance(meta, StreamMetadata)
    assert meta.chunk_index == 1 and meta.provider == "mock/*" and meta.model == "gpt-test"
    end_meta = events[-1][2][0]
    assert isinstance(end_meta, StreamMetadata)
    assert end_meta.finish_reason == "stop" and end_meta.total_tokens == 15
    assert end_meta.ttft_ms is not None and end_meta.request_id is not None
    assert end_meta.request_id.startswith("chatcmpl-")


@pytest.mark.parametrize("asynchronous", [False, True])
def test_callbacks_sync_stream(gw: ServerThread, asynchronous: bool) -> None:
    events: list[tuple[str, str, Any]] = []
    client_cb = Recorder("client", events, asynchronous).callbacks()
    call_cb = Recorder("call", events, asynchronous).callbacks()
    with Client(gw.url + "/v1", callbacks=client_cb) as client:
        client.chat.stream(model="mock/gpt-test", messages=MESSAGES, callbacks=call_cb).final()
    _check_events(events)


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_callbacks_async_stream(gw: ServerThread, asynchronous: bool) -> None:
    events: list[tuple[str, str, Any]] = []
    client_cb = Recorder("client", events, asynchronous).callbacks()
    call_cb = Recorder("call", events, asynchronous).callbacks()
    async with AsyncClient(gw.url + "/v1", callbacks=client_cb) as client:
        await client.chat.stream(model="mock/gpt-test", messages=MESSAGES,
                                 callbacks=call_cb).final()
    _check_events(events)


def test_on_error_sync(fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(error_after=1)
    errors: list[BaseException] = []

    async def on_error(exc: BaseException) -> None:
        errors.append(exc)

    with Client(fake.base_url) as client, pytest.raises(StreamError):
        client.chat.stream(model="m", messages=MESSAGES,
                           callbacks=StreamCallbacks(on_error=on_error)).final()
    assert len(errors) == 1 and isinstance(errors[0], StreamError)


async def test_on_error_async(fake: FakeOpenAIUpstream) -> None:
    fake.queue = [Script(status=400)]
    errors: list[BaseException] = []
    async with AsyncClient(fake.base_url, callbacks=StreamCallbacks(
            on_error=errors.append)) as client:
        with pytest.raises(Exception, match="fake failure"):
            await client.chat.stream(model="m", messages=MESSAGES).recv()
    assert len(errors) == 1


async def test_call_callback_helpers_from_a_running_loop() -> None:
    async def double(x: int) -> int:
        return 2 * x

    assert call_callback(double, 4) == 8  # a loop runs here: a helper thread runs it
    assert call_callback(lambda x: x + 1, 4) == 5
    assert await acall_callback(double, 5) == 10
    assert await acall_callback(lambda x: x, 3) == 3


# -- buffering ------------------------------------------------------------------------------


def test_flush_policy() -> None:
    policy = FlushPolicy(flush_chars=5, flush_ms=100)
    assert policy.add("ab", now=0.0) == "ab"  # the first text is never held
    assert policy.add("cd", now=0.01) is None
    assert policy.due_in(now=0.05) == pytest.approx(0.05)  # 100 ms after the last flush
    assert policy.add("efg", now=0.02) == "cdefg"  # 5 characters
    assert policy.add("h", now=0.03) is None
    assert policy.add("i", now=0.2) == "hi"  # 100 ms passed
    assert policy.flush() == ""
    assert FlushPolicy().add("x") == "x" and FlushPolicy().add("") is None
    with pytest.raises(ValueError):
        FlushPolicy(flush_chars=0)


def _check_char_pieces(pieces: list[str]) -> None:
    assert pieces[0] == "ab"
    assert "".join(pieces) == "ab" * 10
    assert all(len(p) >= 5 for p in pieces[1:-1])
    assert len(pieces) < 10


def test_buffered_text_chars_sync(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["ab"] * 10)
    with Client(gw.url + "/v1") as client:
        s = client.chat.stream(model="mock/m", messages=MESSAGES, flush_chars=5)
        _check_char_pieces(list(s.buffered_text()))
        assert s.usage is not None


async def test_buffered_text_chars_async(fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["ab"] * 10)
    async with AsyncClient(fake.base_url) as client:
        s = client.chat.stream(model="m", messages=MESSAGES, flush_chars=5)
        _check_char_pieces([p async for p in s.buffered_text()])


def _check_timed(pieces: list[tuple[float, str]]) -> None:
    # "a" at once; "b" held (100 chars not reached) but flushed by the 200 ms limit while the
    # upstream stalls for 1.5 s; then "c" and "d" after the stall.
    texts = [t for _, t in pieces]
    assert texts[0] == "a" and texts[1] == "b" and "".join(texts) == "abcd"
    assert pieces[1][0] - pieces[0][0] < 0.9


def test_buffered_text_ms_sync(fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["a", "b", "c", "d"], stall_after=2, stall_s=1.5)
    with Client(fake.base_url) as client:
        s = client.chat.stream(model="m", messages=MESSAGES, flush_chars=100, flush_ms=200)
        _check_timed([(time.monotonic(), t) for t in s.buffered_text()])


async def test_buffered_text_ms_async(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["a", "b", "c", "d"], stall_after=2, stall_s=1.5)
    async with AsyncClient(gw.url + "/v1") as client:
        s = client.chat.stream(model="mock/m", messages=MESSAGES, flush_chars=100,
                               flush_ms=200)
        _check_timed([(time.monotonic(), t) async for t in s.buffered_text()])


def test_progress_sink_is_driven(fake: FakeOpenAIUpstream) -> None:
    calls: list[tuple[str, Any]] = []

    class Sink:
        def set_default_expected(self, max_tokens: int | None) -> None:
            calls.append(("expected", max_tokens))

        def start(self) -> None:
            calls.append(("start", None))

        def update(self, text: str, tokens: int = 1) -> None:
            calls.append(("update", text))

        def finish(self) -> None:
            calls.append(("finish", None))

    with Client(fake.base_url) as client:
        client.chat.stream(model="m", messages=MESSAGES, max_tokens=9, progress=Sink()).final()
    assert calls == [("expected", 9), ("start", None), ("update", "Hello"), ("update", ","),
                     ("update", " world"), ("update", "!"), ("finish", None)]


def test_a_failing_callback_closes_the_stream_sync(fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 200, gap_s=0.02)

    def boom(chunk: Any, meta: Any) -> None:
        if meta.chunk_index == 2:
            raise KeyError("boom")

    with Client(fake.base_url) as client:
        s = client.chat.stream(model="m", messages=MESSAGES,
                               callbacks=StreamCallbacks(on_chunk=boom))
        with pytest.raises(KeyError):
            s.final()
        assert s.closed
    assert wait_until(lambda: fake.closed_early)


async def test_a_failing_callback_closes_the_stream_async(fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 200, gap_s=0.02)

    async def boom(meta: Any) -> None:
        raise KeyError("boom")

    async with AsyncClient(fake.base_url) as client:
        s = client.chat.stream(model="m", messages=MESSAGES,
                               callbacks=StreamCallbacks(on_start=boom))
        with pytest.raises(KeyError):
            async for _ in s:
                pass
        assert s.closed
