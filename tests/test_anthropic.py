"""The Anthropic Messages provider, driven with the openai SDK against a scripted fake."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from sluicegate.config import GatewayConfig, ProviderSettings

from .fakes import ServerThread, start_gateway
from .fakes_anthropic import (
    PING,
    AnthropicScript,
    FakeAnthropicUpstream,
    block_stop,
    error_body,
    json_delta,
    message_end,
    message_start,
    text_block,
    text_message,
    thinking_block,
    tool_start,
)

KEY = "sk-ant-test-key"
MODEL = "anthropic/claude-test"
MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJ"
         "RU5ErkJggg==")


def _config(base_url: str) -> GatewayConfig:
    return GatewayConfig(embedded_model=False,
                         providers={"anthropic": ProviderSettings(base_url=base_url)})


@pytest.fixture(scope="module")
def anthropic_upstream() -> Iterator[FakeAnthropicUpstream]:
    fake = FakeAnthropicUpstream(KEY).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def anthropic_gateway(anthropic_upstream: FakeAnthropicUpstream) -> Iterator[ServerThread]:
    mp = pytest.MonkeyPatch()
    mp.setenv("ANTHROPIC_API_KEY", KEY)
    server, _ = start_gateway(_config(anthropic_upstream.base_url))
    try:
        yield server
    finally:
        server.stop()
        mp.undo()


@pytest.fixture
def upstream(anthropic_upstream: FakeAnthropicUpstream) -> FakeAnthropicUpstream:
    anthropic_upstream.reset()
    return anthropic_upstream


@pytest.fixture
def client(anthropic_gateway: ServerThread, upstream: FakeAnthropicUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=anthropic_gateway.url + "/v1", api_key="x", max_retries=0)


def _post(server: ServerThread, **body: Any) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions",
                      json={"model": MODEL, "messages": MESSAGES, "stream": True, **body})


def _events(raw: bytes) -> list[dict[str, Any]]:
    frames = [f for f in raw.split(b"\n\n") if f]
    assert frames[-1] == b"data: [DONE]"
    assert all(f.startswith(b"data: ") and b"\n" not in f for f in frames)
    return [orjson.loads(f[6:]) for f in frames[:-1]]


def _two_tool_calls() -> list[Any]:
    """A text block, then two tool_use blocks whose argument pieces interleave."""
    return [
        message_start(input_tokens=40, cache_creation=5, cache_read=100),
        *text_block(0, ["Checking both."]),
        tool_start(1, "toolu_paris", "get_weather"),
        PING,
        tool_start(2, "toolu_tokyo", "get_weather"),
        json_delta(1, ""),
        json_delta(1, '{"city": "Pa'),
        json_delta(2, '{"city": '),
        json_delta(1, 'ris", "unit": "c"}'),
        json_delta(2, '"Tokyo"}'),
        block_stop(1),
        block_stop(2),
        *message_end("tool_use", output_tokens=57),
    ]


WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city", "strict": True,
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string"},
                                  "unit": {"type": ["string", "null"]}}}}}


# -- streams -------------------------------------------------------------------------------------


def test_text_stream_and_request_basics(client: openai.OpenAI,
                                        upstream: FakeAnthropicUpstream) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, world!"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {MODEL} and len({c.id for c in chunks}) == 1
    assert all(c.usage is None for c in chunks), "usage was not asked for"
    (received,) = upstream.received
    assert (received.method, received.path) == ("POST", "/v1/messages")
    assert received.headers["x-api-key"] == KEY
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["Accept"] == "text/event-stream"
    assert "Authorization" not in received.headers
    assert received.body == {
        "model": "claude-test", "stream": True, "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    }


def test_request_translation(client: openai.OpenAI, upstream: FakeAnthropicUpstream) -> None:
    messages: Any = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Compare these."},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png",
                                                "detail": "high"}},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
        ]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25 C"}]},
        {"role": "user", "content": "And tomorrow?"},
    ]
    list(client.chat.completions.create(
        model=MODEL, messages=messages, stream=True, max_tokens=300, temperature=0.5, top_p=0.9,
        stop=["END", "STOP"], user="user-42", tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False, store=False, metadata={"k": "v"},
        stream_options={"include_usage": True}, extra_body={"custom": 1}))
    body = upstream.received[-1].body
    assert body == {
        "model": "claude-test", "stream": True, "max_tokens": 300,
        "system": "Be brief.\n\nUse metric units.",
        "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END", "STOP"],
        "metadata": {"user_id": "user-42"},
        "tools": [{"name": "get_weather", "description": "Weather for a city",
                   "input_schema": WEATHER_TOOL["function"]["parameters"]}],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Compare these."},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PIXEL}},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather",
                 "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather",
                 "input": {"city": "Tokyo"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18 C"},
                {"type": "tool_result", "tool_use_id": "call_2",
                 "content": [{"type": "text", "text": "25 C"}]},
                {"type": "text", "text": "And tomorrow?"},
            ]},
        ],
    }


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}),
    ("required", {"type": "any"}),
    ("none", {"type": "none"}),
])
def test_tool_choice_strings(client: openai.OpenAI, upstream: FakeAnthropicUpstream,
                             choice: Any, expected: dict[str, Any]) -> None:
    list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                        tools=[WEATHER_TOOL], tool_choice=choice,
                                        max_completion_tokens=50, max_tokens=999))
    body = upstream.received[-1].body
    assert body is not None
    assert body["tool_choice"] == expected
    assert body["max_tokens"] == 50  # max_completion_tokens wins


def test_parallel_tool_calls_stream_helper(client: openai.OpenAI,
                                           upstream: FakeAnthropicUpstream) -> None:
    upstream.script = AnthropicScript(events=_two_tool_calls())
    with client.chat.completions.stream(model=MODEL, messages=MESSAGES,
                                        tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking both."
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name) for c in calls] == [("toolu_paris", "get_weather"),
                                                        ("toolu_tokyo", "get_weather")]
    assert [orjson.loads(c.function.arguments) for c in calls] == [
        {"city": "Paris", "unit": "c"}, {"city": "Tokyo"}]


def test_parallel_tool_calls_deltas_and_usage(client: openai.OpenAI,
                                              upstream: FakeAnthropicUpstream) -> None:
    upstream.script = AnthropicScript(events=_two_tool_calls())
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], stream=True,
        stream_options={"include_usage": True}))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    firsts = [d for d in deltas if d.id]
    assert [(d.index, d.id, d.type) for d in firsts] == [(0, "toolu_paris", "function"),
                                                         (1, "toolu_tokyo", "function")]
    assert all(d.function and d.function.arguments == "" for d in firsts)
    pieces = [(d.index, d.function.arguments) for d in deltas if not d.id and d.function]
    # Each call's fragments stay together (the SDK's helper takes a new index as "previous call
    # done"); the second call's pieces, held back while the first was open, arrive as one.
    assert pieces == [(0, '{"city": "Pa'), (0, 'ris", "unit": "c"}'), (1, '{"city": "Tokyo"}')]
    assert [d.index for d in deltas] == [0, 0, 0, 1, 1]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "tool_calls" and finish.count("tool_calls") == 1
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (145, 57, 202)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 100


def test_thinking_becomes_reasoning_content(client: openai.OpenAI,
                                            upstream: FakeAnthropicUpstream) -> None:
    upstream.script = AnthropicScript(events=[
        message_start(), *thinking_block(0, ["Let me think", " about it."]),
        *text_block(1, ["42"]), *message_end("end_turn", 30)])
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                                 reasoning_effort="medium"))
    reasoning = [(c.choices[0].delta.model_extra or {}).get("reasoning_content")
                 for c in chunks if c.choices]
    assert [r for r in reasoning if r] == ["Let me think", " about it."]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "42"
    body = upstream.received[-1].body
    assert body is not None
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert body["max_tokens"] == 4096 + 4096
    assert "reasoning_effort" not in body


def test_thinking_wire_bytes_and_native_thinking(anthropic_gateway: ServerThread,
                                                 upstream: FakeAnthropicUpstream) -> None:
    upstream.script = AnthropicScript(events=[
        message_start(), *thinking_block(0, ["hmm"]), *text_block(1, ["ok"]),
        *message_end()])
    r = _post(anthropic_gateway, max_tokens=1000,
              thinking={"type": "enabled", "budget_tokens": 2000})
    deltas = [e["choices"][0]["delta"] for e in _events(r.content)]
    assert {"reasoning_content": "hmm"} in deltas
    assert not any("signature" in orjson.dumps(d).decode() for d in deltas)
    body = upstream.received[-1].body
    assert body is not None
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    assert body["max_tokens"] == 3000  # the budget plus the client's limit


def test_non_stream_keeps_reasoning_content(client: openai.OpenAI,
                                            upstream: FakeAnthropicUpstream) -> None:
    upstream.script = AnthropicScript(events=[
        message_start(), *thinking_block(0, ["Let me think", " about it."]),
        *text_block(1, ["42"]), *message_end("end_turn", 30)])
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES,
                                                reasoning_effort="low")
    message = completion.choices[0].message
    assert message.content == "42"
    assert (message.model_extra or {}).get("reasoning_content") == "Let me think about it."


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"),
    ("max_tokens", "length"), ("model_context_window_exceeded", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"),
])
def test_finish_reasons(client: openai.OpenAI, upstream: FakeAnthropicUpstream,
                        stop_reason: str, finish_reason: str) -> None:
    upstream.script = AnthropicScript(events=text_message(["x"], stop_reason))
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == finish_reason


def test_non_stream_request_is_accumulated(client: openai.OpenAI,
                                           upstream: FakeAnthropicUpstream) -> None:
    upstream.script = AnthropicScript(events=_two_tool_calls())
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES,
                                                tools=[WEATHER_TOOL])
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [c.function.arguments for c in message.tool_calls or []] == [
        '{"city": "Paris", "unit": "c"}', '{"city": "Tokyo"}']
    assert completion.usage is not None and completion.usage.total_tokens == 202
    assert upstream.received[-1].body is not None and upstream.received[-1].body["stream"]


def test_tool_call_without_arguments_gets_empty_object(client: openai.OpenAI,
                                                       upstream: FakeAnthropicUpstream) -> None:
    upstream.script = AnthropicScript(events=[
        message_start(), tool_start(0, "toolu_now", "get_time"), json_delta(0, ""),
        block_stop(0), *message_end("tool_use")])
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES,
                                                tools=[WEATHER_TOOL])
    (call,) = completion.choices[0].message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == ("toolu_now", "get_time",
                                                                      "{}")


def test_tool_calls_left_open_are_completed_at_message_delta(
        client: openai.OpenAI, upstream: FakeAnthropicUpstream) -> None:
    upstream.script = AnthropicScript(events=[
        message_start(), tool_start(0, "toolu_a", "f"), tool_start(1, "toolu_b", "g"),
        json_delta(1, '{"x": 1}'), json_delta(0, '{"y": 2}'), *message_end("tool_use")])
    with client.chat.completions.stream(model=MODEL, messages=MESSAGES,
                                        tools=[WEATHER_TOOL]) as stream:
        calls = stream.get_final_completion().choices[0].message.tool_calls or []
    assert [(c.id, c.function.arguments) for c in calls] == [("toolu_a", '{"y": 2}'),
                                                            ("toolu_b", '{"x": 1}')]


def test_events_split_across_reads(client: openai.OpenAI, upstream: FakeAnthropicUpstream) -> None:
    upstream.script = AnthropicScript(events=text_message(["Grüße", " 👋", " done"]),
                                      write_size=7)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Grüße 👋 done"


# -- errors ---------------------------------------------------------------------------------------


def test_midstream_error_after_text(client: openai.OpenAI, anthropic_gateway: ServerThread,
                                    upstream: FakeAnthropicUpstream) -> None:
    events = [message_start(), *text_block(0, ["one", " two"])[:-1],
              ("error", error_body("overloaded_error", "Overloaded")), *message_end()]
    upstream.script = AnthropicScript(events=events)
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["one", " two"]
    assert "Overloaded" in str(info.value)
    frames = _events(_post(anthropic_gateway).content)
    # The upstream's own words, after what happened: who, and how many tokens arrived (no
    # usage from the upstream yet: estimated at ~4 characters a token, "one two" → 2).
    assert frames[-1]["error"] == {
        "message": "The upstream (anthropic) reported an error after 2 tokens: Overloaded",
        "type": "overloaded_error", "param": None, "code": "upstream_error"}
    assert frames[-1]["choices"][0]["finish_reason"] == "error"


def test_truncated_stream_is_an_error(anthropic_gateway: ServerThread,
                                      upstream: FakeAnthropicUpstream) -> None:
    upstream.script = AnthropicScript(events=text_message(["a", "b", "c"]), die_after=5)
    frames = _events(_post(anthropic_gateway).content)
    assert [f["choices"][0]["delta"].get("content") for f in frames[:-1]] == ["", "a", "b"]
    assert frames[-1]["error"]["type"] == "server_error"
    assert frames[-1]["choices"][0]["finish_reason"] == "error"


@pytest.mark.parametrize(("status", "etype", "exc_type"), [
    (429, "rate_limit_error", openai.RateLimitError),
    (529, "overloaded_error", openai.InternalServerError),
    (400, "invalid_request_error", openai.BadRequestError),
    (500, "api_error", openai.InternalServerError),
])
def test_status_errors_before_the_stream(client: openai.OpenAI, upstream: FakeAnthropicUpstream,
                                         status: int, etype: str,
                                         exc_type: type[openai.APIStatusError]) -> None:
    headers = {"retry-after": "7"} if status == 429 else {}
    upstream.script = AnthropicScript(status=status, error=error_body(etype, f"upstream {status}"),
                                      error_headers=headers)
    with pytest.raises(exc_type) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert info.value.status_code == status
    assert info.value.body == {"message": f"upstream {status}", "type": etype, "param": None,
                               "code": "upstream_error"}
    if status == 429:
        assert info.value.response.headers["retry-after"] == "7"


def test_wrong_key_is_read_per_request(client: openai.OpenAI, upstream: FakeAnthropicUpstream,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-rotated")
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert upstream.received[-1].headers["x-api-key"] == "sk-ant-rotated"
    # The upstream refusing the gateway's key is a 502 for the client, whose own key is fine;
    # the upstream's words ("invalid x-api-key") go to the log only.
    assert info.value.status_code == 502
    assert info.value.body["message"] == (  # type: ignore[index]
        "The upstream (anthropic) refused the gateway's credentials (HTTP 401).")


def test_input_audio_part_is_rejected(client: openai.OpenAI,
                                      upstream: FakeAnthropicUpstream) -> None:
    messages: Any = [{"role": "user", "content": [
        {"type": "text", "text": "What is said?"},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=messages, stream=True)
    assert info.value.param == "messages.0.content.1"
    assert "input_audio" in info.value.message
    assert upstream.received == []


@pytest.mark.parametrize(("field", "value", "param"), [
    ("n", 2, "n"),
    ("logprobs", True, "logprobs"),
    ("top_logprobs", 3, "top_logprobs"),
    ("logit_bias", {"50256": -100}, "logit_bias"),
    ("presence_penalty", 0.5, "presence_penalty"),
    ("frequency_penalty", -1, "frequency_penalty"),
    ("seed", 7, "seed"),
    ("response_format", {"type": "json_object"}, "response_format"),
    ("modalities", ["text", "audio"], "modalities"),
    ("prediction", {"type": "content", "content": "x"}, "prediction"),
    ("temperature", 1.5, "temperature"),
    ("reasoning_effort", "extreme", "reasoning_effort"),
    ("tool_choice", "required", "tool_choice"),
    ("messages", [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/bmp;base64,Qk0="}}]}], "messages.0.content.0"),
    ("messages", [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}],
     "messages.1.tool_calls.0.function.arguments"),
])
def test_unsupported_values_are_rejected(anthropic_gateway: ServerThread,
                                         upstream: FakeAnthropicUpstream, field: str,
                                         value: Any, param: str) -> None:
    r = _post(anthropic_gateway, **{field: value})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert upstream.received == []


def test_harmless_and_default_fields_are_ignored(anthropic_gateway: ServerThread,
                                                 upstream: FakeAnthropicUpstream) -> None:
    r = _post(anthropic_gateway, logprobs=False, presence_penalty=0, n=1, store=True,
              service_tier="auto", metadata={"a": "b"}, response_format={"type": "text"},
              modalities=["text"], parallel_tool_calls=False, reasoning_effort="none",
              vendor_field={"x": 1})
    assert r.status_code == 200 and _events(r.content)[-1]["choices"][0]["finish_reason"]
    body = upstream.received[-1].body
    assert body is not None
    assert set(body) == {"model", "messages", "max_tokens", "stream"}


# -- models and keys ------------------------------------------------------------------------------


def test_models_are_listed_from_the_upstream(client: openai.OpenAI,
                                             upstream: FakeAnthropicUpstream) -> None:
    ids = [m.id for m in client.models.list()]
    assert "anthropic/claude-test" in ids and "anthropic/claude-other" in ids
    (received,) = upstream.received
    assert (received.method, received.path) == ("GET", "/v1/models")
    assert received.headers["x-api-key"] == KEY
    assert received.headers["anthropic-version"] == "2023-06-01"


def test_gateway_without_key(anthropic_upstream: FakeAnthropicUpstream,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    anthropic_upstream.reset()
    server, _ = start_gateway(_config(anthropic_upstream.base_url))
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        assert not [m.id for m in client.models.list() if m.id.startswith("anthropic/")]
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        assert info.value.code == "provider_not_configured"
        assert "ANTHROPIC_API_KEY" in info.value.message
        assert anthropic_upstream.received == []
    finally:
        server.stop()


# -- connections ----------------------------------------------------------------------------------


def test_connection_is_reused_after_message_stop(client: openai.OpenAI,
                                                 upstream: FakeAnthropicUpstream) -> None:
    # The body's end comes after message_stop, so the gateway must drain it to keep the socket.
    upstream.script = AnthropicScript(eof_delay_s=0.05)
    for _ in range(3):
        list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
        time.sleep(0.2)  # the gateway returns the connection to its pool just after [DONE]
    ports = [r.peer_port for r in upstream.received]
    assert len(ports) == 3 and len(set(ports)) == 1, ports


def test_disconnect_closes_upstream_connection(anthropic_gateway: ServerThread,
                                               upstream: FakeAnthropicUpstream) -> None:
    upstream.script = AnthropicScript(events=text_message([f"t{i} " for i in range(200)]),
                                      gap_s=0.02)
    body = orjson.dumps({"model": MODEL, "messages": MESSAGES, "stream": True})
    sock = socket.create_connection(("127.0.0.1", anthropic_gateway.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    seen = b""
    while seen.count(b"data: ") < 4:
        seen += sock.recv(65536)
    closed_at = time.monotonic()
    sock.close()
    deadline = closed_at + 5
    while not upstream.closed_early and time.monotonic() < deadline:
        time.sleep(0.005)
    assert upstream.closed_early, "the upstream never saw the gateway close its connection"
    assert upstream.closed_early[0] - closed_at < 1.0
