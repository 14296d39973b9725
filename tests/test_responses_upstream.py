"""The ``responses`` provider dialect against a faithful fake Responses upstream, driven with the
official SDKs: ``/v1/responses`` bodies passed through, chat and Messages requests translated,
the Responses stream turned into chat chunks, failover and mid-stream errors."""

from __future__ import annotations

import time
import typing
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import ValidationError

from sluicegate.config import DeploymentConfig, GatewayConfig, ProviderSettings
from sluicegate.policy import TimeoutOverrides

from .conftest import MOCK_KEY, MOCK_KEY_ENV
from .fakes import FakeOpenAIUpstream, Script, ServerThread, start_gateway
from .fakes_responses import (
    Call,
    FakeResponsesUpstream,
    Reasoning,
    ResponsesScript,
    Text,
    error_body,
    usage,
)

RESP_KEY = "sk-openai-test"
RESP_KEY_ENV = "RESP_UPSTREAM_TEST_KEY"
MODEL = "resp-model"

WEATHER_PARAMS: Any = {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}
WEATHER: Any = {"type": "function", "name": "get_weather", "description": "Weather",
                "parameters": WEATHER_PARAMS}
CHAT_WEATHER: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather", "parameters": WEATHER_PARAMS}}

_UNION = typing.get_args(ResponseStreamEvent)[0]
EVENT_MODELS = {typing.get_args(cls.model_fields["type"].annotation)[0]: cls
                for cls in typing.get_args(_UNION)}
"""openai-python's model of each Responses stream event, by ``type``."""


@pytest.fixture(scope="module")
def resp() -> Iterator[FakeResponsesUpstream]:
    fake = FakeResponsesUpstream(RESP_KEY).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gateway(resp: FakeResponsesUpstream, upstream: FakeOpenAIUpstream) -> Iterator[ServerThread]:
    mp = pytest.MonkeyPatch()
    mp.setenv(RESP_KEY_ENV, RESP_KEY)
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    config = GatewayConfig(
        embedded_model=False,
        providers={
            "oairesp": ProviderSettings(dialect="responses", base_url=resp.base_url,
                                        api_key_env=RESP_KEY_ENV),
            # The built-in openai provider's endpoint is the fake too, so a deployment that
            # opts into its Responses API shares its base URL and key.
            "openai": ProviderSettings(base_url=resp.base_url, api_key_env=RESP_KEY_ENV),
        },
        models=[
            DeploymentConfig(name=MODEL, provider="oairesp", model="gpt-test",
                             fallbacks=["mock/backup"]),
            DeploymentConfig(name="resp-stall", provider="oairesp", model="gpt-test",
                             timeouts=TimeoutOverrides(stall=1)),
            DeploymentConfig(name="opt-in", provider="openai", dialect="responses",
                             model="gpt-test"),
            DeploymentConfig(name="chat-first", provider="openai", dialect="openai",
                             base_url=upstream.base_url, api_key_env=MOCK_KEY_ENV,
                             model="backup", fallbacks=[MODEL]),
            DeploymentConfig(name="mock/*", provider="openai", dialect="openai",
                             base_url=upstream.base_url, api_key_env=MOCK_KEY_ENV),
        ])
    config.routing.max_retries = 0
    server, _ = start_gateway(config)
    yield server
    server.stop()
    mp.undo()


@pytest.fixture
def gw(gateway: ServerThread, resp: FakeResponsesUpstream, fake: FakeOpenAIUpstream
       ) -> Iterator[ServerThread]:
    resp.reset()
    fake.script = Script(texts=["From", " backup"])
    clients.clear()
    yield gateway
    while clients:
        clients.pop().close()


clients: list[openai.OpenAI | anthropic.Anthropic] = []


def _openai(server: ServerThread) -> openai.OpenAI:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    clients.append(client)
    return client


def _anthropic(server: ServerThread) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    clients.append(client)
    return client


def _collect(stream: Any) -> dict[str, Any]:
    """Content, reasoning, tool calls (by index), finish reason and usage of a chat stream."""
    out: dict[str, Any] = {"content": "", "reasoning": "", "calls": {}, "finish": None,
                           "usage": None}
    for chunk in stream:
        if chunk.usage is not None:
            out["usage"] = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            out["content"] += delta.content or ""
            out["reasoning"] += (delta.model_extra or {}).get("reasoning_content") or ""
            for call in delta.tool_calls or ():
                entry = out["calls"].setdefault(call.index, {"id": None, "name": None,
                                                             "arguments": ""})
                if call.id:
                    entry["id"] = call.id
                if call.function and call.function.name:
                    entry["name"] = call.function.name
                if call.function and call.function.arguments:
                    entry["arguments"] += call.function.arguments
            if choice.finish_reason:
                out["finish"] = choice.finish_reason
    return out


