"""The stream cache through the official openai SDK: exact hits replayed as the same stream
(content, tool calls, n=2), non-stream ↔ stream, what is never stored, Cache-Control, pacing."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from sluicegate.cache.service import StreamCache
from sluicegate.server import Gateway

from .client_helpers import TOOL_CHUNKS, wait_until
from .conftest import MOCK_KEY, MOCK_KEY_ENV, mock_config
from .fakes import FakeOpenAIUpstream, Script, ServerThread, start_gateway

Gw = tuple[ServerThread, Gateway]
AUTH = {"Authorization": "Bearer unused"}
HTTP = httpx.Client(timeout=10)  # one connection pool for the module's requests


@pytest.fixture(scope="module")
def cache_gateway(upstream: FakeOpenAIUpstream) -> Iterator[Gw]:
    """A gateway with the cache on (exact, deterministic requests only: the defaults)."""
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    config = mock_config(upstream.base_url)
    config.cache.enabled = True
    server, gateway = start_gateway(config)
    yield server, gateway
    server.stop()
    mp.undo()


@pytest.fixture
def gw(cache_gateway: Gw, fake: FakeOpenAIUpstream) -> Gw:
    return cache_gateway


def cache_of(gateway: Gateway) -> StreamCache:
    assert gateway.cache is not None
    return gateway.cache


def stored_after(gateway: Gateway, before: int) -> bool:
    return wait_until(lambda: cache_of(gateway).stats["stored"] > before, 3.0)


def client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def raw_stream(server: ServerThread, body: dict[str, Any],
               headers: dict[str, str] | None = None) -> tuple[httpx.Response, list[Any]]:
    """The SSE events of one stream, parsed (``[DONE]`` as the string); sent with the SDK's
    credential (entries are scoped by the caller's credential)."""
    response = HTTP.post(server.url + "/v1/chat/completions", json={**body, "stream": True},
                         headers={**AUTH, **(headers or {})})
    events: list[Any] = []
    for block in response.content.split(b"\n\n"):
        if block.startswith(b"data: "):
            data = block[6:]
            events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return response, events


def without_ids(events: list[Any]) -> list[Any]:
    out = []
    for event in events:
        if isinstance(event, dict):
            event = {k: v for k, v in event.items() if k not in ("id", "created")}
            if event.get("usage"):
                event["usage"] = {k: v for k, v in event["usage"].items() if k != "cached"}
        out.append(event)
    return out


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "mock/m", "messages": [{"role": "user", "content": text}],
            "temperature": 0, **extra}


def test_exact_hit_replays_the_same_stream(gw: Gw, fake: FakeOpenAIUpstream,
                                           caplog: pytest.LogCaptureFixture) -> None:
    server, gateway = gw
    caplog.set_level(logging.INFO, logger="sluicegate.usage")
    fake.script = Script(texts=["The", " answer", " is", " 42", "."], gap_s=0.005)
    req = body("exact hit: what is the answer?", stream_options={"include_usage": True})
    before = cache_of(gateway).stats["stored"]
    first, original = raw_stream(server, req)
    assert first.headers["X-Sluicegate-Cache"] == "miss"
    assert stored_after(gateway, before)
    second, replayed = raw_stream(server, req)
    assert second.headers["X-Sluicegate-Cache"] == "hit"
    assert second.headers["X-Sluicegate-Provider"] == "cache"
    assert len(fake.received) == 1, "the upstream saw one request"
    assert without_ids(replayed) == without_ids(original)
    assert replayed[0]["id"] != original[0]["id"]
    assert len({e["id"] for e in replayed if isinstance(e, dict)}) == 1
    assert replayed[-2]["usage"]["cached"] is True
    assert replayed[-2]["usage"]["completion_tokens"] == original[-2]["usage"][
        "completion_tokens"]
    def usage_lines() -> list[dict[str, Any]]:
        return [orjson.loads(r.getMessage().removeprefix("usage ")) for r in caplog.records
                if r.name == "sluicegate.usage"]

    assert wait_until(lambda: len(usage_lines()) >= 2)  # accounted after the last write
    lines = usage_lines()
    assert [line.get("cached") for line in lines[-2:]] == [None, True]
    assert lines[-1]["provider"] == "cache" and lines[-1]["usage"]["total_tokens"] == (
        lines[-2]["usage"]["total_tokens"])
    # The SDK's stream helper rebuilds the same completion.
    with client(server).chat.completions.stream(
            model="mock/m", messages=req["messages"], temperature=0,
            stream_options={"include_usage": True}) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content == "The answer is 42."
    assert len(fake.received) == 1


