"""batch.py: run_many / stream_many (threads) and arun_many / astream_many (tasks), through the
client's ``chat`` and directly, against a gateway on loopback in front of the fake upstream."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from sluicegate.client import AsyncClient, ChatRequestBuilder, Client, batch
from sluicegate.client.errors import APITimeoutError, NotFoundError

from .fakes import FakeOpenAIUpstream, Received, Script, ServerThread

TEXT = "Hello, world!"


class Arrivals(list[Received]):
    """``fake.received`` recording, at each arrival, how many requests were then in flight."""

    def __init__(self, fake: FakeOpenAIUpstream) -> None:
        super().__init__()
        self.fake = fake
        self.completed_before = fake.completed  # a session-wide count
        self.in_flight: list[int] = []

    def append(self, item: Received) -> None:
        super().append(item)
        self.in_flight.append(len(self) - (self.fake.completed - self.completed_before))


@pytest.fixture
def arrivals(fake: FakeOpenAIUpstream) -> Arrivals:
    fake.received = arrivals = Arrivals(fake)
    return arrivals


@pytest.fixture
def client(gw: ServerThread) -> Iterator[Client]:
    with Client(base_url=gw.url + "/v1", max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(gw: ServerThread) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(base_url=gw.url + "/v1", max_retries=0) as c:
        yield c


def requests(n: int, **extra: Any) -> list[Any]:
    """Alternating dict and ChatRequest forms, model ``mock/r<i>``."""
    out: list[Any] = []
    for i in range(n):
        messages = [{"role": "user", "content": f"request {i}"}]
        if i % 2:
            builder = ChatRequestBuilder().with_model(f"mock/r{i}").with_messages(messages)
            for key, value in extra.items():
                builder.with_param(key, value)
            out.append(builder.build())
        else:
            out.append({"model": f"mock/r{i}", "messages": messages, **extra})
    return out


def batch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sluicegate-batch")]


def batch_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("sluicegate-batch")]


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


def wait_for_sync(predicate: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.02)
    return bool(predicate())


def all_closed(fake: FakeOpenAIUpstream, completed: int, n: int) -> bool:
    """All ``n`` requests reached the fake and were cut short; none finished."""
    return len(fake.received) == len(fake.closed_early) == n and fake.completed == completed


def check_order(results: list[Any], n: int) -> None:
    assert len(results) == n
    for i, completion in enumerate(results):
        assert completion.model.endswith(f"r{i}")
        assert completion.choices[0].message.content == TEXT
        assert completion.choices[0].finish_reason == "stop"


# -- run_many ---------------------------------------------------------------------------------


def test_sync_run_many_in_order_and_bounded(client: Client, fake: FakeOpenAIUpstream,
                                            arrivals: Arrivals) -> None:
    fake.script = Script(gap_s=0.04)
    results = client.chat.run_many(requests(6), concurrency=2)
    check_order(results, 6)
    assert len(arrivals) == 6
    assert max(arrivals.in_flight) == 2
    assert {r.body["messages"][0]["content"] for r in arrivals} == {f"request {i}"
                                                                    for i in range(6)}
    assert not batch_threads()


async def test_async_run_many_in_order_and_bounded(aclient: AsyncClient,
                                                   fake: FakeOpenAIUpstream,
                                                   arrivals: Arrivals) -> None:
    fake.script = Script(gap_s=0.04)
    results = await aclient.chat.run_many(requests(7), concurrency=3)
    check_order(results, 7)
    assert max(arrivals.in_flight) == 3
    assert not batch_tasks()


def test_sync_run_many_serial(client: Client, fake: FakeOpenAIUpstream,
                              arrivals: Arrivals) -> None:
    fake.script = Script(gap_s=0.01)
    check_order(batch.run_many(client, requests(3), 1), 3)
    assert arrivals.in_flight == [1, 1, 1]


async def test_async_run_many_serial(aclient: AsyncClient, fake: FakeOpenAIUpstream,
                                     arrivals: Arrivals) -> None:
    fake.script = Script(gap_s=0.01)
    check_order(await batch.arun_many(aclient, requests(3), 1), 3)
    assert arrivals.in_flight == [1, 1, 1]


def test_sync_run_many_error_stops_the_rest(client: Client, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 40, gap_s=0.05)
    completed = fake.completed
    reqs = [*requests(2), {**requests(1)[0], "timeout": 0.5}]  # fails at 0.5 s
    with pytest.raises(APITimeoutError):
        client.chat.run_many(reqs, concurrency=3)
    assert not batch_threads()
    assert wait_for_sync(lambda: all_closed(fake, completed, 3))


async def test_async_run_many_error_stops_the_rest(aclient: AsyncClient,
                                                   fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 40, gap_s=0.05)
    completed = fake.completed
    reqs = [*requests(2), {**requests(1)[0], "timeout": 0.5}]  # fails at 0.5 s
    with pytest.raises(APITimeoutError):
        await aclient.chat.run_many(reqs, concurrency=3)
    assert not batch_tasks()
    assert await wait_for(lambda: all_closed(fake, completed, 3))


def test_sync_empty_and_bad_arguments(client: Client) -> None:
    assert batch.run_many(client, [], 4) == []
    assert list(batch.stream_many(client, [], 4)) == []
    with pytest.raises(ValueError, match="concurrency"):
        batch.run_many(client, requests(1), 0)
    with pytest.raises(TypeError, match="request 0"):
        batch.run_many(client, ["hi"], 2)  # type: ignore[list-item]


async def test_async_empty_and_bad_arguments(aclient: AsyncClient) -> None:
    assert await batch.arun_many(aclient, [], 4) == []
    assert [x async for x in batch.astream_many(aclient, [], 4)] == []
    with pytest.raises(ValueError, match="concurrency"):
        await batch.arun_many(aclient, requests(1), 0)


# -- stream_many ------------------------------------------------------------------------------


def check_streamed(pairs: list[tuple[int, Any]], n: int) -> None:
    by_index: dict[int, str] = {}
    for index, chunk in pairs:
        if chunk.choices:
            by_index[index] = by_index.get(index, "") + (chunk.choices[0].delta.content or "")
    assert by_index == dict.fromkeys(range(n), TEXT)
    # each request ends with its usage chunk (choices == [])
    last = {index: chunk for index, chunk in pairs}
    assert all(c.choices == [] and c.usage is not None for c in last.values())
    # requests interleave: the index changes more often than once per request
    switches = sum(1 for a, b in itertools.pairwise(pairs) if a[0] != b[0])
    assert switches > n - 1


def test_sync_stream_many_interleaves(client: Client, fake: FakeOpenAIUpstream,
                                      arrivals: Arrivals) -> None:
    fake.script = Script(gap_s=0.05)
    pairs = list(client.chat.stream_many(requests(3), concurrency=3))
    check_streamed(pairs, 3)
    assert max(arrivals.in_flight) == 3
    assert not batch_threads()


async def test_async_stream_many_interleaves(aclient: AsyncClient, fake: FakeOpenAIUpstream,
                                             arrivals: Arrivals) -> None:
    fake.script = Script(gap_s=0.05)
    pairs = [p async for p in aclient.chat.stream_many(requests(3), concurrency=3)]
    check_streamed(pairs, 3)
    assert max(arrivals.in_flight) == 3
    assert not batch_tasks()


def test_sync_stream_many_bounded(client: Client, fake: FakeOpenAIUpstream,
                                  arrivals: Arrivals) -> None:
    fake.script = Script(gap_s=0.03)
    pairs = list(batch.stream_many(client, requests(5, max_tokens=9), 2))
    assert {i for i, _ in pairs} == set(range(5))
    assert max(arrivals.in_flight) == 2
    assert all(r.body["max_tokens"] == 9 for r in arrivals)


async def test_async_stream_many_bounded(aclient: AsyncClient, fake: FakeOpenAIUpstream,
                                         arrivals: Arrivals) -> None:
    fake.script = Script(gap_s=0.03)
    pairs = [p async for p in batch.astream_many(aclient, requests(5, max_tokens=9), 2)]
    assert {i for i, _ in pairs} == set(range(5))
    assert max(arrivals.in_flight) == 2


def test_sync_stream_many_early_stop_closes_all(client: Client,
                                                fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 100, gap_s=0.05)
    completed = fake.completed
    seen: set[int] = set()
    with contextlib.closing(client.chat.stream_many(requests(5), concurrency=3)) as pairs:
        for index, chunk in pairs:
            if chunk.choices and chunk.choices[0].delta.content:
                seen.add(index)
            if len(seen) == 3:
                break
    assert seen == {0, 1, 2}
    assert not batch_threads()
    assert wait_for_sync(lambda: len(fake.closed_early) == 3)
    time.sleep(0.2)
    assert len(fake.received) == 3  # the requests not yet started never start
    assert fake.completed == completed


async def test_async_stream_many_early_stop_closes_all(aclient: AsyncClient,
                                                       fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 100, gap_s=0.05)
    completed = fake.completed
    seen: set[int] = set()
    pairs = aclient.chat.stream_many(requests(5), concurrency=3)
    async with contextlib.aclosing(pairs):
        async for index, chunk in pairs:
            if chunk.choices and chunk.choices[0].delta.content:
                seen.add(index)
            if len(seen) == 3:
                break
    assert seen == {0, 1, 2}
    assert not batch_tasks()
    assert await wait_for(lambda: len(fake.closed_early) == 3)
    await asyncio.sleep(0.2)
    assert len(fake.received) == 3
    assert fake.completed == completed


async def test_async_stream_many_consumer_cancelled(aclient: AsyncClient,
                                                    fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 100, gap_s=0.05)
    got = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(batch.astream_many(aclient, requests(2), 2)) as pairs:
            async for _ in pairs:
                got.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got.wait(), 5)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not batch_tasks()
    assert await wait_for(lambda: len(fake.closed_early) == 2)


def test_sync_stream_many_error_raised(client: Client, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 100, gap_s=0.05)
    completed = fake.completed
    reqs = [*requests(1), {"model": "nowhere/x", "messages": [{"role": "user", "content": "?"}]}]
    with pytest.raises(NotFoundError):
        for _ in client.chat.stream_many(reqs, concurrency=2):
            pass
    assert not batch_threads()
    time.sleep(0.3)
    assert fake.completed == completed  # the other stream was stopped, wherever it was


async def test_async_stream_many_error_raised(aclient: AsyncClient,
                                              fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["x"] * 100, gap_s=0.05)
    completed = fake.completed
    reqs = [*requests(1), {"model": "nowhere/x", "messages": [{"role": "user", "content": "?"}]}]
    with pytest.raises(NotFoundError):
        async with contextlib.aclosing(aclient.chat.stream_many(reqs, concurrency=2)) as pairs:
            async for _ in pairs:
                pass
    assert not batch_tasks()
    await asyncio.sleep(0.3)
    assert fake.completed == completed
