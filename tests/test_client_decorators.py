"""stream_llm / stream_llm_sync against a gateway on loopback (in front of the fake upstream),
against the fake directly (to see the body), and in-process on the embedded model."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from rich.console import Console

from sluicegate.client import AsyncClient, Client, StreamCallbacks, decorators
from sluicegate.client.decorators import (
    aclose_default_client,
    close_default_clients,
    stream_llm,
    stream_llm_sync,
)
from sluicegate.client.errors import NotFoundError
from sluicegate.client.progress import ProgressTracker, RichProgress

from .fakes import FakeOpenAIUpstream, Script, ServerThread

TEXTS = ["Hello", ",", " world", "!"]


@pytest.fixture
def client(gw: ServerThread) -> Iterator[Client]:
    with Client(base_url=gw.url + "/v1", max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(gw: ServerThread) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(base_url=gw.url + "/v1", max_retries=0) as c:
        yield c


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


def wait_for_sync(predicate: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# -- text mode --------------------------------------------------------------------------------


def test_sync_yields_text(client: Client, fake: FakeOpenAIUpstream) -> None:
    @stream_llm_sync(model="mock/a", client=client, max_tokens=7, temperature=0.5)
    def ask(question: str) -> str:
        return f"Answer briefly: {question}"

    assert ask.__name__ == "ask"
    assert list(ask("why?")) == TEXTS
    body = fake.received[-1].body
    assert body["messages"] == [{"role": "user", "content": "Answer briefly: why?"}]
    assert (body["max_tokens"], body["temperature"], body["stream"]) == (7, 0.5, True)


async def test_async_yields_text(aclient: AsyncClient, fake: FakeOpenAIUpstream) -> None:
    @stream_llm(model="mock/a", client=aclient, max_tokens=7)
    async def ask(question: str) -> str:
        await asyncio.sleep(0)
        return f"Answer briefly: {question}"

    assert [t async for t in ask("why?")] == TEXTS
    body = fake.received[-1].body
    assert body["messages"] == [{"role": "user", "content": "Answer briefly: why?"}]
    assert body["max_tokens"] == 7


def test_sync_messages_prompt(client: Client, fake: FakeOpenAIUpstream) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]

    @stream_llm_sync(model="mock/a", client=client)
    def chat() -> list[dict[str, Any]]:
        return messages

    assert "".join(chat()) == "Hello, world!"
    assert fake.received[-1].body["messages"] == messages


async def test_async_accepts_sync_function_and_messages(aclient: AsyncClient,
                                                        fake: FakeOpenAIUpstream) -> None:
    @stream_llm(model="mock/a", client=aclient)
    def chat(text: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": text}]

    assert "".join([t async for t in chat("Hi")]) == "Hello, world!"
    assert fake.received[-1].body["messages"] == [{"role": "user", "content": "Hi"}]


def test_sync_bad_prompt_type(client: Client) -> None:
    @stream_llm_sync(model="mock/a", client=client)
    def bad() -> Any:
        return 42

    with pytest.raises(TypeError, match="prompt string or a list"):
        list(bad())


async def test_async_bad_prompt_type(aclient: AsyncClient) -> None:
    @stream_llm(model="mock/a", client=aclient)
    async def bad() -> Any:
        return {"role": "user"}

    with pytest.raises(TypeError, match="prompt string or a list"):
        [t async for t in bad()]


# -- metadata ---------------------------------------------------------------------------------


def check_events(events: list[dict[str, Any]], upstream_model: str) -> None:
    assert [e["chunk_index"] for e in events] == list(range(len(events)))
    assert set(events[0]) == {"chunk", "chunk_index", "provider", "model", "text"}
    assert "".join(e["text"] for e in events) == "Hello, world!"
    assert [e["text"] for e in events if e["text"]] == TEXTS
    assert all(e["provider"] == "mock/*" for e in events)  # the gateway's deployment
    assert all(e["model"] == upstream_model for e in events)
    usage = events[-1]["chunk"]
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.completion_tokens == len(TEXTS)


def test_sync_with_metadata(client: Client) -> None:
    @stream_llm_sync(model="mock/meta-a", client=client, with_metadata=True)
    def ask(q: str) -> str:
        return q

    events = list(ask("hi"))
    check_events([dict(e) for e in events], "meta-a")


async def test_async_with_metadata(aclient: AsyncClient) -> None:
    @stream_llm(model="mock/meta-b", client=aclient, with_metadata=True)
    async def ask(q: str) -> str:
        return q

    events = [dict(e) async for e in ask("hi")]
    check_events(events, "meta-b")


# -- fallbacks --------------------------------------------------------------------------------


def test_sync_fallbacks_become_models(fake: FakeOpenAIUpstream) -> None:
    """Straight to an OpenAI-compatible server: the body carries ``models``."""
    with Client(base_url=fake.base_url, max_retries=0) as direct:
        @stream_llm_sync(model="fake-model-a", fallbacks=["fake-model-b", "fake-model-c"],
                         client=direct)
        def ask() -> str:
            return "hi"

        assert "".join(ask()) == "Hello, world!"
    assert fake.received[-1].body["models"] == ["fake-model-a", "fake-model-b", "fake-model-c"]


async def test_async_fallbacks_become_models(fake: FakeOpenAIUpstream) -> None:
    async with AsyncClient(base_url=fake.base_url, max_retries=0) as direct:
        @stream_llm(model="fake-model-a", fallbacks=["fake-model-b"], client=direct)
        async def ask() -> str:
            return "hi"

        assert "".join([t async for t in ask()]) == "Hello, world!"
    assert fake.received[-1].body["models"] == ["fake-model-a", "fake-model-b"]


def test_sync_fallback_used_by_gateway(client: Client, fake: FakeOpenAIUpstream) -> None:
    fake.queue.append(Script(status=500))

    @stream_llm_sync(model="mock/first", fallbacks=["mock/second"], client=client,
                     with_metadata=True)
    def ask() -> str:
        return "hi"

    events = list(ask())
    assert [r.body["model"] for r in fake.received] == ["first", "second"]
    assert events[0]["model"] == "second"
    assert "".join(e["text"] for e in events) == "Hello, world!"


async def test_async_fallback_used_by_gateway(aclient: AsyncClient,
                                              fake: FakeOpenAIUpstream) -> None:
    fake.queue.append(Script(status=500))

    @stream_llm(model="mock/first", fallbacks=["mock/second"], client=aclient,
                with_metadata=True)
    async def ask() -> str:
        return "hi"

    events = [e async for e in ask()]
    assert [r.body["model"] for r in fake.received] == ["first", "second"]
    assert events[0]["model"] == "second"


# -- callbacks, progress, errors, early stop --------------------------------------------------


def test_sync_callbacks_and_progress(client: Client) -> None:
    seen: list[str] = []

    async def on_end(meta: Any) -> None:  # an async callback in a sync stream
        seen.append(f"end:{meta.finish_reason}:{meta.total_tokens}")

    callbacks = StreamCallbacks(on_start=lambda meta: seen.append("start"),
                                on_chunk=lambda chunk, meta: seen.append("chunk"),
                                on_end=on_end)
    tracker = ProgressTracker(expected_tokens=8)

    @stream_llm_sync(model="mock/a", client=client, callbacks=callbacks, progress=tracker)
    def ask() -> str:
        return "hi"

    assert "".join(ask()) == "Hello, world!"
    assert seen[0] == "start"
    assert seen[-1] == "end:stop:15"  # usage total: 11 prompt + 4 completion tokens
    assert seen.count("chunk") >= len(TEXTS)
    assert tracker.done
    assert (tracker.characters, tracker.tokens, tracker.percent) == (13, 4, 100.0)
    assert list(ask()) == TEXTS  # the tracker restarts for the next call
    assert tracker.characters == 13


async def test_async_callbacks_and_progress(aclient: AsyncClient) -> None:
    seen: list[str] = []

    async def on_chunk(chunk: Any, meta: Any) -> None:
        seen.append("chunk")

    callbacks = StreamCallbacks(on_start=lambda meta: seen.append("start"), on_chunk=on_chunk,
                                on_end=lambda meta: seen.append(f"end:{meta.finish_reason}"))
    tracker = ProgressTracker(expected_chars=26)

    @stream_llm(model="mock/a", client=aclient, callbacks=callbacks, progress=tracker)
    async def ask() -> str:
        return "hi"

    texts = []
    async for text in ask():
        texts.append(text)
        if len(texts) == 2:
            assert tracker.percent == pytest.approx(100 * len("Hello,") / 26)
    assert seen[0] == "start" and seen[-1] == "end:stop"
    assert tracker.done and tracker.tokens == 4


def test_sync_rich_progress(client: Client) -> None:
    out = io.StringIO()
    bar = RichProgress(console=Console(file=out, force_terminal=False, width=120))

    @stream_llm_sync(model="mock/a", client=client, progress=bar, max_tokens=8)
    def ask() -> str:
        return "hi"

    assert "".join(ask()) == "Hello, world!"
    assert bar.tracker.expected == (8, "tokens")  # the request's max_tokens
    assert bar.tracker.done
    assert "100%" in out.getvalue() and "13 chars" in out.getvalue()


async def test_async_rich_progress(aclient: AsyncClient) -> None:
    out = io.StringIO()
    tracker = ProgressTracker(expected_chars=13)

    @stream_llm(model="mock/a", client=aclient, progress=RichProgress(tracker, Console(
        file=out, force_terminal=False, width=120)))
    async def ask() -> str:
        return "hi"

    assert "".join([t async for t in ask()]) == "Hello, world!"
    assert tracker.done and tracker.characters == 13
    assert "100%" in out.getvalue()


def test_sync_error_propagates(client: Client) -> None:
    @stream_llm_sync(model="nowhere/x", client=client)
    def ask() -> str:
        return "hi"

    with pytest.raises(NotFoundError):
        list(ask())


async def test_async_error_propagates(aclient: AsyncClient) -> None:
    @stream_llm(model="nowhere/x", client=aclient)
    async def ask() -> str:
        return "hi"

    with pytest.raises(NotFoundError):
        [t async for t in ask()]


def test_sync_break_closes_connection(client: Client, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 50, gap_s=0.05)

    @stream_llm_sync(model="mock/a", client=client)
    def ask() -> str:
        return "hi"

    gen = ask()
    assert next(gen) == "x"
    gen.close()
    assert wait_for_sync(lambda: len(fake.closed_early) == 1)


async def test_async_break_closes_connection(aclient: AsyncClient,
                                             fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 50, gap_s=0.05)

    @stream_llm(model="mock/a", client=aclient)
    async def ask() -> str:
        return "hi"

    gen = ask()
    assert await anext(gen) == "x"
    await gen.aclose()  # type: ignore[attr-defined]
    assert await wait_for(lambda: len(fake.closed_early) == 1)


# -- the shared default client ----------------------------------------------------------------


def test_sync_default_client_from_environment(gw: ServerThread,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEGATE_BASE_URL", gw.url + "/v1")
    close_default_clients()

    @stream_llm_sync(model="mock/a", max_retries=0)
    def ask() -> str:
        return "hi"

    try:
        assert "".join(ask()) == "Hello, world!"
        assert "".join(ask()) == "Hello, world!"
        shared = decorators._sync_clients
        assert list(shared) == [0] and shared[0].max_retries == 0  # one, reused
        assert shared[0].base_url == gw.url + "/v1"
    finally:
        close_default_clients()


async def test_async_default_client_from_environment(gw: ServerThread,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEGATE_BASE_URL", gw.url + "/v1")

    @stream_llm(model="mock/a", max_retries=0)
    async def ask() -> str:
        return "hi"

    try:
        assert "".join([t async for t in ask()]) == "Hello, world!"
    finally:
        await aclose_default_client()


# -- in-process, on the real embedded model ---------------------------------------------------


async def test_async_in_process_embedded_model() -> None:
    aclient = AsyncClient.in_process()
    try:
        tracker = ProgressTracker()

        @stream_llm(client=aclient, max_tokens=8, temperature=0.0, with_metadata=True,
                    progress=tracker)
        async def ask(topic: str) -> str:
            return f"Say one word about {topic}."

        events = [e async for e in ask("the sea")]
    finally:
        await aclient.aclose()
    text = "".join(e["text"] for e in events)
    assert text.strip()
    assert events[0]["provider"] == "local"
    usage = events[-1]["chunk"].usage
    assert usage is not None and 1 <= usage.completion_tokens <= 8
    assert tracker.done and tracker.expected == (8, "tokens")  # from max_tokens
    assert tracker.characters == len(text) and tracker.tokens >= 1
