"""The SDK core against real sockets: the gateway in front of the fake upstream, and the fake
upstream directly as a plain OpenAI-compatible server. Sync and async for each feature."""

from __future__ import annotations

import asyncio

import pytest

from sluicegate.client import (
    AsyncChatStream,
    AsyncClient,
    ChatCompletion,
    ChatCompletionChunk,
    ChatStream,
    Client,
    CompletionChunk,
    CompletionUsage,
    StreamClosedError,
    StreamStats,
)

from .client_helpers import MESSAGES, TOOL_CHUNKS, check_tool_calls, wait_until
from .fakes import FakeOpenAIUpstream, Script, ServerThread

TEXT = "Hello, world!"


@pytest.fixture(params=["gateway", "direct"])
def target(request: pytest.FixtureRequest, fake: FakeOpenAIUpstream) -> tuple[str, str]:
    """(base_url, model): through the gateway, or straight to the fake upstream."""
    if request.param == "gateway":
        server: ServerThread = request.getfixturevalue("gw")
        return server.url + "/v1", "mock/gpt-test"
    return fake.base_url, "gpt-test"


def _check_chunks(chunks: list[ChatCompletionChunk], model: str) -> None:
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert {c.model for c in chunks} == {model}


def _check_stats(stats: StreamStats, via_gateway: bool) -> None:
    assert stats.ttft_ms is not None and 0 < stats.ttft_ms < 5000
    assert stats.tokens == 4  # the fake's usage.completion_tokens
    assert stats.characters == len(TEXT)
    assert stats.tokens_per_s is not None and stats.tokens_per_s > 0
    assert stats.duration_s * 1000 >= stats.ttft_ms
    assert stats.finish_reason == "stop"
    if via_gateway:
        assert (stats.provider, stats.model, stats.attempts) == ("mock/*", "gpt-test", 1)
    else:
        assert stats.provider is None and stats.model == "gpt-test"


# -- streaming, typed chunks, usage, stats --------------------------------------------------


