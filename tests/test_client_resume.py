"""Resumable streams in the SDK, against a fake gateway on loopback (``fakes_resumable``) that
drops real connections: a dropped stream is resumed with ``Last-Event-ID`` and read as one
stream (every chunk once, in order; stats, callbacks and progress continuous); refusals and
exhausted retries raise typed errors with the partial text; ``chat.resume`` and
``chat.cancel``. Sync and async (the ``api`` fixture)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tenacity import wait_fixed

from sluicegate.client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ChatCompletionChunk,
    ChatRequestBuilder,
    Client,
    NotFoundError,
    ProgressTracker,
    StreamCallbacks,
    StreamCancellation,
    StreamError,
    StreamResumeError,
    _resume,
)
from sluicegate.config import GatewayConfig

from .client_helpers import MESSAGES
from .client_modes import Api, MockUpstream
from .conftest import MOCK_KEY, MOCK_KEY_ENV, mock_config
from .fakes import FakeOpenAIUpstream, Script
from .fakes_resumable import TEXTS, Drop, FakeResumableGateway, Refuse

KEY = "sk-resume-test"
TEXT = "".join(TEXTS)
EXPECTED = ["role", *TEXTS, "finish", "usage"]
M = len(EXPECTED)  # chunks of a whole stream; [DONE] is event M + 1


def kinds(chunks: list[ChatCompletionChunk]) -> list[str | None]:
    """Each chunk as what it carries: "role", its content, "finish" or "usage"."""
    out: list[str | None] = []
    for chunk in chunks:
        if not chunk.choices:
            out.append("usage" if chunk.usage is not None else None)
        elif chunk.choices[0].delta.role:
            out.append("role")
        elif chunk.choices[0].finish_reason:
            out.append("finish")
        else:
            out.append(chunk.choices[0].delta.content)
    return out


def text_of(first_chunks: int) -> str:
    """Choice 0's text in the first ``first_chunks`` chunks."""
    return "".join(TEXTS[:max(first_chunks - 1, 0)])


@pytest.fixture(scope="module")
def server() -> Iterator[FakeResumableGateway]:
    fake = FakeResumableGateway().start()
    yield fake
    fake.stop()