# -- /v1/responses: the client's own body ----------------------------------------------------------


def test_responses_client_body_passes_through(gw: ServerThread,
                                              resp: FakeResponsesUpstream) -> None:
    resp.script = ResponsesScript(
        items=[Reasoning([["Think", "ing"]]), Text(["Checking", " now."]),
               Call("call_9", "get_weather", ['{"city":', ' "Paris"}'])],
        usage=usage(40, 21, cached=8, reasoning=5))
    request: Any = {
        "model": MODEL, "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Rome?"}]},
            {"type": "function_call", "call_id": "call_0", "name": "get_weather",
             "arguments": '{"city": "Rome"}'},
            {"type": "function_call_output", "call_id": "call_0", "output": "sunny"},
            {"role": "user", "content": "And Paris?"}],
        "tools": [WEATHER], "tool_choice": "auto", "max_output_tokens": 200,
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"], "store": False,
        "metadata": {"ticket": "42"}, "text": {"verbosity": "low"}}
    with _openai(gw).responses.stream(**request) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    got = resp.received[-1]
    assert got.path == "/v1/responses"
    assert got.body == {**request, "model": "gpt-test", "stream": True}  # as the client sent it
    assert got.headers["Authorization"] == f"Bearer {RESP_KEY}"
    assert "".join(deltas) == "Checking now." == final.output_text
    call = next(item for item in final.output if item.type == "function_call")
    assert (call.call_id, call.name, call.arguments) == ("call_9", "get_weather",
                                                         '{"city": "Paris"}')
    assert final.status == "completed" and final.model == MODEL
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (40, 21)
    assert final.usage.input_tokens_details.cached_tokens == 8
    assert final.usage.output_tokens_details.reasoning_tokens == 5
    # The fake's own stream is what openai-python parses: every event validates.
    assert len(resp.sent) > 20
    for event in resp.sent:
        EVENT_MODELS[event["type"]].model_validate(event)
    assert [e["sequence_number"] for e in resp.sent] == list(range(len(resp.sent)))


def test_previous_response_id_is_expanded_not_forwarded(gw: ServerThread,
                                                        resp: FakeResponsesUpstream) -> None:
    client = _openai(gw)
    first = client.responses.create(model=MODEL, input="Weather in Rome?",
                                    instructions="Be brief.")
    assert first.output_text == "Hello, world!"
    assert first.usage is not None and first.usage.input_tokens == 36
    assert resp.received[-1].body["stream"] is True  # a non-stream request streams upstream
    resp.script = ResponsesScript(items=[Text(["Cloudy."])])
    second = client.responses.create(model=MODEL, input="And Paris?",
                                     previous_response_id=first.id, truncation="auto")
    assert second.output_text == "Cloudy."
    sent = resp.received[-1].body
    assert sent["truncation"] == "auto"  # the client's own body, its history expanded
    assert "previous_response_id" not in sent  # the gateway's id means nothing upstream
    assert "instructions" not in sent  # they do not carry over
    assert sent["input"] == [
        {"type": "message", "role": "user", "content": "Weather in Rome?"},
        {"type": "message", "role": "assistant", "content": "Hello, world!"},
        {"type": "message", "role": "user", "content": "And Paris?"}]


def test_background_is_the_gateways_own(gw: ServerThread, resp: FakeResponsesUpstream) -> None:
    client = _openai(gw)
    queued = client.responses.create(model=MODEL, input="hi", background=True)
    events = list(client.responses.retrieve(queued.id, stream=True))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") \
        == "Hello, world!"
    assert resp.received[-1].body == {"model": "gpt-test", "input": "hi", "stream": True}


