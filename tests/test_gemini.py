"""The Gemini provider, against a byte-exact fake Gemini API on loopback (docs/wire.md §6), judged
by the official ``openai`` SDK."""

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
from .fakes_gemini import FakeGeminiUpstream, GeminiScript, text_event, usage_metadata

KEY = "gemini-test-key"
MODEL = "gemini/gemini-test"
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "hello there"}]
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object",
                                           "properties": {"tz": {"type": "string"}}}}},
]


def _config(base_url: str) -> GatewayConfig:
    return GatewayConfig(embedded_model=False,
                         providers={"gemini": ProviderSettings(base_url=base_url)})


@pytest.fixture(scope="module")
def gemini_upstream() -> Iterator[FakeGeminiUpstream]:
    fake = FakeGeminiUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gemini_gateway(gemini_upstream: FakeGeminiUpstream) -> Iterator[ServerThread]:
    mp = pytest.MonkeyPatch()
    mp.setenv("GEMINI_API_KEY", KEY)
    mp.delenv("GOOGLE_API_KEY", raising=False)
    server, _ = start_gateway(_config(gemini_upstream.base_url))
    yield server
    server.stop()
    mp.undo()


@pytest.fixture
def gfake(gemini_upstream: FakeGeminiUpstream) -> FakeGeminiUpstream:
    gemini_upstream.reset()
    return gemini_upstream


@pytest.fixture
def gw(gemini_gateway: ServerThread, gfake: FakeGeminiUpstream,
       monkeypatch: pytest.MonkeyPatch) -> ServerThread:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)  # keys are read per request
    return gemini_gateway


def _client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def _reasoning(delta: Any) -> str | None:
    return (delta.model_extra or {}).get("reasoning_content")


