"""The SDK in-process (the gateway's router, no HTTP hop): in front of the fake upstream, and
on the real embedded model (small ``max_tokens``). Sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sluicegate.client import (
    AsyncClient,
    BadRequestError,
    Client,
    NotFoundError,
    RateLimitError,
    StreamClosedError,
    StreamError,
)
from sluicegate.config import GatewayConfig

from .client_helpers import MESSAGES, TOOL_CHUNKS, check_tool_calls, wait_until
from .conftest import MOCK_KEY, MOCK_KEY_ENV, mock_config
from .fakes import FakeOpenAIUpstream, Script

TEXT = "Hello, world!"


@pytest.fixture
def config(fake: FakeOpenAIUpstream, monkeypatch: pytest.MonkeyPatch) -> GatewayConfig:
    monkeypatch.setenv(MOCK_KEY_ENV, MOCK_KEY)
    return mock_config(fake.base_url)


@pytest.fixture
def client(config: GatewayConfig) -> Iterator[Client]:
    with Client.in_process(config) as c:
        yield c


def test_in_process_stream_sync(client: Client, fake: FakeOpenAIUpstream) -> None:
    assert client.is_in_process
    with client.chat.stream(model="mock/gpt-test", messages=MESSAGES, n=2) as s:
        chunks = list(s)
        completion = s.final()
    assert {c.model for c in chunks} == {"mock/gpt-test"}
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert [c.message.content for c in completion.choices] == [TEXT, TEXT]
    assert s.usage is not None and s.usage.completion_tokens == 8
    stats = s.stats
    assert (stats.provider, stats.model, stats.attempts) == ("mock/*", "gpt-test", 1)
    assert stats.ttft_ms is not None and stats.tokens == 8
    assert fake.received[-1].headers["Authorization"] == f"Bearer {MOCK_KEY}"
    assert fake.received[-1].body["model"] == "gpt-test"


async def test_in_process_stream_async(config: GatewayConfig) -> None:
    async with AsyncClient.in_process(config) as client:
        s = client.chat.stream(model="fast", messages=MESSAGES)
        assert [t async for t in s.text_stream] == ["Hello", ",", " world", "!"]
        assert s.stats.model == "upstream-fixed" and s.stats.provider == "fixed"
        completion = await client.chat.create(model="mock/x", messages=MESSAGES)
        assert completion.choices[0].message.content == TEXT
        assert completion.usage is not None and completion.usage.total_tokens == 15
        text = await client.completions.stream(model="mock/x", prompt="hi").final()
        assert text.choices[0].text == TEXT


def test_in_process_tool_calls_and_create_sync(client: Client,
                                               fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(raw_chunks=TOOL_CHUNKS)
    check_tool_calls(client.chat.stream(model="mock/t", messages=MESSAGES).final())
    check_tool_calls(client.chat.create(model="mock/t", messages=MESSAGES))


async def test_in_process_tool_calls_async(config: GatewayConfig,
                                           fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(raw_chunks=TOOL_CHUNKS)
    async with AsyncClient.in_process(config) as client:
        check_tool_calls(await client.chat.stream(model="mock/t", messages=MESSAGES).final())


def test_in_process_errors_sync(client: Client, fake: FakeOpenAIUpstream) -> None:
    with pytest.raises(NotFoundError) as info:
        client.chat.stream(model="nope", messages=MESSAGES).final()
    assert info.value.status_code == 404 and info.value.code == "model_not_found"
    with pytest.raises(BadRequestError):
        client.chat.stream(model="mock/x", messages=[]).final()
    fake.queue = [Script(status=429, error_headers={"Retry-After": "1"})]
    with pytest.raises(RateLimitError) as rate:
        client.chat.stream(model="mock/x", messages=MESSAGES).final()
    assert rate.value.retry_after == 1.0
    fake.script = Script(error_after=2)
    with pytest.raises(StreamError) as stream_error:
        client.chat.stream(model="mock/x", messages=MESSAGES).final()
    assert stream_error.value.partial_text == "Hello,"


async def test_in_process_errors_async(config: GatewayConfig, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(error_after=1)
    async with AsyncClient.in_process(config) as client:
        with pytest.raises(StreamError) as info:
            async for _ in client.chat.stream(model="mock/x", messages=MESSAGES):
                pass
        assert info.value.partial_text == "Hello"
        with pytest.raises(NotFoundError):
            await client.chat.create(model="nope", messages=MESSAGES)


def test_in_process_close_closes_upstream_sync(client: Client, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 200, gap_s=0.02)
    s = client.chat.stream(model="mock/x", messages=MESSAGES)
    s.recv()
    s.close()
    assert wait_until(lambda: fake.closed_early)
    with pytest.raises(StreamClosedError):
        s.recv()


async def test_in_process_cancellation_async(config: GatewayConfig,
                                             fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 200, gap_s=0.02)
    async with AsyncClient.in_process(config) as client:
        stream = client.chat.stream(model="mock/x", messages=MESSAGES)
        await stream.recv()
        task = asyncio.create_task(stream.final())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            await asyncio.sleep(0.02)
            if fake.closed_early:
                break
    assert fake.closed_early


# -- the real embedded model ----------------------------------------------------------------


def _embedded_config() -> GatewayConfig:
    config = GatewayConfig()
    config.local.n_ctx = 1024
    return config


def test_embedded_model_sync() -> None:
    with Client.in_process(_embedded_config()) as client:
        s = client.chat.stream(messages=[{"role": "user", "content": "Say hello."}],
                               max_tokens=8, temperature=0)
        texts = list(s.text_stream)
        assert "".join(texts).strip()
        usage = s.usage
        assert usage is not None and not usage.estimated and 0 < usage.completion_tokens <= 8
        assert s.stats.provider == "local" and s.stats.model == "gemma-3-270m"
        assert s.stats.tokens == usage.completion_tokens
        completion = client.completions.stream(prompt="The sky is", max_tokens=4).final()
        assert completion.choices[0].finish_reason in ("length", "stop")


async def test_embedded_model_async() -> None:
    async with AsyncClient.in_process(_embedded_config()) as client:
        completion = await client.chat.create(
            model="default", messages=[{"role": "user", "content": "Hi"}], max_tokens=6)
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens <= 6