def test_stream_sync(target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    with Client(base_url) as client, client.chat.stream(model=model, messages=MESSAGES) as s:
        assert isinstance(s, ChatStream)
        chunks = list(s)
        _check_chunks(chunks, model)
        assert s.usage == CompletionUsage(prompt_tokens=11, completion_tokens=4, total_tokens=15)
        _check_stats(s.stats, "mock" in model)
    body = fake.received[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_stream_async(target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    async with AsyncClient(base_url) as client:
        stream = client.chat.stream(model=model, messages=MESSAGES)
        assert isinstance(stream, AsyncChatStream)
        async with stream as s:
            chunks = [c async for c in s]
        _check_chunks(chunks, model)
        assert s.usage is not None and s.usage.total_tokens == 15
        _check_stats(s.stats, "mock" in model)


def test_text_stream_and_final_sync(target: tuple[str, str]) -> None:
    base_url, model = target
    with Client(base_url) as client:
        s = client.chat.stream(model=model, messages=MESSAGES)
        assert list(s.text_stream) == ["Hello", ",", " world", "!"]
        completion = s.final()  # after the end: built from what was read
        assert isinstance(completion, ChatCompletion)
        assert completion.choices[0].message.content == TEXT
        assert completion.usage is not None and completion.usage.completion_tokens == 4


async def test_text_stream_and_final_async(target: tuple[str, str]) -> None:
    base_url, model = target
    async with AsyncClient(base_url) as client:
        s = client.chat.stream(model=model, messages=MESSAGES)
        assert [t async for t in s.text_stream] == ["Hello", ",", " world", "!"]
        completion = await s.final()
        assert completion.choices[0].message.content == TEXT


def test_final_n2_sync(target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.script = Script(texts=["a", "b"])
    with Client(base_url) as client:
        s = client.chat.stream(model=model, messages=MESSAGES, n=2)
        first = s.recv()  # final() reads the rest, including what recv() already returned
        assert first.choices[0].delta.role == "assistant"
        completion = s.final()
    assert [c.index for c in completion.choices] == [0, 1]
    assert [c.message.content for c in completion.choices] == ["ab", "ab"]
    assert [c.finish_reason for c in completion.choices] == ["stop", "stop"]
    assert completion.usage is not None and completion.usage.completion_tokens == 4


async def test_final_n2_async(target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.script = Script(texts=["a", "b"])
    async with AsyncClient(base_url) as client:
        completion = await client.chat.stream(model=model, messages=MESSAGES, n=2).final()
    assert [c.message.content for c in completion.choices] == ["ab", "ab"]


def test_final_tool_calls_sync(target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.script = Script(raw_chunks=TOOL_CHUNKS)
    with Client(base_url) as client:
        s = client.chat.stream(model=model, messages=MESSAGES)
        check_tool_calls(s.final())
        assert s.stats.finish_reason == "tool_calls"


async def test_final_tool_calls_async(target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.script = Script(raw_chunks=TOOL_CHUNKS)
    async with AsyncClient(base_url) as client:
        check_tool_calls(await client.chat.stream(model=model, messages=MESSAGES).final())


# -- recv, close, break, cancellation, misuse -----------------------------------------------


def test_recv_sync(target: tuple[str, str]) -> None:
    base_url, model = target
    with Client(base_url) as client, client.chat.stream(model=model, messages=MESSAGES) as s:
        chunks = []
        while True:
            try:
                chunks.append(s.recv())
            except StopIteration:
                break
        assert len(chunks) == 7  # role, 4 contents, finish, usage
        with pytest.raises(StopIteration):
            s.recv()


async def test_recv_async(target: tuple[str, str]) -> None:
    base_url, model = target
    async with AsyncClient(base_url) as client, client.chat.stream(
            model=model, messages=MESSAGES) as s:
        chunks = []
        while True:
            try:
                chunks.append(await s.recv())
            except StopAsyncIteration:
                break
        assert len(chunks) == 7
        with pytest.raises(StopAsyncIteration):
            await s.recv()


def test_close_and_break_close_the_connection_sync(target: tuple[str, str],
                                                   fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.script = Script(texts=["x"] * 200, gap_s=0.02)
    with Client(base_url) as client:
        s = client.chat.stream(model=model, messages=MESSAGES)
        s.recv()
        s.recv()
        s.close()
        s.close()  # idempotent
        assert s.closed
        assert wait_until(lambda: len(fake.closed_early) == 1)
        with pytest.raises(StreamClosedError):
            s.recv()
        with pytest.raises(StreamClosedError):
            iter(s)
        with pytest.raises(StreamClosedError):
            s.final()
        for i, _ in enumerate(client.chat.stream(model=model, messages=MESSAGES)):
            if i == 3:
                break
        assert wait_until(lambda: len(fake.closed_early) == 2)


async def test_close_and_break_close_the_connection_async(target: tuple[str, str],
                                                          fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.script = Script(texts=["x"] * 200, gap_s=0.02)
    async with AsyncClient(base_url) as client:
        s = client.chat.stream(model=model, messages=MESSAGES)
        await s.recv()
        await s.aclose()
        await s.aclose()
        assert wait_until(lambda: len(fake.closed_early) == 1)
        with pytest.raises(StreamClosedError):
            await s.recv()
        with pytest.raises(StreamClosedError):
            s.text_stream  # noqa: B018
        i = 0
        async for _ in client.chat.stream(model=model, messages=MESSAGES):
            i += 1
            if i == 3:
                break
        for _ in range(100):  # the abandoned async generator is closed by the loop
            await asyncio.sleep(0.02)
            if len(fake.closed_early) == 2:
                break
        assert len(fake.closed_early) == 2
        async with client.chat.stream(model=model, messages=MESSAGES) as s2:
            await s2.recv()
        assert s2.closed
        with pytest.raises(StreamClosedError):
            await s2.final()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if len(fake.closed_early) == 3:
                break
        assert len(fake.closed_early) == 3


async def test_task_cancellation_closes_the_connection(target: tuple[str, str],
                                                       fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.script = Script(texts=["x"] * 200, gap_s=0.02)
    got_one = asyncio.Event()
    async with AsyncClient(base_url) as client:
        stream = client.chat.stream(model=model, messages=MESSAGES)

        async def consume() -> None:
            async for _ in stream:
                got_one.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_one.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            await asyncio.sleep(0.02)
            if fake.closed_early:
                break
        assert len(fake.closed_early) == 1
        with pytest.raises(StreamClosedError):
            await stream.recv()


# -- non-streaming, text completions, requests --------------------------------------------


def test_create_sync(target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    if "mock" not in model:
        pytest.skip("the fake upstream only streams")
    with Client(base_url) as client:
        completion = client.chat.create(model=model, messages=MESSAGES, temperature=0.2)
    assert completion.choices[0].message.content == TEXT
    assert completion.model == model
    assert fake.received[-1].body["temperature"] == 0.2


async def test_create_async(target: tuple[str, str]) -> None:
    base_url, model = target
    if "mock" not in model:
        pytest.skip("the fake upstream only streams")
    async with AsyncClient(base_url) as client:
        completion = await client.chat.create(model=model, messages=MESSAGES)
    assert completion.choices[0].message.content == TEXT


def test_completions_stream_sync(target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    with Client(base_url) as client:
        s = client.completions.stream(model=model, prompt="Say hi", max_tokens=5)
        chunks = list(s)
        assert all(isinstance(c, CompletionChunk) for c in chunks)
        assert "".join(c.choices[0].text for c in chunks if c.choices) == TEXT
        assert s.usage is not None and s.usage.completion_tokens == 4
        assert s.final().choices[0].text == TEXT
    assert fake.received[-1].path == "/v1/completions"
    assert fake.received[-1].body["prompt"] == "Say hi"


async def test_completions_stream_async(target: tuple[str, str]) -> None:
    base_url, model = target
    async with AsyncClient(base_url) as client:
        s = client.completions.stream(model=model, prompt="Say hi")
        assert [t async for t in s.text_stream] == ["Hello", ",", " world", "!"]
        assert (await s.final()).choices[0].text == TEXT


def test_request_object_and_fallbacks_sync(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    from sluicegate.client import ChatRequestBuilder

    request = (ChatRequestBuilder().with_model("mock/gpt-test").with_text("hi")
               .with_max_tokens(7).build())
    with Client(gw.url + "/v1") as client:
        assert client.chat.stream(request, temperature=0.5).final().choices[0].message.content \
            == TEXT
        body = fake.received[-1].body
        assert body["max_tokens"] == 7 and body["temperature"] == 0.5
        assert body["messages"] == [{"role": "user", "content": "hi"}]
        client.chat.stream(model="mock/a", messages=MESSAGES, fallbacks=["mock/b"]).final()
    assert fake.received[-1].body["model"] == "a"


async def test_request_object_and_fallbacks_async(fake: FakeOpenAIUpstream) -> None:
    from sluicegate.client import ChatRequestBuilder

    request = ChatRequestBuilder().with_model("m").with_text("hi").build()
    async with AsyncClient(fake.base_url) as client:
        await client.chat.stream(request, fallbacks=["n"]).final()
    body = fake.received[-1].body
    assert body["models"] == ["m", "n"] and body["stream"] is True


# -- parity ---------------------------------------------------------------------------------


def _public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def test_sync_async_parity() -> None:
    from sluicegate.client import AsyncCompletionStream, CompletionStream
    from sluicegate.client._resources import AsyncChat, AsyncCompletions, Chat, Completions

    def mapped(names: set[str]) -> set[str]:
        return {"close" if n == "aclose" else n for n in names}

    assert mapped(_public(AsyncClient)) == _public(Client)
    assert mapped(_public(AsyncChatStream)) == _public(ChatStream)
    assert mapped(_public(AsyncCompletionStream)) == _public(CompletionStream)
    assert _public(AsyncChat) == _public(Chat)
    assert _public(AsyncCompletions) == _public(Completions)
    for cls in (ChatStream, AsyncChatStream):
        assert {"text_stream", "buffered_text", "recv", "final", "usage", "stats"} <= _public(cls)
    sync_client, async_client = Client("http://127.0.0.1:9/v1"), AsyncClient("http://x/v1")
    assert _public(sync_client) - {"close"} == _public(async_client) - {"aclose"}
    sync_client.close()


def test_dropped_sync_stream_releases_its_connection(fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 200, gap_s=0.02)
    with Client(fake.base_url) as client:
        s = client.chat.stream(model="m", messages=MESSAGES)
        s.recv()
        del s
        assert wait_until(lambda: fake.closed_early)