# -- text ----------------------------------------------------------------------------------


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_text_stream_and_request_line(gw: ServerThread, gfake: FakeGeminiUpstream,
                                      newline: bytes) -> None:
    gfake.script = GeminiScript(newline=newline)
    chunks = list(_client(gw).chat.completions.create(model=MODEL, messages=MESSAGES,
                                                      stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hello, world!")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert {c.model for c in chunks} == {MODEL}
    assert all(c.usage is None for c in chunks), "usage was not asked for"
    received = gfake.received[-1]
    assert received.method == "POST"
    assert received.path == "/v1beta/models/gemini-test:streamGenerateContent"
    assert received.query == {"alt": "sse"}
    assert received.headers["x-goog-api-key"] == KEY
    assert received.headers["Content-Type"] == "application/json"
    assert "Authorization" not in received.headers
    assert received.body == {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_events_split_across_reads(gw: ServerThread, gfake: FakeGeminiUpstream,
                                   newline: bytes) -> None:
    # 5-byte pieces cut CRLF pairs, the "data: " prefix and the JSON apart.
    gfake.script = GeminiScript(newline=newline, split=5,
                                events=[text_event("né"), text_event("ü€", finish="STOP")])
    chunks = list(_client(gw).chat.completions.create(model=MODEL, messages=MESSAGES,
                                                      stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "néü€"


def test_wire_bytes_are_openai_data_only(gw: ServerThread, gfake: FakeGeminiUpstream) -> None:
    with httpx.stream("POST", gw.url + "/v1/chat/completions",
                      json={"model": MODEL, "messages": MESSAGES, "stream": True,
                            "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        body = r.read()
    assert body.endswith(b"\n\ndata: [DONE]\n\n")
    events = body.split(b"\n\n")[:-2]
    payloads = [orjson.loads(e[len(b"data: "):]) for e in events]
    assert all(e.startswith(b"data: ") and b"\n" not in e for e in events)
    assert [p["choices"][0]["delta"].get("content") for p in payloads[:3]] == [
        "Hello", ", world", "!"]
    assert payloads[3]["choices"] == [{"index": 0, "delta": {}, "logprobs": None,
                                       "finish_reason": "stop"}]
    assert payloads[4]["choices"] == []
    assert payloads[4]["usage"] == {
        "prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}}


def test_non_stream_request_accumulates(gw: ServerThread, gfake: FakeGeminiUpstream) -> None:
    completion = _client(gw).chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content == "Hello, world!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 10


# -- tool calls ----------------------------------------------------------------------------


def _tool_events() -> list[dict[str, Any]]:
    return [
        text_event("Checking both.", usage=usage_metadata(20, 2)),
        {"candidates": [{"index": 0, "content": {"role": "model", "parts": [
            {"functionCall": {"id": "gem-call-1", "name": "get_weather",
                              "args": {"city": "Zürich"}}},
            {"functionCall": {"name": "get_time", "args": {"tz": "Europe/Zurich"}}},
        ]}, "finishReason": "STOP"}],
         "usageMetadata": usage_metadata(20, 12, cached=5)},
    ]


def test_parallel_tool_calls_with_stream_helper(gw: ServerThread,
                                                gfake: FakeGeminiUpstream) -> None:
    gfake.script = GeminiScript(events=_tool_events())
    done: list[tuple[int, str, str]] = []
    with _client(gw).chat.completions.stream(model=MODEL, messages=MESSAGES,
                                             tools=TOOLS) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.done":
                done.append((event.index, event.name, event.arguments))
        final = stream.get_final_completion()
    assert done == [(0, "get_weather", '{"city":"Zürich"}'),
                    (1, "get_time", '{"tz":"Europe/Zurich"}')]
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking both."
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert [orjson.loads(c.function.arguments) for c in calls] == [
        {"city": "Zürich"}, {"tz": "Europe/Zurich"}]
    assert calls[0].id == "gem-call-1"
    assert calls[1].id.startswith("call_") and len(calls[1].id) == 5 + 24
    declarations = gfake.received[-1].body["tools"]
    assert declarations == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather for a city.",
         "parametersJsonSchema": TOOLS[0]["function"]["parameters"]},
        {"name": "get_time", "parametersJsonSchema": TOOLS[1]["function"]["parameters"]},
    ]}]


def test_parallel_tool_calls_plain_iteration_with_usage(gw: ServerThread,
                                                        gfake: FakeGeminiUpstream) -> None:
    gfake.script = GeminiScript(events=_tool_events())
    chunks = list(_client(gw).chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, stream=True,
        stream_options={"include_usage": True}))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert [(tc.index, tc.type, tc.function.name) for tc in calls] == [
        (0, "function", "get_weather"), (1, "function", "get_time")]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (20, 12, 32)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 5
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "tool_calls" and finishes.count("tool_calls") == 1


# -- thinking ------------------------------------------------------------------------------


def test_thought_parts_become_reasoning_content(gw: ServerThread,
                                                gfake: FakeGeminiUpstream) -> None:
    gfake.script = GeminiScript(events=[
        text_event("Let me think", thought=True, usage=usage_metadata(9, 0, thoughts=40)),
        text_event(" about it.", thought=True),
        text_event("It is 4.", finish="STOP", usage=usage_metadata(9, 4, thoughts=52)),
    ])
    chunks = list(_client(gw).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, reasoning_effort="high",
        stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(_reasoning(d) or "" for d in deltas) == "Let me think about it."
    assert "".join(d.content or "" for d in deltas) == "It is 4."
    assert all(not (_reasoning(d) and d.content) for d in deltas)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 56 and usage.prompt_tokens == 9
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 52
    config = gfake.received[-1].body["generationConfig"]
    assert config == {"thinkingConfig": {"thinkingBudget": 16384, "includeThoughts": True}}


@pytest.mark.parametrize(("effort", "budget"), [("minimal", 1024), ("low", 1024),
                                                ("medium", 4096)])
def test_reasoning_effort_budgets(gw: ServerThread, gfake: FakeGeminiUpstream, effort: str,
                                  budget: int) -> None:
    list(_client(gw).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                             reasoning_effort=effort))
    assert gfake.received[-1].body["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": budget, "includeThoughts": True}


# -- errors --------------------------------------------------------------------------------


def test_midstream_error_raises_after_text(gw: ServerThread, gfake: FakeGeminiUpstream) -> None:
    gfake.script = GeminiScript(error_after=2)
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in _client(gw).chat.completions.create(model=MODEL, messages=MESSAGES,
                                                         stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["Hello", ", world"]
    assert "overloaded" in str(info.value)
    assert info.value.code == "UNAVAILABLE"


def test_connection_lost_mid_stream_gives_error_frame(gw: ServerThread,
                                                      gfake: FakeGeminiUpstream) -> None:
    gfake.script = GeminiScript(die_after=2)
    r = httpx.post(gw.url + "/v1/chat/completions",
                   json={"model": MODEL, "messages": MESSAGES, "stream": True})
    events = [e for e in r.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    last = orjson.loads(events[-2][len(b"data: "):])
    assert last["error"]["code"] == "upstream_error"
    assert last["choices"][0]["finish_reason"] == "error"
    texts = [orjson.loads(e[6:])["choices"][0]["delta"].get("content") for e in events[:-2]]
    assert [t for t in texts if t] == ["Hello", ", world"]


def test_malformed_event_is_skipped(gw: ServerThread, gfake: FakeGeminiUpstream) -> None:
    gfake.script = GeminiScript(events=[text_event("a"), b"{not json", b"[1, 2]",
                                        text_event("b", finish="STOP")])
    chunks = list(_client(gw).chat.completions.create(model=MODEL, messages=MESSAGES,
                                                      stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ab"


def test_body_ending_without_finish_reason_is_an_error(gw: ServerThread,
                                                       gfake: FakeGeminiUpstream) -> None:
    gfake.script = GeminiScript(events=[text_event("cut")])
    with pytest.raises(openai.APIError, match=r"^The upstream \(gemini\) ended the stream "
                       r"after 1 token without finishing the answer\.$"):
        list(_client(gw).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))


def test_429_before_stream_keeps_status(gw: ServerThread, gfake: FakeGeminiUpstream) -> None:
    gfake.script = GeminiScript(
        status=429, error_headers={"Retry-After": "1"},
        error_body={"error": {"code": 429, "message": "Resource has been exhausted.",
                              "status": "RESOURCE_EXHAUSTED"}})
    r = httpx.post(gw.url + "/v1/chat/completions",
                   json={"model": MODEL, "messages": MESSAGES, "stream": True})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.json() == {"error": {"message": "Resource has been exhausted.",
                                  "type": "rate_limit_error", "param": None,
                                  "code": "RESOURCE_EXHAUSTED"}}
    with pytest.raises(openai.RateLimitError) as info:
        _client(gw).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert info.value.status_code == 429


def test_503_before_stream_keeps_status(gw: ServerThread, gfake: FakeGeminiUpstream) -> None:
    gfake.script = GeminiScript(
        status=503, error_body=[{"error": {"code": 503, "message": "The model is overloaded.",
                                           "status": "UNAVAILABLE"}}])
    with pytest.raises(openai.InternalServerError) as info:
        _client(gw).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert info.value.status_code == 503
    assert info.value.body == {"message": "The model is overloaded.", "type": "overloaded_error",
                               "param": None, "code": "UNAVAILABLE"}


@pytest.mark.parametrize(("status", "etype", "gstatus"), [
    (400, "invalid_request_error", "INVALID_ARGUMENT"),
    (403, "permission_error", "PERMISSION_DENIED"),
    (404, "not_found_error", "NOT_FOUND"),
    (500, "api_error", "INTERNAL"),
])
def test_status_error_types(gw: ServerThread, gfake: FakeGeminiUpstream, status: int,
                            etype: str, gstatus: str) -> None:
    gfake.script = GeminiScript(status=status, error_body={
        "error": {"code": status, "message": "nope", "status": gstatus}})
    r = httpx.post(gw.url + "/v1/chat/completions",
                   json={"model": MODEL, "messages": MESSAGES, "stream": True})
    if status == 403:  # the gateway's own key refused upstream: not the client's to fix
        assert r.status_code == 502
        assert r.json()["error"] == {
            "message": "The upstream (gemini) refused the gateway's credentials (HTTP 403).",
            "type": "server_error", "param": None, "code": "upstream_error"}
        return
    assert r.status_code == status
    assert r.json()["error"] == {"message": "nope", "type": etype, "param": None,
                                 "code": gstatus}


# -- finish reasons ------------------------------------------------------------------------


@pytest.mark.parametrize(("gemini", "openai_reason"), [
    ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("IMAGE_SAFETY", "content_filter"),
    ("MALFORMED_FUNCTION_CALL", "stop"), ("OTHER", "stop"),
])
def test_finish_reason_mapping(gw: ServerThread, gfake: FakeGeminiUpstream, gemini: str,
                               openai_reason: str) -> None:
    gfake.script = GeminiScript(events=[text_event("x"), text_event("", finish=gemini)])
    chunks = list(_client(gw).chat.completions.create(model=MODEL, messages=MESSAGES,
                                                      stream=True))
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes == [None, openai_reason]


def test_blocked_prompt_finishes_with_content_filter(gw: ServerThread,
                                                     gfake: FakeGeminiUpstream) -> None:
    gfake.script = GeminiScript(events=[{"promptFeedback": {"blockReason": "SAFETY"},
                                         "usageMetadata": usage_metadata(5, 0)}])
    chunks = list(_client(gw).chat.completions.create(model=MODEL, messages=MESSAGES,
                                                      stream=True, n=2))
    finishes = {c.choices[0].index: c.choices[0].finish_reason for c in chunks if c.choices}
    assert finishes == {0: "content_filter", 1: "content_filter"}


# -- n > 1 ---------------------------------------------------------------------------------


def test_two_candidates_interleave(gw: ServerThread, gfake: FakeGeminiUpstream) -> None:
    gfake.script = GeminiScript(events=[
        {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "A1"}]}},
                        {"index": 1, "content": {"role": "model", "parts": [{"text": "B1"}]}}]},
        {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": " A2"}]},
                         "finishReason": "STOP"},
                        {"index": 1, "content": {"role": "model", "parts": [{"text": " B2"}]},
                         "finishReason": "MAX_TOKENS"}],
         "usageMetadata": usage_metadata(3, 8)},
    ])
    chunks = list(_client(gw).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, n=2,
        stream_options={"include_usage": True}))
    assert gfake.received[-1].body["generationConfig"] == {"candidateCount": 2}
    for index, text, reason in ((0, "A1 A2", "stop"), (1, "B1 B2", "length")):
        own = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == index]
        assert own[0].delta.role == "assistant"
        assert "".join(ch.delta.content or "" for ch in own) == text
        assert own[-1].finish_reason == reason
    assert [c.choices[0].index for c in chunks if c.choices][:2] == [0, 1]
    assert all(len(c.choices) <= 1 for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 11


# -- request translation -------------------------------------------------------------------

PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJ"
       "RU5ErkJggg==")