@pytest.fixture
def gw(server: FakeResumableGateway) -> FakeResumableGateway:
    server.reset()
    return server


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnect at once (the backoff has a test of its own)."""
    monkeypatch.setattr(_resume, "RESUME_BACKOFF", wait_fixed(0.001))


@pytest.fixture
def client(api: Api, gw: FakeResumableGateway, quick_backoff: None) -> Iterator[Any]:
    c = api.Client(gw.base_url, api_key=KEY, max_retries=0)
    yield c
    api.close(c)


def open_stream(client: Any, **kwargs: Any) -> Any:
    return client.chat.stream(model="m", messages=MESSAGES, resumable=True, **kwargs)


def check_one_stream(api: Api, stream: Any, chunks: list[ChatCompletionChunk],
                     gw: FakeResumableGateway) -> str:
    """Every chunk once, in order, and the stream's state that of one whole stream; returns
    the stream id."""
    assert kinds(chunks) == EXPECTED
    sid = stream.stream_id
    assert sid is not None and list(gw.streams) == [sid]
    assert stream.last_event_id == f"{sid}:{M + 1}"
    stats = stream.stats
    assert stats.chunks == M and stats.tokens == len(TEXTS) and stats.characters == len(TEXT)
    assert stats.ttft_ms is not None and stats.finish_reason == "stop"
    assert (stats.provider, stats.attempts) == ("fake", 1)
    assert stream.usage is not None and stream.usage.completion_tokens == len(TEXTS)
    completion = api.run(stream.final())
    assert completion.choices[0].message.content == TEXT
    assert completion.choices[0].finish_reason == "stop"
    return str(sid)


@pytest.mark.parametrize("k", [0, 1, 2, 5, M - 1, M])
def test_a_drop_after_k_events_is_resumed_once(api: Api, client: Any,
                                               gw: FakeResumableGateway, k: int) -> None:
    gw.script.plans = [Drop(k)]
    stream = open_stream(client)
    chunks: list[ChatCompletionChunk] = []
    ttft: list[float | None] = []
    while True:
        try:
            chunks.append(api.run(stream.recv()))
        except api.StopIteration:
            break
        ttft.append(stream.stats.ttft_ms)
    sid = check_one_stream(api, stream, chunks, gw)
    assert ttft[0] is None and ttft[1] is not None and set(ttft[1:]) == {ttft[1]}  # set once
    post, *gets = gw.received
    assert post.body["stream_options"] == {"include_usage": True, "resumable": True}
    assert len(gets) == 1 and gets[0].method == "GET"
    assert gets[0].path == f"/v1/chat/completions/{sid}/stream"
    assert gets[0].headers["Authorization"] == post.headers["Authorization"] == f"Bearer {KEY}"
    if k:
        assert gw.resume_ids == [f"{sid}:{k}"] and gets[0].query == {}
    else:  # nothing received yet: from the start
        assert gw.resume_ids == [None] and gets[0].query == {"starting_after": "0"}


def test_two_drops_in_one_stream(api: Api, client: Any, gw: FakeResumableGateway) -> None:
    gw.script.plans = [Drop(3), Drop(4)]
    stream = open_stream(client)
    sid = check_one_stream(api, stream, api.list(stream), gw)
    assert gw.resume_ids == [f"{sid}:3", f"{sid}:7"]


def test_a_body_ending_without_done_is_resumed(api: Api, client: Any,
                                              gw: FakeResumableGateway) -> None:
    gw.script.plans = [Drop(4, "end"), Drop(3, "end")]
    stream = open_stream(client)
    sid = check_one_stream(api, stream, api.list(stream), gw)
    assert gw.resume_ids == [f"{sid}:4", f"{sid}:7"]


def test_a_reset_connection_is_resumed(api: Api, client: Any, gw: FakeResumableGateway
                                       ) -> None:
    gw.script.plans = [Drop(5, "reset")]
    stream = open_stream(client)
    sid = check_one_stream(api, stream, api.list(stream), gw)
    # An RST may discard what the client had not read yet: it resumes from what it had.
    (resumed_from,) = gw.resume_ids
    assert resumed_from is not None and resumed_from.startswith(f"{sid}:")
    assert int(resumed_from.rpartition(":")[2]) <= 5


def test_replayed_events_are_skipped(api: Api, client: Any, gw: FakeResumableGateway) -> None:
    # Each resume starts 4 events earlier than asked; the second connection brings only
    # replays (no progress), the third two new events.
    gw.script.plans = [Drop(6), Drop(2), Drop(6)]
    gw.script.overlap = 4
    stream = open_stream(client, resume_retries=2)
    sid = check_one_stream(api, stream, api.list(stream), gw)
    assert gw.resume_ids == [f"{sid}:6", f"{sid}:6", f"{sid}:8"]


def test_text_stream_and_buffered_text_across_drops(api: Api, client: Any,
                                                    gw: FakeResumableGateway) -> None:
    gw.script.plans = [Drop(2), Drop(3)]
    assert api.list(open_stream(client).text_stream) == TEXTS
    gw.reset()
    gw.script.plans = [Drop(4)]
    assert "".join(api.list(open_stream(client, flush_chars=6).buffered_text())) == TEXT


def test_the_stream_id_is_known_once_open(api: Api, client: Any,
                                          gw: FakeResumableGateway) -> None:
    stream = open_stream(client)
    assert stream.stream_id is None and stream.last_event_id is None
    first = api.run(stream.recv())
    assert kinds([first]) == ["role"]
    sid = stream.stream_id
    assert sid is not None and sid.startswith("rs_") and stream.last_event_id == f"{sid}:1"
    api.close(stream)
    assert stream.stream_id == sid  # still readable, e.g. to resume or cancel it later


@pytest.mark.parametrize(("status", "code"), [(404, "stream_not_found"),
                                              (410, "stream_events_expired"),
                                              (400, "scripted")])
def test_a_refused_resume_raises_with_the_partial_text(
        api: Api, client: Any, gw: FakeResumableGateway, status: int, code: str) -> None:
    gw.script.plans = [Drop(4), Refuse(status)]
    errors: list[BaseException] = []
    stream = open_stream(client, callbacks=StreamCallbacks(on_error=errors.append))
    seen: list[ChatCompletionChunk] = []
    with pytest.raises(StreamResumeError) as info:
        api.list(stream, into=seen)
    err = info.value
    sid = stream.stream_id
    assert kinds(seen) == EXPECTED[:4]
    assert isinstance(err, StreamError) and err.partial_text == text_of(4) == "Once upon a "
    assert (err.status_code, err.code, err.stream_id) == (status, code, sid)
    assert err.last_event_id == f"{sid}:4" and isinstance(err.error, dict)
    assert isinstance(err.__cause__, APIStatusError) and err.__cause__.status_code == status
    assert errors == [err]
    assert len(gw.requests("GET")) == 1  # not retried
    with pytest.raises(StreamResumeError):  # the error sticks
        api.run(stream.recv())


def test_a_503_is_retried(api: Api, client: Any, gw: FakeResumableGateway) -> None:
    gw.script.plans = [Drop(3), Refuse(503), Refuse(503)]
    stream = open_stream(client)
    sid = check_one_stream(api, stream, api.list(stream), gw)
    assert gw.resume_ids == [f"{sid}:3"] * 3


def test_a_503_outlasting_the_retries_raises(api: Api, client: Any,
                                             gw: FakeResumableGateway) -> None:
    gw.script.plans = [Drop(3)]
    gw.script.default = Refuse(503)
    stream = open_stream(client, resume_retries=2)
    with pytest.raises(StreamResumeError) as info:
        api.list(stream)
    assert (info.value.status_code, info.value.code) == (503, "state_unavailable")
    assert info.value.partial_text == text_of(3)
    assert len(gw.requests("GET")) == 2


@pytest.mark.parametrize("retries", [None, 0, 3])
def test_retries_are_bounded(api: Api, client: Any, gw: FakeResumableGateway,
                             retries: int | None) -> None:
    gw.script.plans = [Drop(4)]
    gw.script.default = Drop(0)  # every reconnection drops before its first event
    kwargs = {} if retries is None else {"resume_retries": retries}
    stream = open_stream(client, **kwargs)
    seen: list[ChatCompletionChunk] = []
    with pytest.raises(APIConnectionError) as info:
        api.list(stream, into=seen)
    assert not isinstance(info.value, StreamResumeError)
    assert info.value.partial_text == text_of(4) and kinds(seen) == EXPECTED[:4]
    n = 5 if retries is None else retries
    assert len(gw.received) == n + 1  # the POST, then n reconnections
    sid = stream.stream_id
    assert gw.resume_ids == [f"{sid}:4"] * n


def test_each_reconnection_that_makes_progress_starts_a_fresh_count(
        api: Api, client: Any, gw: FakeResumableGateway) -> None:
    gw.script.default = Drop(1)  # every connection dies after one event
    stream = open_stream(client, resume_retries=1)
    sid = check_one_stream(api, stream, api.list(stream), gw)
    assert gw.resume_ids == [f"{sid}:{seq}" for seq in range(1, M + 1)]


def test_a_plain_stream_is_not_resumed(api: Api, client: Any, gw: FakeResumableGateway
                                       ) -> None:
    gw.script.plans = [Drop(4)]
    stream = client.chat.stream(model="m", messages=MESSAGES)
    seen: list[ChatCompletionChunk] = []
    with pytest.raises(APIConnectionError) as info:
        api.list(stream, into=seen)
    assert info.value.partial_text == text_of(4) and kinds(seen) == EXPECTED[:4]
    assert [r.method for r in gw.received] == ["POST"]
    assert gw.received[0].body["stream_options"] == {"include_usage": True}
    assert stream.stream_id is None and stream.last_event_id is None
    # and a plain body that ends without [DONE] is an end, as it always was
    gw.reset()
    gw.script.plans = [Drop(4, "end")]
    assert kinds(api.list(client.chat.stream(model="m", messages=MESSAGES))) == EXPECTED[:4]
    assert [r.method for r in gw.received] == ["POST"]


def test_a_server_without_resumable_streams(api: Api, mock: MockUpstream) -> None:
    """No stream id in the response: nothing to resume, the stream behaves as a plain one."""
    mock.script = Script(die_after=2)
    client = api.Client(mock.base_url, max_retries=0, http_client=api.http_client(mock))
    try:
        stream = client.chat.stream(model="m", messages=MESSAGES, resumable=True)
        with pytest.raises(APIConnectionError) as info:
            api.list(stream)
        assert info.value.partial_text == "Hello,"
        assert stream.stream_id is None and len(mock.received) == 1
        assert mock.received[0].body["stream_options"]["resumable"] is True
    finally:
        api.close(client)


def test_stream_options_are_merged(api: Api, client: Any, gw: FakeResumableGateway) -> None:
    api.list(open_stream(client, stream_options={"include_usage": False, "x": 1}))
    assert gw.received[0].body["stream_options"] == {"include_usage": True, "x": 1,
                                                     "resumable": True}
    gw.reset()
    # resumable=False leaves a body that asks for it as it is: still resumed
    gw.script.plans = [Drop(2)]
    stream = client.chat.stream(model="m", messages=MESSAGES,
                                stream_options={"resumable": True})
    check_one_stream(api, stream, api.list(stream), gw)


def test_callbacks_and_progress_see_one_stream(api: Api, client: Any,
                                               gw: FakeResumableGateway) -> None:
    gw.script.plans = [Drop(2), Drop(5, "end")]
    events: list[tuple[str, Any]] = []
    callbacks = StreamCallbacks(
        on_start=lambda meta: events.append(("start", meta.chunk_index)),
        on_chunk=lambda chunk, meta: events.append(("chunk", (meta.chunk_index, chunk))),
        on_end=lambda meta: events.append(("end", meta.stats.chunks)),
        on_error=lambda exc: events.append(("error", exc)))
    tracker = ProgressTracker(expected_tokens=len(TEXTS))
    stream = open_stream(client, callbacks=callbacks, progress=tracker)
    sid = check_one_stream(api, stream, api.list(stream), gw)
    assert gw.resume_ids == [f"{sid}:2", f"{sid}:7"]
    assert [name for name, _ in events] == ["start", *["chunk"] * M, "end"]
    indexed = [detail for name, detail in events if name == "chunk"]
    assert [index for index, _ in indexed] == list(range(M))
    assert kinds([chunk for _, chunk in indexed]) == EXPECTED
    assert events[-1] == ("end", M)
    assert tracker.done and tracker.text == TEXT and tracker.chunks == len(TEXTS)
    assert tracker.percent == 100.0


def test_the_total_timeout_covers_the_reconnections(api: Api, client: Any,
                                                    gw: FakeResumableGateway) -> None:
    gw.script.plans = [Drop(2), Drop(2)]
    gw.script.gap_s = 0.06  # 12 events: about 0.7 s in all
    stream = open_stream(client, timeout=0.4)
    started = time.monotonic()
    with pytest.raises(APITimeoutError) as info:
        api.list(stream)
    assert 0.35 < time.monotonic() - started < 2.0
    assert "0.4 s" in str(info.value) and info.value.partial_text.startswith("Once upon a ")
    assert len(gw.requests("GET")) == 2


def test_the_stall_timeout_holds_across_a_resume(api: Api, client: Any,
                                                 gw: FakeResumableGateway) -> None:
    gw.script.plans = [Drop(3), Drop(3)]
    gw.script.gap_s = 0.02
    stream = open_stream(client, stall_timeout=0.5)
    check_one_stream(api, stream, api.list(stream), gw)
    gw.reset()
    gw.script.plans = [Drop(3)]
    gw.script.stall_connection = 1  # the resumed connection goes silent
    stream = open_stream(client, stall_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(APITimeoutError) as info:
        api.list(stream)
    assert time.monotonic() - started < 1.5
    assert "No data from the server for 0.2 s" in str(info.value)
    assert info.value.partial_text == text_of(3)
    assert len(gw.requests("GET")) == 1


def test_resume_by_id(api: Api, client: Any, gw: FakeResumableGateway) -> None:
    first = open_stream(client)
    sid = check_one_stream(api, first, api.list(first), gw)
    gw.received.clear()
    later = client.chat.resume(sid, after=4)
    assert later.stream_id == sid  # known before it opens
    chunks = api.list(later)
    assert kinds(chunks) == EXPECTED[4:]
    assert gw.resume_ids == [f"{sid}:4"]
    assert later.last_event_id == f"{sid}:{M + 1}" and later.stats.chunks == M - 4
    assert api.run(later.final()).choices[0].message.content == "".join(TEXTS[3:])
    gw.received.clear()
    whole = client.chat.resume(sid)
    assert kinds(api.list(whole)) == EXPECTED
    assert gw.received[0].query == {"starting_after": "0"}
    assert gw.resume_ids == [None]


def test_resume_by_id_resumes_itself(api: Api, client: Any, gw: FakeResumableGateway) -> None:
    gw.script.plans = [None, Refuse(503), Drop(2), Drop(0)]
    first = open_stream(client)
    sid = check_one_stream(api, first, api.list(first), gw)
    gw.received.clear()
    later = client.chat.resume(sid, after=3)
    assert kinds(api.list(later)) == EXPECTED[3:]
    assert gw.resume_ids == [f"{sid}:3", f"{sid}:3", f"{sid}:5", f"{sid}:5"]


def test_resume_of_an_unknown_stream(api: Api, client: Any, gw: FakeResumableGateway) -> None:
    stream = client.chat.resume("rs_nope", after=2)
    with pytest.raises(StreamResumeError) as info:
        api.list(stream)
    assert (info.value.status_code, info.value.code) == (404, "stream_not_found")
    assert info.value.partial_text == "" and info.value.last_event_id is None
    assert gw.resume_ids == ["rs_nope:2"]  # a 404 is not retried
    with pytest.raises(ValueError):
        client.chat.resume("rs_x", after=-1)
    with pytest.raises(ValueError):
        client.chat.resume("")


def test_resume_with_another_keys_authorization(api: Api, client: Any,
                                                gw: FakeResumableGateway) -> None:
    first = open_stream(client)
    sid = check_one_stream(api, first, api.list(first), gw)
    other = api.Client(gw.base_url, api_key="sk-other", max_retries=0)
    try:
        with pytest.raises(StreamResumeError) as info:
            api.list(other.chat.resume(sid))
        assert info.value.status_code == 404
    finally:
        api.close(other)


def test_cancel(api: Api, client: Any, gw: FakeResumableGateway) -> None:
    first = open_stream(client)
    sid = check_one_stream(api, first, api.list(first), gw)
    result = api.run(client.chat.cancel(sid))
    assert isinstance(result, StreamCancellation)
    assert (result.id, result.object, result.cancelled) == (sid, "chat.completion.stream", True)
    delete = gw.received[-1]
    assert (delete.method, delete.path) == ("DELETE", f"/v1/chat/completions/{sid}")
    assert delete.headers["Authorization"] == f"Bearer {KEY}"
    assert "content-type" not in {name.lower() for name in delete.headers}
    with pytest.raises(NotFoundError):
        api.run(client.chat.cancel(sid))
    with pytest.raises(StreamResumeError) as info:
        api.list(client.chat.resume(sid))
    assert info.value.code == "stream_not_found"


def test_builder_asks_for_a_resumable_stream(gw: FakeResumableGateway, quick_backoff: None
                                             ) -> None:
    request = (ChatRequestBuilder().with_model("m").with_text("hi")
               .with_param("stream_options", {"include_usage": True}).with_resumable().build())
    assert request.to_body()["stream_options"] == {"include_usage": True, "resumable": True}
    gw.script.plans = [Drop(5)]
    with Client(gw.base_url, api_key=KEY, max_retries=0) as client:
        stream = client.chat.stream(request)
        assert kinds(list(stream)) == EXPECTED
    assert gw.resume_ids == [f"{stream.stream_id}:5"]
    off = ChatRequestBuilder().with_model("m").with_text("hi").with_resumable().with_resumable(
        False).build()
    assert "stream_options" not in off.to_body()


def test_a_sync_http_client_resumes_too(gw: FakeResumableGateway, quick_backoff: None
                                        ) -> None:
    gw.script.plans = [Drop(3), Drop(2, "end")]
    with Client(gw.base_url, api_key=KEY, max_retries=0, http_client=httpx.Client()) as client:
        stream = open_stream(client)
        assert kinds(list(stream)) == EXPECTED
        sid = stream.stream_id
    assert gw.resume_ids == [f"{sid}:3", f"{sid}:5"]


def test_the_first_reconnection_waits_a_short_backoff(gw: FakeResumableGateway) -> None:
    gw.script.plans = [Drop(1), Drop(1)]
    with Client(gw.base_url, api_key=KEY, max_retries=0) as client:
        stream = open_stream(client)
        assert kinds(list(stream)) == EXPECTED
    post, first, second = gw.arrived
    # Drop → first reconnection: 0.1–0.25 s (each reconnection that made progress starts over).
    assert 0.1 <= first - post < 0.6
    assert 0.1 <= second - first < 0.6


def test_in_process_ignores_resumable(fake: FakeOpenAIUpstream,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MOCK_KEY_ENV, MOCK_KEY)
    config: GatewayConfig = mock_config(fake.base_url)
    with Client.in_process(config) as client:
        stream = client.chat.stream(model="mock/x", messages=MESSAGES, resumable=True)
        assert "".join(stream.text_stream) == "Hello, world!"
        assert stream.stream_id is None and stream.last_event_id is None
        assert fake.received[-1].body["stream_options"] == {"include_usage": True}
        with pytest.raises(NotImplementedError):
            client.chat.resume("rs_x")
        with pytest.raises(NotImplementedError):
            client.chat.cancel("rs_x")