def test_tool_calls_and_n2_replay_identically(gw: Gw, fake: FakeOpenAIUpstream) -> None:
    server, gateway = gw
    sdk = client(server)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    fake.script = Script(raw_chunks=TOOL_CHUNKS)
    finals = []
    for attempt in range(2):
        before = cache_of(gateway).stats["stored"]
        with sdk.chat.completions.stream(
                model="mock/m", temperature=0, tools=tools,  # type: ignore[arg-type]
                messages=[{"role": "user", "content": "tools: weather in Paris?"}]) as s:
            finals.append(s.get_final_completion())
        if attempt == 0:
            assert stored_after(gateway, before)
    assert len(fake.received) == 1
    a, b = (f.choices[0].message for f in finals)
    assert a.tool_calls is not None and b.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in a.tool_calls] == [
        (c.id, c.function.name, c.function.arguments) for c in b.tool_calls]
    assert b.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert finals[1].choices[0].finish_reason == "tool_calls"

    fake.script = Script(texts=["one", " two"])
    req = body("n=2: count", n=2)
    before = cache_of(gateway).stats["stored"]
    _, original = raw_stream(server, req)
    assert stored_after(gateway, before)
    response, replayed = raw_stream(server, req)
    assert response.headers["X-Sluicegate-Cache"] == "hit"
    assert without_ids(replayed) == without_ids(original)
    assert {c["index"] for e in replayed if isinstance(e, dict) for c in e["choices"]} == {0, 1}
    assert len(fake.received) == 2


