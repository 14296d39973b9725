"""Resumable streams on one gateway (the memory state): ids on the wire, resume after a drop,
the resume point's errors, cancel, the grace period without a reader, the size cap, and a
state that cannot be reached.

The cross-instance cases (Redis, three processes, a producer killed) are in
``test_resume_cluster.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest

from sluicegate.config import GatewayConfig
from sluicegate.server import Gateway
from sluicegate.state import LogInfo

from .conftest import MASTER_KEY, MOCK_KEY, MOCK_KEY_ENV, mock_config
from .fakes import FakeOpenAIUpstream, Script, ServerThread, free_port, start_gateway
from .resume_helpers import MESSAGES, body, parse_events, read_until, resume, text_of

WORDS = [f"w{i} " for i in range(40)]


@pytest.fixture(scope="module")
def resumable_gateway(upstream: FakeOpenAIUpstream) -> Iterator[tuple[ServerThread, Gateway]]:
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    config = mock_config(upstream.base_url)
    config.resumable.grace_s = 0.6
    config.resumable.lease_s = 0.6
    server, gateway = start_gateway(config)
    yield server, gateway
    server.stop()
    mp.undo()


@pytest.fixture
def rgw(resumable_gateway: tuple[ServerThread, Gateway], fake: FakeOpenAIUpstream) -> str:
    return resumable_gateway[0].url


def _wait_for(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_every_event_carries_its_id_and_the_openai_sdk_reads_the_stream(
        rgw: str, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=WORDS[:5])
    raw = httpx.post(rgw + "/v1/chat/completions", json=body(), timeout=10)
    assert raw.status_code == 200
    stream_id = raw.headers["x-sluicegate-stream-id"]
    events = parse_events(raw.content)
    assert [e.id for e in events] == [f"{stream_id}:{i}" for i in range(1, len(events) + 1)]
    assert events[-1].data == b"[DONE]"
    assert b"\n\n\n" not in raw.content and b"keep-alive" not in raw.content
    # stream_options.resumable is the gateway's own: not sent upstream
    assert "resumable" not in fake.received[-1].body["stream_options"]

    client = openai.OpenAI(base_url=rgw + "/v1", api_key="unused", max_retries=0)
    with client.chat.completions.stream(model="mock/story", messages=MESSAGES,  # type: ignore[arg-type]
                                        stream_options={"resumable": True}) as stream:  # type: ignore[typeddict-unknown-key]
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "".join(WORDS[:5])


def test_a_plain_stream_has_no_ids(rgw: str, fake: FakeOpenAIUpstream) -> None:
    raw = httpx.post(rgw + "/v1/chat/completions",
                     json={"model": "mock/x", "messages": MESSAGES, "stream": True}, timeout=10)
    assert b"id: " not in raw.content and "x-sluicegate-stream-id" not in raw.headers


@pytest.mark.parametrize("k", [1, 2, 7, 20, 41])
def test_a_dropped_client_resumes_from_its_last_event_exactly_once(
        rgw: str, fake: FakeOpenAIUpstream, k: int) -> None:
    fake.script = Script(texts=WORDS, gap_s=0.01)
    stream_id, first = read_until(rgw, body(), k)
    assert len(first) == k
    rest = resume(rgw, stream_id, first[-1].seq)
    assert rest.status_code == 200
    assert rest.headers["x-sluicegate-stream-id"] == stream_id
    events = parse_events(rest.content)
    assert [e.seq for e in events] == list(range(k + 1, k + 1 + len(events)))
    assert events[-1].data == b"[DONE]" and rest.content.count(b"[DONE]") == 1
    assert text_of(first + events) == "".join(WORDS)
    usage = [e.chunk()["usage"] for e in events if e.data != b"[DONE]" and e.chunk().get("usage")]
    assert usage and usage[-1]["completion_tokens"] == len(WORDS)


def test_starting_after_and_a_resume_from_the_start(rgw: str, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=WORDS[:6])
    whole = httpx.post(rgw + "/v1/chat/completions", json=body(), timeout=10)
    stream_id = whole.headers["x-sluicegate-stream-id"]
    again = resume(rgw, stream_id, None)  # no Last-Event-ID: from the start
    assert again.content == whole.content
    tail = httpx.get(f"{rgw}/v1/chat/completions/{stream_id}/stream?starting_after=3",
                     timeout=10)
    assert parse_events(tail.content)[0].seq == 4


def test_resume_errors_are_openai_shaped(rgw: str, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=WORDS[:3])
    whole = httpx.post(rgw + "/v1/chat/completions", json=body(), timeout=10)
    stream_id = whole.headers["x-sluicegate-stream-id"]
    last = parse_events(whole.content)[-1].seq

    unknown = resume(rgw, "rs_" + "A" * 24, 1)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "stream_not_found"
    assert resume(rgw, "not-an-id", 1).status_code == 404

    other = httpx.get(f"{rgw}/v1/chat/completions/{stream_id}/stream",
                      headers={"Last-Event-ID": "rs_BBBBBBBBBBBBBBBBBBBBBBBB:2"}, timeout=10)
    assert other.status_code == 400
    assert other.json()["error"]["code"] == "invalid_last_event_id"
    assert other.json()["error"]["param"] == "Last-Event-ID"

    past = resume(rgw, stream_id, last + 1)
    assert past.status_code == 400 and "past the end" in past.json()["error"]["message"]
    bad = httpx.get(f"{rgw}/v1/chat/completions/{stream_id}/stream?starting_after=x",
                    timeout=10)
    assert bad.status_code == 400
    at_end = resume(rgw, stream_id, last)
    assert at_end.status_code == 200 and parse_events(at_end.content) == []


def test_a_resume_needs_the_key_that_started_the_stream(upstream: FakeOpenAIUpstream,
                                                         fake: FakeOpenAIUpstream) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    server, _ = start_gateway(mock_config(upstream.base_url, api_key=MASTER_KEY))
    try:
        fake.script = Script(texts=WORDS[:3])
        auth = {"Authorization": f"Bearer {MASTER_KEY}"}
        whole = httpx.post(server.url + "/v1/chat/completions", json=body(), headers=auth,
                           timeout=10)
        stream_id = whole.headers["x-sluicegate-stream-id"]
        assert resume(server.url, stream_id, 1, headers=auth).status_code == 200
        assert resume(server.url, stream_id, 1).status_code == 401
        wrong = resume(server.url, stream_id, 1, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
    finally:
        server.stop()
        mp.undo()


def test_delete_cancels_the_stream_and_closes_the_upstream(
        rgw: str, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=WORDS * 5, gap_s=0.02)
    stream_id, first = read_until(rgw, body(), 3)
    cancelled = httpx.delete(f"{rgw}/v1/chat/completions/{stream_id}", timeout=10)
    assert cancelled.json() == {"id": stream_id, "object": "chat.completion.stream",
                                "cancelled": True}
    _wait_for(lambda: fake.closed_early)
    rest = parse_events(resume(rgw, stream_id, first[-1].seq).content)
    assert rest[-1].data == b"[DONE]"
    frame = rest[-2].chunk()
    assert frame["error"]["code"] == "stream_cancelled"
    assert frame["choices"][0]["finish_reason"] == "error"
    again = httpx.delete(f"{rgw}/v1/chat/completions/{stream_id}", timeout=10)
    assert again.json()["cancelled"] is False
    assert httpx.delete(f"{rgw}/v1/chat/completions/rs_{'C' * 24}",
                        timeout=10).status_code == 404


def test_generation_goes_on_without_a_reader_until_the_grace_runs_out(
        rgw: str, fake: FakeOpenAIUpstream, caplog: pytest.LogCaptureFixture) -> None:
    fake.script = Script(texts=WORDS * 10, gap_s=0.02)  # 8 s if never stopped
    caplog.set_level("INFO", logger="sluicegate.usage")
    started = time.monotonic()
    stream_id, first = read_until(rgw, body(), 2)
    _wait_for(lambda: fake.closed_early, timeout=6)
    stopped = time.monotonic() - started
    assert 0.5 < stopped < 4, f"stopped after {stopped:.1f} s, grace 0.6 s"
    rest = parse_events(resume(rgw, stream_id, first[-1].seq).content)
    assert len(rest) > 5, "generation went on after the client left"
    assert rest[-2].chunk()["error"]["code"] == "no_reader"
    lines = [orjson.loads(r.getMessage()[6:]) for r in caplog.records
             if r.name == "sluicegate.usage" and stream_id in r.getMessage()]
    assert lines and lines[0]["outcome"] == "cancelled"
    assert lines[0]["stream_id"] == stream_id
    assert lines[0]["usage"]["completion_tokens"] > 0


def test_a_reader_keeps_generation_going_past_the_grace(rgw: str,
                                                        fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=WORDS, gap_s=0.04)  # 1.6 s, longer than the 0.6 s grace
    stream_id, first = read_until(rgw, body(), 2)
    rest = parse_events(resume(rgw, stream_id, first[-1].seq).content)
    assert text_of(first + rest) == "".join(WORDS)
    assert rest[-1].data == b"[DONE]"


def test_a_huge_answer_keeps_the_log_under_its_cap(upstream: FakeOpenAIUpstream,
                                                    fake: FakeOpenAIUpstream) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    config = mock_config(upstream.base_url)
    config.resumable.max_bytes = 256 * 1024
    server, gateway = start_gateway(config)
    try:
        fake.script = Script(texts=["x" * 4000] * 1000)  # 4 MB of content
        whole = httpx.post(server.url + "/v1/chat/completions", json=body(), timeout=60)
        stream_id = whole.headers["x-sluicegate-stream-id"]
        assert len(whole.content) > 4_000_000
        from sluicegate.resume.log import StreamKeys

        info = _log_info(server, gateway, StreamKeys.of(stream_id).log)
        assert info is not None and info.bytes <= 256 * 1024 and info.trimmed_through > 0
        expired = resume(server.url, stream_id, 1)
        assert expired.status_code == 410
        assert expired.json()["error"]["code"] == "stream_events_expired"
        tail = parse_events(resume(server.url, stream_id, info.trimmed_through).content)
        assert tail[-1].data == b"[DONE]"
    finally:
        server.stop()
        mp.undo()


def _log_info(server: ServerThread, gateway: Gateway, key: str) -> LogInfo | None:
    future = asyncio.run_coroutine_threadsafe(gateway.state.log_info(key), server.loop)
    return future.result(10)


def test_an_unreachable_state_refuses_resumable_streams_only(
        upstream: FakeOpenAIUpstream, fake: FakeOpenAIUpstream) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    config: GatewayConfig = mock_config(upstream.base_url)
    config.state.backend = "redis"
    config.state.url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    server, _ = start_gateway(config)
    try:
        started = time.monotonic()
        refused = httpx.post(server.url + "/v1/chat/completions", json=body(), timeout=10)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "state_unavailable"
        assert time.monotonic() - started < 5
        plain = httpx.post(server.url + "/v1/chat/completions",
                           json={"model": "mock/x", "messages": MESSAGES, "stream": True},
                           timeout=10)
        assert plain.status_code == 200 and plain.content.endswith(b"data: [DONE]\n\n")
    finally:
        server.stop()
        mp.undo()


def test_a_deployment_or_the_server_can_make_streams_resumable(
        upstream: FakeOpenAIUpstream, fake: FakeOpenAIUpstream) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    config = mock_config(upstream.base_url)
    config.models[0].resumable = True
    server, _ = start_gateway(config)
    try:
        plain = {"model": "mock/x", "messages": MESSAGES, "stream": True}
        assert "x-sluicegate-stream-id" in httpx.post(
            server.url + "/v1/chat/completions", json=plain, timeout=10).headers
        opted_out = {**plain, "stream_options": {"resumable": False}}
        assert "x-sluicegate-stream-id" not in httpx.post(
            server.url + "/v1/chat/completions", json=opted_out, timeout=10).headers
        other = {**plain, "model": "fixed"}
        assert "x-sluicegate-stream-id" not in httpx.post(
            server.url + "/v1/chat/completions", json=other, timeout=10).headers
    finally:
        server.stop()
        mp.undo()
