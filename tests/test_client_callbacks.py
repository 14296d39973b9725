"""SDK callbacks (sync and async callables, per client and per call, on_error) and buffered
text (first piece never held; flushes every N characters or M ms), sync and async."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from sluicegate.client import (
    ChatCompletionChunk,
    Client,
    StreamCallbacks,
    StreamClosedError,
    StreamError,
    StreamMetadata,
)
from sluicegate.client.buffering import FlushPolicy
from sluicegate.client.callbacks import acall_callback, call_callback

from .client_helpers import MESSAGES
from .client_modes import Api, MockUpstream
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
def test_callbacks(api: Api, gw: ServerThread, asynchronous: bool) -> None:
    events: list[tuple[str, str, Any]] = []
    client_cb = Recorder("client", events, asynchronous).callbacks()
    call_cb = Recorder("call", events, asynchronous).callbacks()
    with api.open(api.Client(gw.url + "/v1", callbacks=client_cb)) as client:
        api.run(client.chat.stream(model="mock/gpt-test", messages=MESSAGES,
                                   callbacks=call_cb).final())
    _check_events(events)


def test_on_error(api: Api, mock: MockUpstream) -> None:
    mock.script = Script(error_after=1)
    errors: list[BaseException] = []

    async def on_error(exc: BaseException) -> None:
        errors.append(exc)

    with api.open(api.Client(mock.base_url, http_client=api.http_client(mock))) as client, \
            pytest.raises(StreamError):
        api.run(client.chat.stream(model="m", messages=MESSAGES,
                                   callbacks=StreamCallbacks(on_error=on_error)).final())
    assert len(errors) == 1 and isinstance(errors[0], StreamError)
    mock.queue = [Script(status=400)]
    client_errors: list[BaseException] = []
    on_error_cb = StreamCallbacks(on_error=client_errors.append)
    with api.open(api.Client(mock.base_url, http_client=api.http_client(mock),
                             callbacks=on_error_cb)) as client, \
            pytest.raises(Exception, match="fake failure"):
        api.run(client.chat.stream(model="m", messages=MESSAGES).recv())
    assert len(client_errors) == 1


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


def test_buffered_text_chars(api: Api, gw: ServerThread, fake: FakeOpenAIUpstream,
                             mock: MockUpstream) -> None:
    fake.script = mock.script = Script(texts=["ab"] * 10)
    with api.open(api.Client(gw.url + "/v1")) as client:
        s = client.chat.stream(model="mock/m", messages=MESSAGES, flush_chars=5)
        _check_char_pieces(api.list(s.buffered_text()))
        assert s.usage is not None
    with api.open(api.Client(mock.base_url, http_client=api.http_client(mock))) as client:
        s = client.chat.stream(model="m", messages=MESSAGES, flush_chars=5)
        _check_char_pieces(api.list(s.buffered_text()))


def _check_timed(pieces: list[tuple[float, str]]) -> None:
    # "a" at once; "b" held (100 chars not reached) but flushed by the 200 ms limit while the
    # upstream stalls for 1.5 s; then "c" and "d" after the stall.
    texts = [t for _, t in pieces]
    assert texts[0] == "a" and texts[1] == "b" and "".join(texts) == "abcd"
    assert pieces[1][0] - pieces[0][0] < 0.9


@pytest.mark.parametrize("via", ["gateway", "direct"])
def test_buffered_text_ms(api: Api, via: str, fake: FakeOpenAIUpstream,
                          request: pytest.FixtureRequest) -> None:
    fake.script = Script(texts=["a", "b", "c", "d"], stall_after=2, stall_s=1.5)
    base_url, model = fake.base_url, "m"
    if via == "gateway":
        base_url, model = request.getfixturevalue("gw").url + "/v1", "mock/m"
    with api.open(api.Client(base_url)) as client:
        s = client.chat.stream(model=model, messages=MESSAGES, flush_chars=100, flush_ms=200)
        _check_timed(api.timed(s.buffered_text()))


def test_progress_sink_is_driven(mock: MockUpstream) -> None:
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

    http_client = httpx.Client(transport=httpx.MockTransport(mock.handle))
    with Client(mock.base_url, http_client=http_client) as client:
        client.chat.stream(model="m", messages=MESSAGES, max_tokens=9, progress=Sink()).final()
    assert calls == [("expected", 9), ("start", None), ("update", "Hello"), ("update", ","),
                     ("update", " world"), ("update", "!"), ("finish", None)]


def test_a_failing_callback_closes_the_stream(api: Api, mock: MockUpstream) -> None:
    mock.script = Script(texts=["x"] * 200, gap_s=0.02)

    def boom(chunk: Any, meta: Any) -> None:
        if meta.chunk_index == 2:
            raise KeyError("boom")

    async def aboom(meta: Any) -> None:
        raise KeyError("boom")

    with api.open(api.Client(mock.base_url, http_client=api.http_client(mock))) as client:
        s = client.chat.stream(model="m", messages=MESSAGES,
                               callbacks=StreamCallbacks(on_chunk=boom))
        with pytest.raises(KeyError):
            api.run(s.final())
        assert s.closed
        assert mock.closed_early == 1  # closed before raising: no wait needed
        s = client.chat.stream(model="m", messages=MESSAGES,
                               callbacks=StreamCallbacks(on_start=aboom))
        with pytest.raises(KeyError):
            api.list(s)
        assert s.closed
        assert mock.closed_early == 2


def test_sync_callbacks_run_on_the_consuming_thread_and_stall_only_their_stream(
        mock: MockUpstream) -> None:
    release = threading.Event()
    threads: set[int] = set()

    def on_chunk(chunk: Any, meta: Any) -> None:
        threads.add(threading.get_ident())
        if meta.chunk_index == 1:
            assert release.wait(5), "the other stream never finished"

    http_client = httpx.Client(transport=httpx.MockTransport(mock.handle))
    with Client(mock.base_url, http_client=http_client) as client:
        blocked = client.chat.stream(model="m", messages=MESSAGES,
                                     callbacks=StreamCallbacks(on_chunk=on_chunk))
        consumer = threading.Thread(target=blocked.final)
        consumer.start()
        # the first stream's callback now blocks its consumer; the client's loop goes on
        assert client.chat.stream(model="m", messages=MESSAGES).final().choices[0].message \
            .content == "Hello, world!"
        release.set()
        consumer.join(5)
        assert not consumer.is_alive()
    assert threads == {consumer.ident}


def test_close_from_another_thread_cuts_a_waiting_read(mock: MockUpstream) -> None:
    mock.script = Script(texts=["x"] * 200, gap_s=0.05)
    errors: list[BaseException] = []
    outcome: list[BaseException] = []
    http_client = httpx.Client(transport=httpx.MockTransport(mock.handle))
    with Client(mock.base_url, http_client=http_client) as client:
        s = client.chat.stream(model="m", messages=MESSAGES,
                               callbacks=StreamCallbacks(on_error=errors.append))
        s.recv()

        def read() -> None:
            try:
                s.final()
            except BaseException as exc:
                outcome.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.1)
        s.close()
        reader.join(5)
        assert not reader.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], StreamClosedError)
    assert errors == []  # the user's own close is no error
    assert mock.closed_early == 1


def test_close_from_a_callback(api: Api, mock: MockUpstream) -> None:
    mock.script = Script(texts=["x"] * 200, gap_s=0.01)
    streams: list[Any] = []

    async def aclose_it(chunk: Any, meta: Any) -> None:
        if meta.chunk_index == 2:
            await streams[0].aclose()

    def close_it(chunk: Any, meta: Any) -> None:
        if meta.chunk_index == 2:
            streams[0].close()

    on_chunk = aclose_it if api.asynchronous else close_it
    with api.open(api.Client(mock.base_url, http_client=api.http_client(mock))) as client:
        streams.append(client.chat.stream(model="m", messages=MESSAGES,
                                          callbacks=StreamCallbacks(on_chunk=on_chunk)))
        with pytest.raises(StreamClosedError):
            api.list(streams[0])
        assert streams[0].closed
    assert mock.closed_early == 1