def test_request_translation(gw: ServerThread, gfake: FakeGeminiUpstream) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?s=1",
                                                "detail": "high"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        ]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            {"id": "call_b", "type": "function",
             "function": {"name": "get_time", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp_c": 3}'},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text",
                                                                "text": "09:30"}]},
        {"role": "user", "content": "Thanks"},
    ]
    list(_client(gw).chat.completions.create(
        model=MODEL, messages=messages, stream=True,
        temperature=0.4, top_p=0.9, max_tokens=50, max_completion_tokens=200,
        stop=["END", "STOP"], seed=42, presence_penalty=0.5, frequency_penalty=-0.5,
        response_format={"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object", "properties": {
                "a": {"type": "string"}}}}},
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        user="someone", store=False, metadata={"k": "v"}, parallel_tool_calls=True,
        logprobs=False, extra_body={"some_vendor_field": 1}))
    body = gfake.received[-1].body
    assert body is not None
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."},
                                                   {"text": "Use metric units."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [
            {"text": "What is in these?"},
            {"inlineData": {"mimeType": "image/png", "data": PNG}},
            {"fileData": {"mimeType": "image/webp",
                          "fileUri": "https://example.com/cat.webp?s=1"}},
            {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        ]},
        {"role": "model", "parts": [
            {"text": "Let me look."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
            {"functionCall": {"name": "get_time", "args": {}}},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 3}}},
            {"functionResponse": {"name": "get_time", "response": {"content": "09:30"}}},
        ]},
        {"role": "user", "parts": [{"text": "Thanks"}]},
    ]
    assert body["generationConfig"] == {
        "temperature": 0.4, "topP": 0.9, "maxOutputTokens": 200,
        "stopSequences": ["END", "STOP"], "seed": 42, "presencePenalty": 0.5,
        "frequencyPenalty": -0.5, "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object", "properties": {"a": {"type": "string"}}},
    }
    assert body["toolConfig"] == {"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["get_time"]}}
    assert [d["name"] for d in body["tools"][0]["functionDeclarations"]] == [
        "get_weather", "get_time"]
    assert set(body) == {"contents", "systemInstruction", "generationConfig", "tools",
                         "toolConfig"}


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"mode": "AUTO"}), ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}),
])
def test_tool_choice_modes(gw: ServerThread, gfake: FakeGeminiUpstream, choice: str,
                           expected: dict[str, Any]) -> None:
    list(_client(gw).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                             tools=TOOLS,
                                             tool_choice=choice))
    assert gfake.received[-1].body["toolConfig"] == {
        "functionCallingConfig": expected}


