"""``StreamingCache`` in the SDK: the decorators replay a recorded stream (exact and semantic),
with the gateway's keys and embedding; an unfinished stream is not stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from sluicegate.client import AsyncClient, Client, StreamingCache, stream_llm, stream_llm_sync
from sluicegate.client.errors import APIError

from .fakes import FakeOpenAIUpstream, Script, ServerThread


@pytest.fixture
def client(gw: ServerThread) -> Iterator[Client]:
    with Client(base_url=gw.url + "/v1", api_key="k", max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(gw: ServerThread) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(base_url=gw.url + "/v1", api_key="k", max_retries=0) as c:
        yield c


def test_sync_decorator_replays_exact_and_semantic_hits(client: Client,
                                                        fake: FakeOpenAIUpstream) -> None:
    cache = StreamingCache(similarity_threshold=0.95, max_cache_size=100)

    @stream_llm_sync(model="mock/faq", client=client, cache=cache, temperature=0)
    def ask(question: str) -> str:
        return question

    assert "".join(ask("How do I reset my password?")) == "Hello, world!"
    assert list(ask("How do I reset my password?")) == ["Hello", ",", " world", "!"]
    assert "".join(ask("How can I reset my password?")) == "Hello, world!"
    assert (cache.hits, cache.semantic_hits) == (1, 1)
    assert "".join(ask("What are your opening hours?")) == "Hello, world!"
    assert len(fake.received) == 2
    assert len(cache) == 2


async def test_async_decorator_and_lru(aclient: AsyncClient, fake: FakeOpenAIUpstream) -> None:
    cache = StreamingCache(max_cache_size=2)

    @stream_llm(model="mock/faq", client=aclient, cache=cache, with_metadata=True)
    async def ask(question: str) -> str:
        return question

    async def texts(q: str) -> str:
        return "".join([e["text"] async for e in ask(q)])

    for q in ("first question about billing", "second question about shipping",
              "third question about refunds"):
        assert await texts(q) == "Hello, world!"
    assert len(cache) == 2
    assert await texts("third question about refunds") == "Hello, world!"
    assert len(fake.received) == 3
    await texts("first question about billing")  # evicted: asked again
    assert len(fake.received) == 4


def test_a_failed_stream_is_not_stored(client: Client, fake: FakeOpenAIUpstream) -> None:
    cache = StreamingCache(semantic=False)

    @stream_llm_sync(model="mock/faq", client=client, cache=cache, temperature=0)
    def ask(question: str) -> str:
        return question

    fake.script = Script(error_after=2)
    with pytest.raises(APIError):
        list(ask("fails midway"))
    assert len(cache) == 0
    fake.script = Script()
    list(ask("fails midway"))
    assert len(cache) == 1