def test_non_stream_and_stream_share_entries(gw: Gw, fake: FakeOpenAIUpstream) -> None:
    server, gateway = gw
    sdk = client(server)
    before = cache_of(gateway).stats["stored"]
    msgs: Any = [{"role": "user", "content": "cross: stream first"}]
    streamed = "".join(c.choices[0].delta.content or "" for c in sdk.chat.completions.create(
        model="mock/m", messages=msgs, temperature=0, stream=True) if c.choices)
    assert stored_after(gateway, before)
    raw = sdk.chat.completions.with_raw_response.create(model="mock/m", messages=msgs,
                                                        temperature=0)
    assert raw.headers["X-Sluicegate-Cache"] == "hit"
    completion = raw.parse()
    assert completion.choices[0].message.content == streamed == "Hello, world!"
    assert completion.usage is not None and completion.usage.model_extra == {"cached": True}
    # And a non-stream answer is replayed as a stream.
    msgs = [{"role": "user", "content": "cross: non-stream first"}]
    before = cache_of(gateway).stats["stored"]
    sdk.chat.completions.create(model="mock/m", messages=msgs, temperature=0)
    assert stored_after(gateway, before)
    chunks = list(sdk.chat.completions.create(model="mock/m", messages=msgs, temperature=0,
                                              stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hello, world!")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(fake.received) == 2


def test_failed_and_cancelled_streams_are_never_stored(gw: Gw,
                                                       fake: FakeOpenAIUpstream) -> None:
    server, gateway = gw
    cache = cache_of(gateway)
    req = body("failing: tell me")
    fake.script = Script(error_after=2)
    _, events = raw_stream(server, req)
    assert any(isinstance(e, dict) and e.get("error") for e in events)
    fake.script = Script(die_after=2)
    raw_stream(server, req)
    fake.script = Script(send_finish=False)  # truncated: no finish_reason
    raw_stream(server, req)
    # Cancelled: the client leaves after the first chunk.
    fake.script = Script(texts=["a"] * 50, gap_s=0.02)
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=AUTH,
                      json={**req, "stream": True}, timeout=10) as response:
        next(response.iter_bytes())
    fake.script = Script()
    time.sleep(0.3)
    stored = cache.stats["stored"]
    response, _ = raw_stream(server, req)
    assert response.headers["X-Sluicegate-Cache"] == "miss"
    assert len(fake.received) == 5
    assert stored_after(gateway, stored), "the first completed stream is stored"


def test_cache_control_no_store_and_no_cache(gw: Gw, fake: FakeOpenAIUpstream) -> None:
    server, gateway = gw
    cache = cache_of(gateway)
    req = body("cache-control: hello")
    raw_stream(server, req, headers={"Cache-Control": "no-store"})
    time.sleep(0.2)
    response, _ = raw_stream(server, req)
    assert response.headers["X-Sluicegate-Cache"] == "miss", "no-store stored nothing"
    wait_until(lambda: cache.stats["stored"] > 0)
    time.sleep(0.1)
    response, _ = raw_stream(server, req, headers={"Cache-Control": "no-cache"})
    assert response.headers["X-Sluicegate-Cache"] == "miss", "no-cache did not read"
    response, _ = raw_stream(server, req)
    assert response.headers["X-Sluicegate-Cache"] == "hit"
    assert len(fake.received) == 3


def test_only_deterministic_requests_by_default_and_body_field_stripped(
        gw: Gw, fake: FakeOpenAIUpstream) -> None:
    server, gateway = gw
    req = body("sampling: hi", temperature=0.7)
    for _ in range(2):
        response, _ = raw_stream(server, req)
        assert "X-Sluicegate-Cache" not in response.headers
        time.sleep(0.1)
    opted = {**req, "cache": {"mode": "exact", "ttl": 60}}
    raw_stream(server, opted)
    wait_until(lambda: cache_of(gateway).stats["stored"] > 0)
    time.sleep(0.2)
    response, _ = raw_stream(server, opted)
    assert response.headers["X-Sluicegate-Cache"] == "hit"
    assert len(fake.received) == 3
    assert all("cache" not in r.body for r in fake.received), "never sent upstream"
    # Fields that change the answer change the key; transport fields do not.
    response, _ = raw_stream(server, {**opted, "max_tokens": 5})
    assert response.headers["X-Sluicegate-Cache"] == "miss"
    time.sleep(0.2)
    response, _ = raw_stream(server, {**opted, "user": "someone",
                                      "stream_options": {"include_usage": True}})
    assert response.headers["X-Sluicegate-Cache"] == "hit"
    bad = httpx.post(server.url + "/v1/chat/completions",
                     json={**req, "cache": {"mode": "sometimes"}}, timeout=10)
    # Another credential has its own entries.
    other, _ = raw_stream(server, opted, headers={"Authorization": "Bearer other"})
    assert other.headers["X-Sluicegate-Cache"] == "miss"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "cache.mode"


def test_pace_replays_with_the_recorded_gaps(gw: Gw, fake: FakeOpenAIUpstream) -> None:
    server, gateway = gw
    fake.script = Script(texts=["a", "b", "c", "d", "e", "f"], gap_s=0.05)
    req = body("pace: slow answer")
    before = cache_of(gateway).stats["stored"]
    t0 = time.perf_counter()
    raw_stream(server, req)
    original_s = time.perf_counter() - t0
    assert stored_after(gateway, before)
    t0 = time.perf_counter()
    response, _ = raw_stream(server, req)
    immediate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    response, events = raw_stream(server, {**req, "cache": {"pace": True}})
    paced_s = time.perf_counter() - t0
    assert response.headers["X-Sluicegate-Cache"] == "hit"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                   if isinstance(e, dict) and e["choices"]) == "abcdef"
    assert original_s >= 0.25 and immediate_s < 0.15
    assert 0.2 <= paced_s <= original_s + 0.3, (original_s, immediate_s, paced_s)


PAIRS = Path(__file__).parent / "data" / "cache_pairs.jsonl"


def load_pairs() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in PAIRS.read_bytes().splitlines() if line.strip()]


