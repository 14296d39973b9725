"""The OpenAI-compatible provider, against a faithful fake upstream on loopback."""

from __future__ import annotations

import itertools
import socket
import time

import httpx
import openai
import orjson
import pytest

from sluicegate.server import Gateway

from .conftest import MOCK_KEY
from .fakes import FakeOpenAIUpstream, Script, ServerThread

Gw = tuple[ServerThread, Gateway]
MESSAGES = [{"role": "user", "content": "hello there"}]


def _client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_stream_passthrough_rewrites_only_id_and_model(mock_gateway: Gw,
                                                       fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway
    chunks = list(_client(server).chat.completions.create(
        model="mock/gpt-test", messages=MESSAGES, stream=True, temperature=0.3,
        extra_body={"custom_field": {"kept": True}}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, world!"
    assert {c.model for c in chunks} == {"mock/gpt-test"}
    assert len({c.id for c in chunks}) == 1 and chunks[0].id != "upstream-id-1"
    assert chunks[0].system_fingerprint == "fp_fake"  # untouched fields pass through
    assert all(c.usage is None for c in chunks), "usage was not asked for"
    received = fake.received[-1]
    assert received.path == "/v1/chat/completions"
    assert received.body["model"] == "gpt-test"  # the pattern's matched suffix
    assert received.body["stream"] is True
    assert received.body["stream_options"] == {"include_usage": True}
    assert received.body["temperature"] == 0.3
    assert received.body["custom_field"] == {"kept": True}
    assert received.headers["Authorization"] == f"Bearer {MOCK_KEY}"


def test_include_usage_passes_upstream_usage(mock_gateway: Gw, fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway
    chunks = list(_client(server).chat.completions.create(
        model="fast", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert fake.received[-1].body["model"] == "upstream-fixed"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 11 and chunks[-1].usage.completion_tokens == 4
    assert chunks[-1].model == "fast"


def test_missing_upstream_usage_is_estimated(mock_gateway: Gw, fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway
    fake.script = Script(texts=["Hello", ",", " world", "!"] * 3, send_usage=False)
    chunks = list(_client(server).chat.completions.create(
        model="mock/m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    # Counted with tiktoken's cl100k_base (offline), not 4 characters a token (39 chars → 10).
    assert usage.completion_tokens == 12  # "Hello, world!" is 4 tokens
    assert usage.prompt_tokens == 2  # "hello there"
    assert (usage.model_extra or {}).get("estimated") is True


def test_n2_interleaved_passthrough(mock_gateway: Gw, fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway
    chunks = list(_client(server).chat.completions.create(
        model="mock/m", messages=MESSAGES, stream=True, n=2))
    for index in (0, 1):
        own = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == index]
        assert own[0].delta.role == "assistant"
        assert "".join(ch.delta.content or "" for ch in own) == "Hello, world!"
        assert own[-1].finish_reason == "stop"
    indexes = [c.choices[0].index for c in chunks if c.choices]
    assert indexes[:4] == [0, 1, 0, 1]


def test_non_stream_accumulates(mock_gateway: Gw, fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway
    completion = _client(server).chat.completions.create(model="mock/m", messages=MESSAGES, n=2)
    assert completion.object == "chat.completion"
    assert [c.message.content for c in completion.choices] == ["Hello, world!"] * 2
    assert completion.usage is not None and completion.usage.total_tokens == 19
    assert fake.received[-1].body["stream"] is True


def test_legacy_completions_passthrough(mock_gateway: Gw, fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway
    chunks = list(_client(server).completions.create(model="mock/text-model", prompt="Say hi",
                                                     stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello, world!"
    assert fake.received[-1].path == "/v1/completions"
    assert all(c.object == "text_completion" and c.model == "mock/text-model" for c in chunks)


def test_midstream_error_raises_after_tokens(mock_gateway: Gw, fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway
    fake.script = Script(texts=["one", " two", " three"], error_after=2)
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in _client(server).chat.completions.create(model="mock/m", messages=MESSAGES,
                                                             stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["one", " two"]
    assert "Provider disconnected" in str(info.value)


def test_upstream_dropping_mid_stream_gives_error_frame(mock_gateway: Gw,
                                                        fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway
    fake.script = Script(texts=["a", "b", "c"], die_after=2)
    r = httpx.post(server.url + "/v1/chat/completions",
                   json={"model": "mock/m", "messages": MESSAGES, "stream": True})
    assert r.status_code == 200
    events = [e for e in r.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    last = orjson.loads(events[-2][len(b"data: "):])
    assert last["error"]["type"] == "server_error"
    assert last["choices"][0]["finish_reason"] == "error"
    contents = [orjson.loads(e[6:])["choices"][0]["delta"].get("content") for e in events[:-2]]
    assert [c for c in contents if c] == ["a", "b"]


def test_wire_bytes_are_spec_exact(mock_gateway: Gw, fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway
    with httpx.stream("POST", server.url + "/v1/chat/completions",
                      json={"model": "mock/m", "messages": MESSAGES, "stream": True,
                            "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        assert "content-length" not in r.headers
        assert "content-encoding" not in r.headers
        body = r.read()
    assert not body.startswith(b"\xef\xbb\xbf")
    assert body.endswith(b"\n\ndata: [DONE]\n\n")
    events = body.split(b"\n\n")
    assert events[-1] == b""
    for event in events[:-1]:
        assert event.startswith(b"data: "), event
        assert b"\n" not in event  # one data line per event, no id:/event:/retry: lines
        payload = event[6:]
        assert payload
        if payload != b"[DONE]":
            orjson.loads(payload)


def test_events_are_flushed_as_produced(mock_gateway: Gw, fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway
    fake.script = Script(texts=["a", "b", "c", "d"], gap_s=0.15)
    arrivals: list[float] = []
    for chunk in _client(server).chat.completions.create(model="mock/m", messages=MESSAGES,
                                                         stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) == 4
    assert all(g > 0.1 for g in gaps), gaps  # each chunk came when the upstream sent it


def test_disconnect_closes_upstream_connection(mock_gateway: Gw,
                                               fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway
    fake.script = Script(texts=[f"t{i} " for i in range(200)], gap_s=0.05)
    body = orjson.dumps({"model": "mock/m", "messages": MESSAGES, "stream": True})
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    seen = b""
    while seen.count(b"data: ") < 4:
        seen += sock.recv(65536)
    closed_at = time.monotonic()
    sock.close()
    deadline = closed_at + 5
    while not fake.closed_early and time.monotonic() < deadline:
        time.sleep(0.005)
    assert fake.closed_early, "the upstream never saw the gateway close its connection"
    delay = fake.closed_early[0] - closed_at
    assert delay < 1.0, f"upstream closed {delay * 1000:.0f} ms after the client left"


async def test_async_sdk_stream(mock_gateway: Gw, fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(model="mock/m", messages=MESSAGES,
                                                  stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    await client.close()
    assert text == "Hello, world!"


def test_sdk_stream_helper(mock_gateway: Gw, fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway
    with _client(server).chat.completions.stream(model="mock/m", messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Hello, world!"
    assert final.choices[0].finish_reason == "stop"


def test_metrics_count_requests_ttft_and_rejections(mock_gateway: Gw,
                                                     fake: FakeOpenAIUpstream) -> None:
    server, _ = mock_gateway

    def sample(text: str, series: str) -> float:
        """The value of one series (name plus labels, exactly as exposed), 0 if absent."""
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = httpx.get(server.url + "/metrics").text
    list(_client(server).chat.completions.create(model="mock/metrics-test", messages=MESSAGES,
                                                 stream=True))
    httpx.post(server.url + "/v1/chat/completions", json={"model": "nope", "messages": MESSAGES})
    # Labels are configured names: the deployment "mock/*", never the client's string.
    done = ('sluicegate_requests_total{deployment="mock/*",outcome="completed",'
            'provider="mock/*"}')
    # Accounting runs in the handler's cleanup, just after the client has read [DONE].
    deadline = time.monotonic() + 5
    while True:
        r = httpx.get(server.url + "/metrics")
        after = r.text
        settled = sample(after, "sluicegate_streams_in_flight") == 0  # earlier tests' too
        if (sample(after, done) > sample(before, done) and settled) or \
                time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert sample(after, done) == sample(before, done) + 1
    ttft = 'sluicegate_ttft_seconds_count{deployment="mock/*"}'
    assert sample(after, ttft) == sample(before, ttft) + 1
    assert "metrics-test" not in after
    rejected = 'sluicegate_rejected_requests_total{status="404"}'
    assert sample(after, rejected) == sample(before, rejected) + 1
    assert sample(after, "sluicegate_streams_in_flight") == 0
