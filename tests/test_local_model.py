"""End to end on the real embedded model (Gemma 3 270M), through the official openai SDK."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import httpx
import openai
import orjson
import pytest

from sluicegate.config import GatewayConfig
from sluicegate.local.engine import LocalEngine
from sluicegate.server import Gateway

from .fakes import ServerThread, start_gateway

MODEL = "local/gemma-3-270m"
MESSAGES = [{"role": "user", "content": "Tell me a short story about a cat."}]


def _client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_sync_stream_arrives_incrementally(local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, _ = local_gateway
    stream = _client(server).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, max_tokens=24, temperature=0.8, seed=7)
    arrivals: list[tuple[float, str]] = []
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append((time.perf_counter(), chunk.choices[0].delta.content))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(arrivals) >= 2
    times = [t for t, _ in arrivals]
    assert len(set(times)) == len(times), "content chunks must arrive at distinct times"
    # Tokens come from a model generating ~tens of tokens/s: the stream spans real time.
    assert times[-1] - times[0] > 0.01
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.created for c in chunks} == {chunks[0].created}
    assert all(c.model == MODEL for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


async def test_async_stream_with_usage(local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, _ = local_gateway
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(
        model="default", messages=MESSAGES, stream=True, max_tokens=8,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    await client.close()
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1]
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens > 10
    assert 1 <= usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert chunks[0].model == "default"


def test_max_tokens_gives_length(local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, _ = local_gateway
    stream = _client(server).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, max_tokens=5, temperature=0,
        stop=["\n\n\n\n"], stream_options={"include_usage": True})
    chunks = list(stream)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and
              c.choices[0].finish_reason]
    assert finish == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_n2_gives_both_indexes(local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, _ = local_gateway
    stream = _client(server).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, max_tokens=6, n=2, seed=3)
    chunks = list(stream)
    for index in (0, 1):
        own = [c for c in chunks if c.choices and c.choices[0].index == index]
        assert own[0].choices[0].delta.role == "assistant"
        assert own[-1].choices[0].finish_reason in ("stop", "length")
        assert sum(1 for c in own if c.choices[0].finish_reason) == 1
    assert all(len(c.choices) == 1 for c in chunks)


def test_legacy_completions_stream(local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, _ = local_gateway
    stream = _client(server).completions.create(
        model=MODEL, prompt="Question: What is the capital of France?\nAnswer:", stream=True,
        max_tokens=8, temperature=0)
    chunks = list(stream)
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices and c.choices[0].text]) >= 2
    assert "Paris" in text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_non_stream_chat_and_text(local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, _ = local_gateway
    client = _client(server)
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16, temperature=0)
    assert chat.object == "chat.completion"
    content = chat.choices[0].message.content or ""
    assert "Paris" in content
    assert content == content.strip(), "the answer is trimmed"
    assert "User:" not in content and "Assistant:" not in content
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage is not None and chat.usage.completion_tokens >= 1
    text = client.completions.create(model=MODEL, prompt="One, two, three,", max_tokens=4,
                                     temperature=0)
    assert text.object == "text_completion"
    assert text.choices[0].text
    assert text.usage is not None and text.usage.completion_tokens == 4


def test_seed_and_stop_are_honoured(local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, _ = local_gateway
    client = _client(server)
    kwargs = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 12,
              "temperature": 1.0, "seed": 1234}
    first = client.completions.create(**kwargs).choices[0].text  # type: ignore[call-overload]
    second = client.completions.create(**kwargs).choices[0].text  # type: ignore[call-overload]
    assert first == second
    words = first.split()
    assert len(words) >= 2
    stop_word = words[1]
    stopped = client.completions.create(**kwargs, stop=[stop_word])  # type: ignore[call-overload]
    assert stop_word not in stopped.choices[0].text
    assert stopped.choices[0].finish_reason == "stop"


def test_always_stream_alias(local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, _ = local_gateway
    with httpx.stream("POST", server.url + "/api/v1/chat/completions/stream",
                      json={"model": MODEL, "messages": MESSAGES, "max_tokens": 4}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        body = r.read()
    assert body.endswith(b"data: [DONE]\n\n")


def test_disconnect_stops_generation(local_gateway: tuple[ServerThread, Gateway],
                                     caplog: pytest.LogCaptureFixture) -> None:
    server, gateway = local_gateway
    engine = gateway.router.engines["local/gemma-3-270m"]
    caplog.set_level(logging.INFO, logger="sluicegate.usage")
    before = engine.tokens_generated
    body = orjson.dumps({"model": MODEL, "prompt": "Once upon a time, in a small village,",
                         "max_tokens": 400, "stream": True, "seed": 5})
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    received = b""
    while received.count(b'"text":"') < 3:
        data = sock.recv(65536)
        assert data and b"[DONE]" not in data, "the stream ended before the test disconnected"
        received += data
    sock.close()
    at_close = engine.tokens_generated
    # The socket is closed here. Generation must stop within a token or two, and 100 ms.
    deadline = time.monotonic() + 10
    while engine._admitted and time.monotonic() < deadline:
        time.sleep(0.002)
    assert engine._admitted == 0, "the job is still running after the client left"
    # Within a token or two of the close (counted, not timed: these machines are shared).
    time.sleep(0.3)
    assert engine.tokens_generated - at_close <= 2
    assert engine.tokens_generated - before < 50  # far from the 400 it was asked for
    # The cancelled stream's usage is still accounted, counted by the tokenizer.
    deadline = time.monotonic() + 5
    while True:
        records = [orjson.loads(r.getMessage().partition(" ")[2]) for r in caplog.records
                   if r.name == "sluicegate.usage"]
        cancelled = [r for r in records if r["outcome"] == "cancelled"]
        if cancelled:
            break
        assert time.monotonic() < deadline, f"the cancelled stream was never accounted: {records}"
        time.sleep(0.01)
    usage = cancelled[0]["usage"]
    assert "estimated" not in usage
    assert abs(usage["completion_tokens"] - (engine.tokens_generated - before)) <= 1
    assert usage["prompt_tokens"] > 5


def test_queue_full_gives_429() -> None:
    config = GatewayConfig()
    config.local.parallel = 1  # the single-sequence engine (batched: test_local_batch.py)
    config.local.max_queue = 0
    config.local.n_ctx = 1024
    server, _ = start_gateway(config)
    try:
        body = {"model": MODEL, "prompt": "Once upon a time, in a small village,",
                "max_tokens": 300, "stream": True, "seed": 5}
        with httpx.stream("POST", server.url + "/v1/completions", json=body) as busy:
            assert busy.status_code == 200
            lines = busy.iter_lines()  # kept referenced: closing it would close the stream
            next(lines)
            r = httpx.post(server.url + "/v1/completions", json=body)
            assert r.status_code == 429
            assert int(r.headers["Retry-After"]) >= 1
            error = r.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["code"] == "rate_limit_exceeded"
            with pytest.raises(openai.RateLimitError):
                openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) \
                    .chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
    finally:
        server.stop()


async def test_async_cancel_stops_generation(local_gateway: tuple[ServerThread, Gateway]) -> (
    None
):
    server, gateway = local_gateway
    engine = gateway.router.engines["local/gemma-3-270m"]
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    received: list[str] = []

    async def consume() -> None:
        stream = await client.completions.create(
            model=MODEL, prompt="Once upon a time, in a small village,", stream=True,
            max_tokens=400, seed=5)
        async for chunk in stream:
            received.append(chunk.choices[0].text if chunk.choices else "")

    before = engine.tokens_generated
    task = asyncio.create_task(consume())
    while len(received) < 3 and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    assert not task.done(), "the stream ended before it could be cancelled"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    at_cancel = engine.tokens_generated
    await client.close()
    deadline = time.monotonic() + 10
    while engine._admitted and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert engine._admitted == 0
    assert engine.tokens_generated - at_cancel <= 2
    assert engine.tokens_generated - before < 50


def test_another_gguf_path_is_served_as_its_own_model() -> None:
    from sluicegate.config import DeploymentConfig
    from sluicegate.router import embedded_model_path

    config = GatewayConfig(
        embedded_model=False,
        models=[DeploymentConfig(name="my-gguf", provider="local",
                                 model_path=embedded_model_path())],
    )
    config.local.preload = False  # loaded on first use
    config.local.n_ctx = 512
    server, gateway = start_gateway(config)
    try:
        assert not gateway.router.engines[embedded_model_path()].loaded
        models = httpx.get(server.url + "/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["my-gguf"]
        completion = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) \
            .completions.create(model="my-gguf", prompt="One, two,", max_tokens=3)
        assert completion.usage is not None and completion.usage.completion_tokens == 3
        assert gateway.router.engines[embedded_model_path()].loaded
        assert httpx.post(server.url + "/v1/completions",
                          json={"model": MODEL, "prompt": "x"}).status_code == 404
    finally:
        server.stop()


@pytest.mark.parametrize(("part", "param"), [
    ({"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}},
     "messages.0.content.1"),
    ({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
     "messages.0.content.1"),
])
def test_embedded_model_is_text_only(local_gateway: tuple[ServerThread, Gateway],
                                     part: dict[str, object], param: str) -> None:
    server, _ = local_gateway
    r = httpx.post(server.url + "/v1/chat/completions", json={
        "model": "default", "stream": True,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                  part]}]}, timeout=30)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == param
    assert repr(part["type"]) in error["message"]


def test_embedded_model_rejects_tools(local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, _ = local_gateway
    r = httpx.post(server.url + "/v1/chat/completions", json={
        "model": "default", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        timeout=30)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "tools"


def _idle(engine: LocalEngine, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while engine._admitted and time.monotonic() < deadline:
        time.sleep(0.005)
    assert engine._admitted == 0, "the local job is still running"


def test_tiny_first_token_timeout_gives_504_and_stops_the_job(
        local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, gateway = local_gateway
    engine = gateway.router.engines["local/gemma-3-270m"]
    before = engine.tokens_generated
    r = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
        "model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": 300,
        "timeouts": {"first_token": 0.001}})
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "first_token_timeout"
    _idle(engine)
    time.sleep(0.2)
    assert engine.tokens_generated - before <= 4  # at most a token per attempt


def test_tiny_total_timeout_ends_the_stream_with_the_error_frame(
        local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, gateway = local_gateway
    engine = gateway.router.engines["local/gemma-3-270m"]
    seen: list[str] = []
    chunks = []
    stream = _client(server).completions.create(
        model=MODEL, prompt="Once upon a time, in a small village,", stream=True,
        max_tokens=400, seed=5, extra_body={"timeouts": {"total": 1.5}},
        stream_options={"include_usage": True})
    # 400 tokens take ~10 s here, so the limit falls mid-stream; on a loaded machine a single
    # token may be all that fits ("1 token").
    with stream, pytest.raises(openai.APIError, match=r"reached its time limit of 1\.5 s "
                               r"after \d+ tokens?; the stream was stopped") as info:
        for chunk in stream:
            chunks.append(chunk)
            if chunk.choices and chunk.choices[0].text:
                seen.append(chunk.choices[0].text)
    assert seen, "tokens before the timeout were delivered"
    # The usage chunk came just before the error frame, counted by the model's own tokenizer
    # (so not marked estimated), and the message names the same count.
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert "estimated" not in (usage.model_extra or {})
    assert usage.completion_tokens >= len(seen)
    plural = "" if usage.completion_tokens == 1 else "s"
    assert f"after {usage.completion_tokens} token{plural};" in str(info.value)
    at_end = engine.tokens_generated
    _idle(engine)
    time.sleep(0.2)
    assert engine.tokens_generated - at_end <= 2