def semantic_body(system: str, text: str) -> dict[str, Any]:
    return {"model": "mock/faq", "temperature": 0, "cache": {"mode": "semantic"},
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": text}]}


def test_semantic_hit_needs_the_same_context(gw: Gw, fake: FakeOpenAIUpstream) -> None:
    server, gateway = gw
    before = cache_of(gateway).stats["stored"]
    raw_stream(server, semantic_body("You are the FAQ bot.", "How do I reset my password?"))
    assert stored_after(gateway, before)
    response, events = raw_stream(
        server, semantic_body("You are the FAQ bot.", "How can I reset my password?"))
    assert response.headers["X-Sluicegate-Cache"] == "semantic-hit"
    assert float(response.headers["X-Sluicegate-Cache-Similarity"]) >= 0.95
    assert events[-1] == "[DONE]"
    # Another system prompt, or an earlier turn more, is another context.
    response, _ = raw_stream(
        server, semantic_body("You are the billing bot.", "How can I reset my password?"))
    assert response.headers["X-Sluicegate-Cache"] == "miss"
    longer = semantic_body("You are the FAQ bot.", "How can I reset my password?")
    longer["messages"][1:1] = [{"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "Hello!"}]
    response, _ = raw_stream(server, longer)
    assert response.headers["X-Sluicegate-Cache"] == "miss"
    response, _ = raw_stream(
        server, semantic_body("You are the FAQ bot.", "What are your opening hours?"))
    assert response.headers["X-Sluicegate-Cache"] == "miss"
    assert len(fake.received) == 4


def test_semantic_precision_and_recall_on_the_labelled_pairs(
        gw: Gw, fake: FakeOpenAIUpstream) -> None:
    """Each pair in its own context (a system prompt naming the pair): the first prompt is
    answered and stored, then the second is asked; a hit is a predicted "same"."""
    server, gateway = gw
    pairs = load_pairs()
    assert len(pairs) >= 50
    before = cache_of(gateway).stats["stored"]
    for i, pair in enumerate(pairs):
        raw_stream(server, semantic_body(f"pair {i}", pair["a"]))
    assert wait_until(lambda: cache_of(gateway).stats["stored"] >= before + len(pairs), 10)
    tp = fp = fn = tn = 0
    for i, pair in enumerate(pairs):
        response, _ = raw_stream(server, semantic_body(f"pair {i}", pair["b"]))
        hit = response.headers["X-Sluicegate-Cache"] in ("hit", "semantic-hit")
        tp += hit and pair["same"]
        fp += hit and not pair["same"]
        fn += not hit and pair["same"]
        tn += not hit and not pair["same"]
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    print(f"threshold 0.95: precision {precision:.3f} recall {recall:.3f} "
          f"(tp {tp} fp {fp} fn {fn} tn {tn})")
    assert precision >= 0.9
    assert recall >= 0.6


def test_configured_per_deployment_or_not_at_all() -> None:
    from sluicegate.cache.service import open_cache
    from sluicegate.config import GatewayConfig
    from sluicegate.state import MemoryBackend

    assert open_cache(mock_config("http://127.0.0.1:9/v1"), MemoryBackend(), None) is None, (
        "no cache by default")
    config = GatewayConfig.model_validate({
        "embedded_model": False,
        "models": [{"name": "faq/*", "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                    "cache": {"mode": "semantic", "threshold": 0.9}},
                   {"name": "chat/*", "provider": "openai", "base_url": "http://127.0.0.1:9/v1"}],
    })
    cache = open_cache(config, MemoryBackend(), None)
    assert cache is not None and cache.semantic_configured()
    with pytest.raises(ValueError):
        GatewayConfig.model_validate({"cache": {"mode": "fuzzy"}})
    from aiohttp.test_utils import make_mocked_request

    from sluicegate.router import Router
    from sluicegate.schemas import parse_chat_request

    router = Router(config)
    http = make_mocked_request("POST", "/v1/chat/completions",
                               headers={"Cache-Control": "no-cache"})
    msgs = [{"role": "user", "content": "hi"}]
    faq = parse_chat_request({"model": "faq/x", "temperature": 0, "messages": msgs})
    decision = cache.decide(http, faq, router.plan(faq)[1])
    assert decision is not None
    assert (decision.mode, decision.threshold, decision.read, decision.store) == (
        "semantic", 0.9, False, True)
    chat = parse_chat_request({"model": "chat/x", "temperature": 0, "messages": msgs})
    assert cache.decide(http, chat, router.plan(chat)[1]) is None, "server-wide cache is off"
    opted = parse_chat_request({"model": "chat/x", "messages": msgs, "cache": {"mode": "exact"}})
    assert cache.decide(http, opted, router.plan(opted)[1]) is not None