def test_a_fallback_responses_upstream_gets_the_client_body(
        gw: ServerThread, resp: FakeResponsesUpstream, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(status=503)
    request: Any = {"model": "chat-first", "input": "hi", "truncation": "auto",
                    "include": ["reasoning.encrypted_content"]}
    with _openai(gw).responses.stream(**request) as stream:
        final = stream.get_final_response()
    assert final.output_text == "Hello, world!"
    assert fake.received[-1].body["messages"] == [{"role": "user", "content": "hi"}]
    assert resp.received[-1].body == {**request, "model": "gpt-test", "stream": True}


def test_unknown_valid_events_are_not_malformed(gw: ServerThread,
                                                resp: FakeResponsesUpstream) -> None:
    annotation = {"type": "response.output_text.annotation.added", "item_id": "msg_0000fake",
                  "output_index": 0, "content_index": 0, "annotation_index": 0,
                  "annotation": {"type": "url_citation", "start_index": 0, "end_index": 5,
                                 "title": "t", "url": "https://example.com"}}
    searching = {"type": "response.web_search_call.searching", "item_id": "ws_1",
                 "output_index": 0}
    resp.script.extra_events = [(2, searching), (6, annotation)]
    before = _malformed(gw)
    with _openai(gw).responses.stream(model=MODEL, input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Hello, world!"
    assert {"response.web_search_call.searching", "response.output_text.annotation.added"} <= {
        e["type"] for e in resp.sent}
    assert _malformed(gw) == before


def _malformed(server: ServerThread) -> float:
    text = httpx.get(server.url + "/metrics").text
    prefix = 'sluicegate_malformed_events_total{provider="oairesp"} '
    return sum(float(line[len(prefix):]) for line in text.splitlines()
               if line.startswith(prefix))


# -- chat and Messages requests: translated -----------------------------------------------------


def test_chat_stream_is_translated(gw: ServerThread, resp: FakeResponsesUpstream) -> None:
    resp.script = ResponsesScript(
        items=[Reasoning([["Plan", "ning"], ["More"]]), Text(["Let me", " check."]),
               Call("call_7", "get_weather", ['{"city"', ': "Paris"}'])],
        usage=usage(50, 30, cached=10, reasoning=7))
    schema: Any = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    stream = _openai(gw).chat.completions.create(
        model=MODEL, stream=True, stream_options={"include_usage": True},
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Rome?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png",
                                                    "detail": "low"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_0", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
            {"role": "user", "content": "And Paris?"}],
        tools=[CHAT_WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=300, temperature=0.2, reasoning_effort="low",
        response_format={"type": "json_schema",
                         "json_schema": {"name": "w", "schema": schema, "strict": True}})
    got = _collect(stream)
    assert resp.received[-1].body == {
        "model": "gpt-test", "stream": True, "store": False, "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Weather in Rome?"},
                {"type": "input_image", "image_url": "https://example.com/a.png",
                 "detail": "low"}]},
            {"type": "function_call", "call_id": "call_0", "name": "get_weather",
             "arguments": '{"city": "Rome"}'},
            {"type": "function_call_output", "call_id": "call_0", "output": "sunny"},
            {"type": "message", "role": "user", "content": "And Paris?"}],
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather",
                   "parameters": WEATHER_PARAMS, "strict": False}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "max_output_tokens": 300, "temperature": 0.2, "reasoning": {"effort": "low"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": schema,
                            "strict": True}}}
    assert got["content"] == "Let me check."
    assert got["reasoning"] == "Planning\n\nMore"
    assert got["calls"] == {0: {"id": "call_7", "name": "get_weather",
                                "arguments": '{"city": "Paris"}'}}
    assert got["finish"] == "tool_calls"
    use = got["usage"]
    assert (use.prompt_tokens, use.completion_tokens, use.total_tokens) == (50, 30, 80)
    assert use.prompt_tokens_details.cached_tokens == 10
    assert use.completion_tokens_details.reasoning_tokens == 7


def test_deployment_opts_into_responses_on_the_openai_endpoint(
        gw: ServerThread, resp: FakeResponsesUpstream) -> None:
    resp.script = ResponsesScript(items=[Text(["Cut"])], incomplete="max_output_tokens")
    completion = _openai(gw).chat.completions.create(
        model="opt-in", messages=[{"role": "user", "content": "hi"}], max_tokens=16)
    got = resp.received[-1]
    assert got.path == "/v1/responses"
    assert got.headers["Authorization"] == f"Bearer {RESP_KEY}"
    assert got.body["max_output_tokens"] == 16
    assert completion.choices[0].message.content == "Cut"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (36, 12)