def test_json_object_and_max_tokens(gw: ServerThread, gfake: FakeGeminiUpstream) -> None:
    list(_client(gw).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                             max_tokens=30, stop="###",
                                             response_format={"type": "json_object"}))
    assert gfake.received[-1].body["generationConfig"] == {
        "maxOutputTokens": 30, "stopSequences": ["###"], "responseMimeType": "application/json"}


@pytest.mark.parametrize(("extra", "param"), [
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"response_format": {"type": "grammar"}}, "response_format.type"),
    ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "video_url", "video_url": "x"}]}]},
     "messages.0.content.1"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]},
     "messages.0.content.0"),
    ({"messages": [{"role": "user", "content": "hi"},
                   {"role": "tool", "tool_call_id": "call_zzz", "content": "x"}]},
     "messages.1.tool_call_id"),
    ({"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]},
     "messages.0.tool_calls.0.function.arguments"),
    ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
])
def test_unsupported_input_is_400(gw: ServerThread, gfake: FakeGeminiUpstream,
                                  extra: dict[str, Any], param: str) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, **extra}
    r = httpx.post(gw.url + "/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert gfake.received == [], "a rejected request must not reach the upstream"


def test_text_completions_are_400(gw: ServerThread, gfake: FakeGeminiUpstream) -> None:
    with pytest.raises(openai.BadRequestError):
        _client(gw).completions.create(model=MODEL, prompt="hi")
    assert gfake.received == []


# -- disconnects ---------------------------------------------------------------------------


def test_client_disconnect_closes_upstream(gw: ServerThread, gfake: FakeGeminiUpstream) -> None:
    gfake.script = GeminiScript(events=[text_event(f"t{i} ") for i in range(200)], gap_s=0.05)
    body = orjson.dumps({"model": MODEL, "messages": MESSAGES, "stream": True})
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    seen = b""
    while seen.count(b"data: ") < 3:
        seen += sock.recv(65536)
    closed_at = time.monotonic()
    sock.close()
    deadline = closed_at + 5
    while not gfake.closed_early and time.monotonic() < deadline:
        time.sleep(0.005)
    assert gfake.closed_early, "the upstream never saw the gateway close its connection"
    assert gfake.closed_early[0] - closed_at < 1.0


# -- models and keys -----------------------------------------------------------------------


@pytest.mark.parametrize("key_env", ["GEMINI_API_KEY", "GOOGLE_API_KEY"])
def test_models_listed_from_upstream(gemini_upstream: FakeGeminiUpstream,
                                     monkeypatch: pytest.MonkeyPatch, key_env: str) -> None:
    gemini_upstream.reset()
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv(key_env, "key-from-" + key_env)
    server, _ = start_gateway(_config(gemini_upstream.base_url))  # a fresh model-list cache
    try:
        with _client(server) as client:
            models = client.models.list()
    finally:
        server.stop()
    ids = sorted(m.id for m in models.data if m.id.startswith("gemini/"))
    assert ids == ["gemini/gemini-other", "gemini/gemini-test"]
    gets = [r for r in gemini_upstream.received if r.method == "GET"]
    assert [r.query.get("pageToken") for r in gets] == [None, "2"]  # followed both pages
    assert all(r.path == "/v1beta/models" for r in gets)
    assert {r.headers["x-goog-api-key"] for r in gets} == {"key-from-" + key_env}


def test_without_key_provider_is_not_configured(gw: ServerThread, gfake: FakeGeminiUpstream,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    r = httpx.post(gw.url + "/v1/chat/completions",
                   json={"model": MODEL, "messages": MESSAGES, "stream": True})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "provider_not_configured"
    assert "GEMINI_API_KEY" in r.json()["error"]["message"]
    listed = httpx.get(gw.url + "/v1/models").json()["data"]
    assert not [m for m in listed if m["id"].startswith("gemini/")]
    assert gfake.received == []
