"""The SDK core against real sockets: the gateway in front of the fake upstream, and the fake
upstream directly as a plain OpenAI-compatible server. Each feature once with ``Client`` and
once with ``AsyncClient`` (the ``api`` fixture)."""

from __future__ import annotations

import asyncio

import httpx
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
from .client_modes import Api, MockUpstream
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


def test_stream(api: Api, target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    with api.open(api.Client(base_url)) as client:
        stream = client.chat.stream(model=model, messages=MESSAGES)
        assert isinstance(stream, AsyncChatStream if api.asynchronous else ChatStream)
        with api.open(stream) as s:
            chunks = api.list(s)
            _check_chunks(chunks, model)
            assert s.usage == CompletionUsage(prompt_tokens=11, completion_tokens=4,
                                              total_tokens=15)
            assert s.usage is not None and s.usage.total_tokens == 15
            _check_stats(s.stats, "mock" in model)
    body = fake.received[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_text_stream_and_final(api: Api, target: tuple[str, str]) -> None:
    base_url, model = target
    with api.open(api.Client(base_url)) as client:
        s = client.chat.stream(model=model, messages=MESSAGES)
        assert api.list(s.text_stream) == ["Hello", ",", " world", "!"]
        completion = api.run(s.final())  # after the end: built from what was read
        assert isinstance(completion, ChatCompletion)
        assert completion.choices[0].message.content == TEXT
        assert completion.usage is not None and completion.usage.completion_tokens == 4


def test_final_n2(api: Api, target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.script = Script(texts=["a", "b"])
    with api.open(api.Client(base_url)) as client:
        s = client.chat.stream(model=model, messages=MESSAGES, n=2)
        first = api.run(s.recv())  # final() reads the rest, including what recv() returned
        assert first.choices[0].delta.role == "assistant"
        completion = api.run(s.final())
        whole = api.run(client.chat.stream(model=model, messages=MESSAGES, n=2).final())
    for done in (completion, whole):
        assert [c.index for c in done.choices] == [0, 1]
        assert [c.message.content for c in done.choices] == ["ab", "ab"]
        assert [c.finish_reason for c in done.choices] == ["stop", "stop"]
        assert done.usage is not None and done.usage.completion_tokens == 4


def test_final_tool_calls(api: Api, target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.script = Script(raw_chunks=TOOL_CHUNKS)
    with api.open(api.Client(base_url)) as client:
        s = client.chat.stream(model=model, messages=MESSAGES)
        check_tool_calls(api.run(s.final()))
        assert s.stats.finish_reason == "tool_calls"


# -- recv, close, break, cancellation, misuse -----------------------------------------------


def test_recv(api: Api, target: tuple[str, str]) -> None:
    base_url, model = target
    with api.open(api.Client(base_url)) as client, api.open(
            client.chat.stream(model=model, messages=MESSAGES)) as s:
        chunks = []
        while True:
            try:
                chunks.append(api.run(s.recv()))
            except api.StopIteration:
                break
        assert len(chunks) == 7  # role, 4 contents, finish, usage
        with pytest.raises(api.StopIteration):
            api.run(s.recv())


def test_close_and_break_close_the_connection(api: Api, target: tuple[str, str],
                                              fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    fake.script = Script(texts=["x"] * 200, gap_s=0.02)
    with api.open(api.Client(base_url)) as client:
        s = client.chat.stream(model=model, messages=MESSAGES)
        api.run(s.recv())
        api.run(s.recv())
        api.close(s)
        api.close(s)  # idempotent
        assert s.closed
        assert api.wait_until(lambda: len(fake.closed_early) == 1)
        with pytest.raises(StreamClosedError):
            api.run(s.recv())
        with pytest.raises(StreamClosedError):
            aiter(s) if api.asynchronous else iter(s)
        with pytest.raises(StreamClosedError):
            s.text_stream  # noqa: B018
        with pytest.raises(StreamClosedError):
            api.run(s.final())
        # a break out of the loop; the abandoned (async) generator closes the stream
        api.list(client.chat.stream(model=model, messages=MESSAGES), limit=4)
        assert api.wait_until(lambda: len(fake.closed_early) == 2)
        with api.open(client.chat.stream(model=model, messages=MESSAGES)) as s2:
            api.run(s2.recv())
        assert s2.closed
        with pytest.raises(StreamClosedError):
            api.run(s2.final())
        assert api.wait_until(lambda: len(fake.closed_early) == 3)


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


def test_create(api: Api, target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    if "mock" not in model:
        pytest.skip("the fake upstream only streams")
    with api.open(api.Client(base_url)) as client:
        completion = api.run(client.chat.create(model=model, messages=MESSAGES,
                                                temperature=0.2))
    assert completion.choices[0].message.content == TEXT
    assert completion.model == model
    assert fake.received[-1].body["temperature"] == 0.2


def test_completions_stream(api: Api, target: tuple[str, str], fake: FakeOpenAIUpstream) -> None:
    base_url, model = target
    with api.open(api.Client(base_url)) as client:
        s = client.completions.stream(model=model, prompt="Say hi", max_tokens=5)
        chunks = api.list(s)
        assert all(isinstance(c, CompletionChunk) for c in chunks)
        assert "".join(c.choices[0].text for c in chunks if c.choices) == TEXT
        assert s.usage is not None and s.usage.completion_tokens == 4
        assert api.run(s.final()).choices[0].text == TEXT
        assert fake.received[-1].path == "/v1/completions"
        assert fake.received[-1].body["prompt"] == "Say hi"
        s = client.completions.stream(model=model, prompt="Say hi")
        assert api.list(s.text_stream) == ["Hello", ",", " world", "!"]
        assert api.run(s.final()).choices[0].text == TEXT


def test_request_object_and_fallbacks(api: Api, gw: ServerThread, fake: FakeOpenAIUpstream,
                                      mock: MockUpstream) -> None:
    from sluicegate.client import ChatRequestBuilder

    request = (ChatRequestBuilder().with_model("mock/gpt-test").with_text("hi")
               .with_max_tokens(7).build())
    with api.open(api.Client(gw.url + "/v1")) as client:
        completion = api.run(client.chat.stream(request, temperature=0.5).final())
        assert completion.choices[0].message.content == TEXT
        body = fake.received[-1].body
        assert body["max_tokens"] == 7 and body["temperature"] == 0.5
        assert body["messages"] == [{"role": "user", "content": "hi"}]
        api.run(client.chat.stream(model="mock/a", messages=MESSAGES,
                                   fallbacks=["mock/b"]).final())
    assert fake.received[-1].body["model"] == "a"
    # what the SDK sends: a scripted server is enough
    request = ChatRequestBuilder().with_model("m").with_text("hi").build()
    with api.open(api.Client(mock.base_url, http_client=api.http_client(mock))) as client:
        api.run(client.chat.stream(request, fallbacks=["n"]).final())
    body = mock.received[-1].body
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


def test_http_client(api: Api, mock: MockUpstream) -> None:
    http_client = api.http_client(mock)
    with api.open(api.Client(mock.base_url, api_key="sk-x", http_client=http_client)) as client:
        s = client.chat.stream(model="m", messages=MESSAGES)
        assert api.list(s.text_stream) == ["Hello", ",", " world", "!"]
        assert s.stats.attempts == 1
    headers = mock.received[-1].headers
    assert headers["authorization"] == "Bearer sk-x"
    assert headers["content-type"] == "application/json"
    assert mock.received[-1].path == "/v1/chat/completions"
    assert http_client.is_closed  # closed with the client, as openai's clients do
    with httpx.Client() as sync_http, pytest.raises(TypeError, match=r"httpx\.AsyncClient"):
        AsyncClient(mock.base_url, http_client=sync_http)  # type: ignore[arg-type]