def test_anthropic_client_through_a_responses_upstream(gw: ServerThread,
                                                       resp: FakeResponsesUpstream) -> None:
    with _anthropic(gw).messages.stream(
            model=MODEL, max_tokens=64, system="Be brief.",
            messages=[{"role": "user", "content": "hello there"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello, world!"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (36, 12)
    sent = resp.received[-1].body
    assert (sent["instructions"], sent["max_output_tokens"]) == ("Be brief.", 64)
    assert sent["input"] == [{"type": "message", "role": "user", "content": "hello there"}]


@pytest.mark.parametrize(("extra", "param"), [
    ({"stop": ["END"]}, "stop"), ({"seed": 7}, "seed"), ({"n": 2}, "n"),
    ({"logit_bias": {"50256": -100}}, "logit_bias")])
def test_untranslatable_field_is_refused(gw: ServerThread, resp: FakeResponsesUpstream,
                                         fake: FakeOpenAIUpstream, extra: dict[str, Any],
                                         param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _openai(gw).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], **extra)
    body: Any = refused.value.body
    assert body["param"] == param and param in body["message"]
    assert resp.received == [] and fake.received == []  # nothing sent, no fallback tried


# -- failures -------------------------------------------------------------------------------------


def test_status_error_before_the_stream_falls_back(gw: ServerThread,
                                                   resp: FakeResponsesUpstream,
                                                   fake: FakeOpenAIUpstream) -> None:
    resp.script = ResponsesScript(status=500, error=error_body("Upstream is down"))
    with _openai(gw).responses.stream(model=MODEL, input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "From backup"
    assert len(resp.received) == 1
    assert fake.received[-1].body["model"] == "backup"
    assert fake.received[-1].body["messages"] == [{"role": "user", "content": "hi"}]


def test_error_event_before_any_token_falls_back(gw: ServerThread,
                                                 resp: FakeResponsesUpstream,
                                                 fake: FakeOpenAIUpstream) -> None:
    resp.script = ResponsesScript(error_after=0)
    got = _collect(_openai(gw).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert got["content"] == "From backup"
    sent = [e["type"] for e in resp.sent]
    assert sent[-1] == "error" and not any(t.endswith(".delta") for t in sent)
    assert len(fake.received) == 1


def test_error_event_mid_stream_reaches_a_responses_client(gw: ServerThread,
                                                           resp: FakeResponsesUpstream) -> None:
    resp.script = ResponsesScript(error_after=2)
    with _openai(gw).responses.stream(model=MODEL, input="hi") as stream:
        events = list(stream)
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") \
        == "Hello,"
    error, failed = events[-2], events[-1]
    assert error.type == "error" and failed.type == "response.failed"
    assert error.code == "server_error"
    assert "The server had an error while processing your request." in error.message
    assert failed.response.error is not None


def test_failed_response_mid_stream_reaches_a_chat_client(gw: ServerThread,
                                                          resp: FakeResponsesUpstream) -> None:
    resp.script = ResponsesScript(fail_after=3)
    seen = ""
    with pytest.raises(openai.APIError) as failed:
        for chunk in _openai(gw).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True):
            for choice in chunk.choices:
                seen += choice.delta.content or ""
    assert seen == "Hello, world"
    assert "The model failed to finish." in failed.value.message


def test_stall_ends_the_stream_and_closes_the_upstream(gw: ServerThread,
                                                       resp: FakeResponsesUpstream) -> None:
    resp.script = ResponsesScript(stall_after=1, stall_s=30)
    seen = ""
    with pytest.raises(openai.APIError) as stalled:
        for chunk in _openai(gw).chat.completions.create(
                model="resp-stall", messages=[{"role": "user", "content": "hi"}], stream=True):
            for choice in chunk.choices:
                seen += choice.delta.content or ""
    assert seen == "Hello"
    assert "sent nothing for 1 s" in stalled.value.message
    deadline = time.monotonic() + 10
    while not resp.closed_early and time.monotonic() < deadline:
        time.sleep(0.05)
    assert resp.closed_early  # the gateway closed the upstream connection


# -- configuration --------------------------------------------------------------------------------


def test_deployment_dialect_only_for_openai_style_providers() -> None:
    GatewayConfig.model_validate({"models": [
        {"name": "a", "provider": "openai", "dialect": "responses"}]})
    GatewayConfig.model_validate({
        "providers": {"r": {"dialect": "responses", "base_url": "http://127.0.0.1:1/v1"}},
        "models": [{"name": "b", "provider": "r", "dialect": "openai"}]})
    with pytest.raises(ValidationError, match="'dialect' is only for"):
        GatewayConfig.model_validate({"models": [
            {"name": "c", "provider": "anthropic", "dialect": "responses"}]})
    with pytest.raises(ValidationError):
        GatewayConfig.model_validate({"models": [
            {"name": "d", "provider": "openai", "dialect": "gemini"}]})
