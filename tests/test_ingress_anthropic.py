"""``/v1/messages`` and ``/v1/messages/count_tokens`` driven with the anthropic SDK: from an
OpenAI-dialect fake upstream, from an Anthropic fake (native pass-through) and from the
embedded model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from .conftest import ANT_KEY, MASTER_KEY
from .fakes import FakeOpenAIUpstream, Script, ServerThread, tool_call_chunks
from .fakes_anthropic import (
    FakeAnthropicUpstream,
    block_start,
    block_stop,
    message_end,
    message_start,
    text_block,
    text_message,
    thinking_block,
)

MODEL = "mock/some-model"
USER: Any = [{"role": "user", "content": "hello there"}]


_CLIENTS: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def _client(server: ServerThread, key: str = "x", **kwargs: Any) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0, **kwargs)
    _CLIENTS.append(client)
    return client


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in raw.split(b"\n\n"):
        if not frame or frame.startswith(b":"):
            continue
        name, data = frame.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        payload = orjson.loads(data[6:])
        assert payload["type"] == name[7:].decode()
        out.append((name[7:].decode(), payload))
    return out


WEATHER: Any = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


# -- from an OpenAI-dialect upstream ------------------------------------------------------------


def test_stream_text_and_final_message(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    with _client(gw).messages.stream(
            model=MODEL, max_tokens=50, system="Be brief.", messages=USER,
            stop_sequences=["END"], extra_body={"temperature": 0.5}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello, world!"
    assert final.content[0].type == "text" and final.content[0].text == "Hello, world!"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 4)
    assert final.model == MODEL
    sent = fake.received[-1].body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "hello there"}]
    assert (sent["max_tokens"], sent["stop"], sent["temperature"]) == (50, ["END"], 0.5)


def test_event_sequence_is_named_and_ordered(gw: ServerThread) -> None:
    response = httpx.post(gw.url + "/v1/messages", json={
        "model": MODEL, "max_tokens": 20, "messages": USER, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    names = [name for name, _ in _events(response.content)]
    assert names == ["message_start", "content_block_start", *["content_block_delta"] * 4,
                     "content_block_stop", "message_delta", "message_stop"]
    start = _events(response.content)[0][1]
    assert start["message"]["usage"]["input_tokens"] > 0


def test_tool_use_round_trip(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(raw_chunks=tool_call_chunks("Checking."))
    messages: Any = [
        *USER,
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_0", "name": "get_weather",
             "input": {"city": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_0", "content": "sunny"},
            {"type": "text", "text": "And Paris?"}]},
    ]
    with _client(gw).messages.stream(model=MODEL, max_tokens=50, messages=messages,
                                     tools=[WEATHER],
                                     tool_choice={"type": "any"}) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"]
    tool = final.content[1]
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == ("call_1", "get_weather", {"city": "Paris"})
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (30, 9)
    sent = fake.received[-1].body
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": WEATHER["input_schema"]}}]
    assert sent["tool_choice"] == "required"
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "toolu_0", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_0", "content": "sunny"},
        {"role": "user", "content": [{"type": "text", "text": "And Paris?"}]},
    ]


def test_thinking_and_images_translate(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(raw_chunks=[
        {"choices": [{"index": 0, "delta": {"reasoning_content": "Hmm."},
                      "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": "Red."}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
    ])
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "AAAA"}}
    with _client(gw).messages.stream(
            model=MODEL, max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": [image, {"type": "text",
                                                           "text": "Colour?"}]}]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].type == "thinking" and final.content[0].thinking == "Hmm."
    assert final.stop_reason == "max_tokens"
    sent = fake.received[-1].body
    assert sent["reasoning_effort"] == "low"
    assert sent["messages"][0]["content"][0] == {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def test_midstream_failure_raises_after_partial_text(gw: ServerThread,
                                                     fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(error_after=2)
    got: list[str] = []
    client = _client(gw)
    with (pytest.raises(anthropic.APIStatusError) as info,
          client.messages.stream(model=MODEL, max_tokens=50, messages=USER) as stream):
        got.extend(stream.text_stream)
    assert "".join(got) == "Hello,"
    assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_keepalive_is_a_ping(gw: ServerThread, fake: FakeOpenAIUpstream,
                             mock_gateway: tuple[ServerThread, Any],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mock_gateway[1].config.routing, "keepalive_s", 0.1)
    fake.script = Script(first_delay_s=0.5)
    response = httpx.post(gw.url + "/v1/messages", json={
        "model": MODEL, "max_tokens": 20, "messages": USER, "stream": True})
    names = [name for name, _ in _events(response.content)]
    assert names[:2] == ["message_start", "ping"]
    assert names[-1] == "message_stop" and b": keep-alive" not in response.content


def test_non_stream_message(gw: ServerThread) -> None:
    message = _client(gw).messages.create(model=MODEL, max_tokens=50, messages=USER)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text == "Hello, world!"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 4)


def test_non_stream_tool_use(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(raw_chunks=tool_call_chunks("Checking."))
    message = _client(gw).messages.create(model=MODEL, max_tokens=50, messages=USER,
                                          tools=[WEATHER])
    assert message.stop_reason == "tool_use"
    assert message.content[1].type == "tool_use"
    assert message.content[1].input == {"city": "Paris"}


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": USER}, "max_tokens"),
    ({"max_tokens": 5, "messages": []}, "messages"),
    ({"max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"max_tokens": 5, "messages": USER, "temperature": 1.5}, "temperature"),
    ({"max_tokens": 5, "messages": USER,
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {}}]}]}, "messages.0.content.0.type"),
])
def test_bad_input_is_an_anthropic_400(gw: ServerThread, body: dict[str, Any],
                                       param: str) -> None:
    response = httpx.post(gw.url + "/v1/messages", json={"model": MODEL, **body})
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert param in error["error"]["message"]


def test_errors_keep_anthropic_shape_and_status(gw: ServerThread,
                                                fake: FakeOpenAIUpstream) -> None:
    client = _client(gw)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", max_tokens=5, messages=USER)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    fake.script = Script(status=429, error_headers={"retry-after": "1"})
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model=MODEL, max_tokens=5, messages=USER)
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_route_errors_keep_anthropic_shape(gw: ServerThread) -> None:
    response = httpx.get(gw.url + "/v1/messages")
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = httpx.post(gw.url + "/v1/messages", content=b"{not json")
    assert response.status_code == 400 and response.json()["type"] == "error"


def test_auth_by_x_api_key_or_bearer(keyed_gateway: ServerThread, fake: FakeOpenAIUpstream) -> None:
    ok = _client(keyed_gateway, MASTER_KEY).messages.create(model=MODEL, max_tokens=5,
                                                            messages=USER)
    assert ok.content[0].type == "text"
    bearer = _client(keyed_gateway, None, auth_token=MASTER_KEY)  # type: ignore[arg-type]
    assert bearer.messages.create(model=MODEL, max_tokens=5, messages=USER).content
    with pytest.raises(anthropic.AuthenticationError) as denied:
        _client(keyed_gateway, "wrong").messages.create(model=MODEL, max_tokens=5,
                                                        messages=USER)
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_count_tokens_counts_here(gw: ServerThread) -> None:
    counted = _client(gw).messages.count_tokens(model=MODEL, system="Be brief.",
                                                messages=USER, tools=[WEATHER])
    assert counted.input_tokens > 5


# -- native pass-through to an Anthropic upstream -------------------------------------------------

def test_anthropic_upstream_gets_the_request_natively(
        anthropic_ingress: tuple[ServerThread, FakeAnthropicUpstream]) -> None:
    server, fake = anthropic_ingress
    fake.reset()
    fake.script.events = [*text_message(["Hi", " there"])[:1], *thinking_block(0, ["Hm"]),
                          *text_message(["Hi", " there"])[1:]]
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                               "data": "notes"}}
    body: Any = {"model": "anthropic/claude-test", "max_tokens": 64,
                 "messages": [{"role": "user", "content": [document]}, *USER],
                 "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
                 "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
                 "metadata": {"user_id": "u1"},
                 "thinking": {"type": "enabled", "budget_tokens": 1024}}
    client = _client(server)
    with client.messages.stream(**body, extra_headers={"anthropic-beta": "beta-x",
                                                       "anthropic-version": "2023-06-01"},
                                extra_body={"top_k": 5}) as stream:
        final = stream.get_final_message()
    assert "".join(b.text for b in final.content if b.type == "text") == "Hi there"
    assert final.content[0].type == "thinking"
    assert final.content[0].signature == "EqQBCgIYAhIM1gbc"
    assert final.usage.input_tokens == 25
    got = fake.received[-1]
    assert got.body == {**body, "top_k": 5, "model": "claude-test", "stream": True}
    assert got.headers["anthropic-beta"] == "beta-x"
    assert got.headers["anthropic-version"] == "2023-06-01"
    assert got.headers["x-api-key"] == ANT_KEY
    assert client.messages.count_tokens(model="anthropic/claude-test",
                                        messages=USER).input_tokens == 42
    assert fake.received[-1].path == "/v1/messages/count_tokens"
    assert fake.received[-1].body["model"] == "claude-test"
    assert stream_start_input_tokens(server, fake) == 25  # message_start: the upstream's count


# -- the embedded model ---------------------------------------------------------------------------


def test_embedded_model_stream_and_count(
        local_gateway: tuple[ServerThread, Any]) -> None:
    server, _ = local_gateway
    client = _client(server)
    with client.messages.stream(model="default", max_tokens=8, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.stop_reason in ("max_tokens", "end_turn")
    assert 1 <= final.usage.output_tokens <= 8 and final.usage.input_tokens > 0
    assert client.messages.count_tokens(model="default", messages=USER).input_tokens > 0
    with pytest.raises(anthropic.BadRequestError) as refused:  # a base model takes no tools
        client.messages.create(model="default", max_tokens=8, messages=USER, tools=[WEATHER])
    error: Any = refused.value.body
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "tools" in error["error"]["message"]


def test_anthropic_upstream_redacted_thinking_and_stop_sequence(
        anthropic_ingress: tuple[ServerThread, FakeAnthropicUpstream]) -> None:
    server, fake = anthropic_ingress
    fake.reset()
    end = message_end("stop_sequence", output_tokens=3)
    end[0][1]["delta"]["stop_sequence"] = "END"
    fake.script.events = [message_start(), block_start(0, {"type": "redacted_thinking",
                                                           "data": "opaque"}),
                          block_stop(0), *text_block(1, ["Done"]), *end]
    with _client(server).messages.stream(model="anthropic/claude-test", max_tokens=64,
                                         messages=USER) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["redacted_thinking", "text"]
    assert final.content[0].type == "redacted_thinking" and final.content[0].data == "opaque"
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "END")


def stream_start_input_tokens(server: ServerThread, fake: FakeAnthropicUpstream) -> int:
    """``message_start``'s input tokens for the fake's text message (its own count)."""
    fake.script.events = text_message(["x"], input_tokens=25)
    response = httpx.post(server.url + "/v1/messages", json={
        "model": "anthropic/claude-test", "max_tokens": 5, "messages": USER, "stream": True})
    start = _events(response.content)[0][1]
    return int(start["message"]["usage"]["input_tokens"])
