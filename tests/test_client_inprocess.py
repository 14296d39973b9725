"""The SDK in-process (the gateway's router, no HTTP hop): in front of the fake upstream, and
on the real embedded model (small ``max_tokens``). Sync and async (the ``api`` fixture)."""

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
from .client_modes import Api
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


def test_in_process_stream(api: Api, config: GatewayConfig, fake: FakeOpenAIUpstream) -> None:
    with api.open(api.Client.in_process(config)) as client:
        assert client.is_in_process
        with api.open(client.chat.stream(model="mock/gpt-test", messages=MESSAGES, n=2)) as s:
            chunks = api.list(s)
            completion = api.run(s.final())
        assert {c.model for c in chunks} == {"mock/gpt-test"}
        assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
        assert [c.message.content for c in completion.choices] == [TEXT, TEXT]
        assert s.usage is not None and s.usage.completion_tokens == 8
        stats = s.stats
        assert (stats.provider, stats.model, stats.attempts) == ("mock/*", "gpt-test", 1)
        assert stats.ttft_ms is not None and stats.tokens == 8
        assert fake.received[-1].headers["Authorization"] == f"Bearer {MOCK_KEY}"
        assert fake.received[-1].body["model"] == "gpt-test"
        s = client.chat.stream(model="fast", messages=MESSAGES)
        assert api.list(s.text_stream) == ["Hello", ",", " world", "!"]
        assert s.stats.model == "upstream-fixed" and s.stats.provider == "fixed"
        completion = api.run(client.chat.create(model="mock/x", messages=MESSAGES))
        assert completion.choices[0].message.content == TEXT
        assert completion.usage is not None and completion.usage.total_tokens == 15
        text = api.run(client.completions.stream(model="mock/x", prompt="hi").final())
        assert text.choices[0].text == TEXT


def test_in_process_tool_calls_and_create(api: Api, config: GatewayConfig,
                                          fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(raw_chunks=TOOL_CHUNKS)
    with api.open(api.Client.in_process(config)) as client:
        check_tool_calls(api.run(client.chat.stream(model="mock/t", messages=MESSAGES).final()))
        check_tool_calls(api.run(client.chat.create(model="mock/t", messages=MESSAGES)))


def test_in_process_errors(api: Api, config: GatewayConfig, fake: FakeOpenAIUpstream) -> None:
    with api.open(api.Client.in_process(config)) as client:
        with pytest.raises(NotFoundError) as info:
            api.run(client.chat.stream(model="nope", messages=MESSAGES).final())
        assert info.value.status_code == 404 and info.value.code == "model_not_found"
        with pytest.raises(NotFoundError):
            api.run(client.chat.create(model="nope", messages=MESSAGES))
        with pytest.raises(BadRequestError):
            api.run(client.chat.stream(model="mock/x", messages=[]).final())
        fake.queue = [Script(status=429, error_headers={"Retry-After": "1"})]
        with pytest.raises(RateLimitError) as rate:
            api.run(client.chat.stream(model="mock/x", messages=MESSAGES).final())
        assert rate.value.retry_after == 1.0
        fake.script = Script(error_after=2)
        with pytest.raises(StreamError) as stream_error:
            api.run(client.chat.stream(model="mock/x", messages=MESSAGES).final())
        assert stream_error.value.partial_text == "Hello,"
        fake.script = Script(error_after=1)
        with pytest.raises(StreamError) as early:
            api.list(client.chat.stream(model="mock/x", messages=MESSAGES))
        assert early.value.partial_text == "Hello"


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


def test_embedded_model(api: Api) -> None:
    with api.open(api.Client.in_process(_embedded_config())) as client:
        s = client.chat.stream(messages=[{"role": "user", "content": "Say hello."}],
                               max_tokens=8, temperature=0)
        texts = api.list(s.text_stream)
        assert "".join(texts).strip()
        usage = s.usage
        assert usage is not None and not usage.estimated and 0 < usage.completion_tokens <= 8
        assert s.stats.provider == "local" and s.stats.model == "gemma-3-270m"
        assert s.stats.tokens == usage.completion_tokens
        completion = api.run(client.completions.stream(prompt="The sky is", max_tokens=4).final())
        assert completion.choices[0].finish_reason in ("length", "stop")
        chat = api.run(client.chat.create(
            model="default", messages=[{"role": "user", "content": "Hi"}], max_tokens=6))
    assert chat.choices[0].message.content
    assert chat.usage is not None and chat.usage.completion_tokens <= 6
