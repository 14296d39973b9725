"""The ingress × provider matrix, judged by the official SDKs: anthropic-python's
``messages.stream()`` and ``messages.count_tokens()`` on ``/v1/messages``, openai-python's
``responses.stream()`` on ``/v1/responses``, each on a fake of every provider dialect (OpenAI
chat, Anthropic Messages, Gemini), every fake answering in its own wire format, and on the
embedded model.

Per dialect the fakes script the same answers: the text "Hello, world!"; "Checking." then one
``get_weather({"city": "Paris"})`` call (OpenAI ``tool_calls`` deltas, an Anthropic ``tool_use``
block with ``input_json_delta`` pieces, a whole Gemini ``functionCall`` part), 30 prompt and 9
completion tokens; and "Hello," then a failure, reported in the dialect (an OpenAI ``error``
chunk, ``event: error``, a Gemini ``error`` object) or a dropped connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import orjson
import pytest

from .conftest import ANT_KEY
from .fakes import FakeUpstream, Script, ServerThread, tool_call_chunks
from .fakes_anthropic import (
    AnthropicScript,
    error_event,
    message_end,
    message_start,
    text_block,
    text_message,
    tool_block,
)
from .fakes_gemini import (
    GeminiScript,
    function_call_event,
    text_event,
    usage_metadata,
)

USER: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
CITY = {"city": "Paris"}
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}},
                  "required": ["city"]}
WEATHER_TOOL: Any = {"name": "get_weather", "description": "Weather for a city",
                     "input_schema": WEATHER_SCHEMA}  # Messages
WEATHER_FUNCTION: Any = {"type": "function", "name": "get_weather",
                         "description": "Weather for a city",
                         "parameters": WEATHER_SCHEMA}  # Responses
TOOL_USAGE = (30, 9)


@dataclass
class Upstream:
    """One provider dialect behind a gateway: its fake, the model that reaches it, and what the
    fake reports for the text answer (``text_usage``: prompt, completion tokens)."""

    dialect: str
    gateway: ServerThread
    fake: FakeUpstream[Any]
    model: str
    text_usage: tuple[int, int]

    def script_text(self) -> None:
        """The default script of each fake: "Hello, world!" in four or three events."""
        self.fake.reset()

    def script_tool_call(self) -> None:
        if self.dialect == "openai":
            self.fake.script = Script(raw_chunks=tool_call_chunks("Checking."))
        elif self.dialect == "anthropic":
            self.fake.script = AnthropicScript(events=[
                message_start(TOOL_USAGE[0]), *text_block(0, ["Checking."]),
                *tool_block(1, "toolu_01Paris", "get_weather", ['{"city": ', '"Paris"}']),
                *message_end("tool_use", TOOL_USAGE[1])])
        else:
            self.fake.script = GeminiScript(events=[
                text_event("Checking.", usage=usage_metadata(TOOL_USAGE[0], 2)),
                function_call_event("get_weather", CITY, usage=usage_metadata(*TOOL_USAGE))])

    def script_failure(self, how: str) -> None:
        """"Hello," then the failure: ``reported`` in the dialect, or ``dropped``."""
        dropped = how == "dropped"
        if self.dialect == "openai":
            self.fake.script = Script(die_after=2) if dropped else Script(error_after=2)
        elif self.dialect == "anthropic":
            events = text_message(["Hello", ",", " world", "!"])  # 5: after the "," delta
            self.fake.script = AnthropicScript(events=events, die_after=5) if dropped \
                else AnthropicScript(events=[*events[:5], error_event()])
        else:
            events = [text_event("Hello", usage=usage_metadata(7, 1)), text_event(","),
                      text_event(" world!", finish="STOP", usage=usage_metadata(7, 3))]
            self.fake.script = GeminiScript(events=events, **{
                "die_after" if dropped else "error_after": 2})

    def call_id_ok(self, call_id: str) -> bool:
        """The tool call's id is the upstream's (Gemini sent none: the gateway's own)."""
        expected = {"openai": "call_1", "anthropic": "toolu_01Paris"}.get(self.dialect)
        return call_id == expected if expected else call_id.startswith("call_")

    def declared_tools(self) -> list[str]:
        """The tool names of the last request, read in the upstream's dialect."""
        body = self.fake.received[-1].body
        if self.dialect == "openai":
            return [t["function"]["name"] for t in body["tools"]]
        if self.dialect == "anthropic":
            return [t["name"] for t in body["tools"]]
        return [d["name"] for t in body["tools"] for d in t["functionDeclarations"]]


@pytest.fixture(params=["openai", "anthropic", "gemini"])
def up(request: pytest.FixtureRequest) -> Upstream:
    """Each provider dialect's fake, reset, behind its gateway."""
    dialect = request.param
    if dialect == "openai":
        fake = request.getfixturevalue("fake")
        return Upstream(dialect, request.getfixturevalue("gw"), fake, "mock/some-model",
                        (11, 4))
    server, fake = request.getfixturevalue(f"{dialect}_ingress")
    fake.reset()
    if dialect == "anthropic":
        return Upstream(dialect, server, fake, "anthropic/claude-test", (25, 12))
    return Upstream(dialect, server, fake, "gemini/gemini-test", (7, 3))


def _anthropic(server: ServerThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)


def _openai(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


@pytest.fixture
def messages(up: Upstream) -> Iterator[Any]:
    """anthropic-python's ``messages`` resource on the gateway in front of ``up``."""
    with _anthropic(up.gateway) as client:
        yield client.messages


@pytest.fixture
def responses(up: Upstream) -> Iterator[Any]:
    """openai-python's ``responses`` resource on the gateway in front of ``up``."""
    with _openai(up.gateway) as client:
        yield client.responses


# -- /v1/messages with the anthropic SDK ------------------------------------------------------


def test_messages_stream_text_and_final_usage(up: Upstream, messages: Any) -> None:
    up.script_text()
    with messages.stream(model=up.model, max_tokens=50, messages=USER) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == "Hello, world!"
    assert [(b.type, b.text) for b in final.content] == [("text", "Hello, world!")]
    assert (final.role, final.model, final.stop_reason) == ("assistant", up.model, "end_turn")
    assert (final.usage.input_tokens, final.usage.output_tokens) == up.text_usage


def test_messages_stream_tool_use(up: Upstream, messages: Any) -> None:
    up.script_tool_call()
    with messages.stream(model=up.model, max_tokens=50, messages=USER,
                         tools=[WEATHER_TOOL]) as stream:
        partial = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    assert orjson.loads("".join(partial)) == CITY
    assert [b.type for b in final.content] == ["text", "tool_use"]
    text, tool = final.content
    assert text.text == "Checking."
    assert (tool.name, tool.input) == ("get_weather", CITY)
    assert up.call_id_ok(tool.id), tool.id
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == TOOL_USAGE
    assert up.declared_tools() == ["get_weather"]


# What the client learns of each failure: Anthropic's error type (the upstream's own when it
# named one: Anthropic's overloaded_error, Gemini's 503 UNAVAILABLE; else api_error, docs/wire.md
# §5) and the upstream's message, or that the connection was lost.
FAILURES = {("openai", "reported"): ("api_error", "Provider disconnected"),
            ("anthropic", "reported"): ("overloaded_error", "Overloaded"),
            ("gemini", "reported"): ("overloaded_error", "The model is overloaded.")}


@pytest.mark.parametrize("how", ["reported", "dropped"])
def test_messages_stream_error_after_partial_text(up: Upstream, messages: Any,
                                                   how: str) -> None:
    up.script_failure(how)
    pieces: list[str] = []
    with (pytest.raises(anthropic.APIStatusError) as info,
          messages.stream(model=up.model, max_tokens=50, messages=USER) as stream):
        pieces.extend(stream.text_stream)
    assert "".join(pieces) == "Hello,"
    body: Any = info.value.body
    etype, message = FAILURES.get((up.dialect, how), ("api_error", "closed the connection"))
    assert body["type"] == "error" and body["error"]["type"] == etype
    assert message in body["error"]["message"]


def test_count_tokens(up: Upstream, messages: Any) -> None:
    if up.dialect == "anthropic":
        up.fake.script.counted = 1234
    counted = messages.count_tokens(model=up.model, system="Be brief.", messages=USER,
                                    tools=[WEATHER_TOOL]).input_tokens
    if up.dialect == "anthropic":  # the upstream's own count, asked with the client's body
        assert counted == 1234
        asked = up.fake.received[-1]
        assert asked.path == "/v1/messages/count_tokens"
        assert asked.headers["x-api-key"] == ANT_KEY
        assert asked.body == {"model": "claude-test", "system": "Be brief.",
                              "messages": USER, "tools": [WEATHER_TOOL]}
        return
    assert up.fake.received == []  # the gateway's own count: the prompt and the tools
    without_tools = messages.count_tokens(model=up.model, system="Be brief.",
                                          messages=USER).input_tokens
    assert 0 < without_tools < counted


MCP: Any = {"mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse",
                             "name": "example"}]}
MCP_BETA = {"anthropic-beta": "mcp-client-2025-04-04"}


def test_messages_fields_only_an_anthropic_upstream_takes(up: Upstream, messages: Any) -> None:
    """``mcp_servers`` reaches an Anthropic upstream as sent (stream and count); for any other
    upstream it is a 400 naming the field, before any request upstream."""
    up.script_text()
    kwargs: Any = {"model": up.model, "messages": USER, "extra_body": MCP,
                   "extra_headers": MCP_BETA}
    if up.dialect != "anthropic":
        with (pytest.raises(anthropic.BadRequestError) as refused_stream,
              messages.stream(max_tokens=50, **kwargs) as stream):
            stream.get_final_message()
        with pytest.raises(anthropic.BadRequestError) as refused_count:
            messages.count_tokens(**kwargs)
        for info in (refused_stream, refused_count):
            body: Any = info.value.body
            assert body["error"]["type"] == "invalid_request_error"
            assert body["error"]["message"].startswith("mcp_servers")
        assert up.fake.received == []
        return
    with messages.stream(max_tokens=50, **kwargs) as stream:
        assert stream.get_final_message().content[0].text == "Hello, world!"
    messages.count_tokens(**kwargs)
    streamed, counted = up.fake.received
    for got in (streamed, counted):
        assert got.body["mcp_servers"] == MCP["mcp_servers"]
        assert got.headers["anthropic-beta"] == MCP_BETA["anthropic-beta"]


# -- /v1/responses with the openai SDK --------------------------------------------------------


def test_responses_stream_text_and_final_response(up: Upstream, responses: Any) -> None:
    up.script_text()
    with responses.stream(model=up.model, input="hello there",
                          max_output_tokens=50) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) > 1 and "".join(deltas) == "Hello, world!"
    assert (final.status, final.model, final.output_text) == ("completed", up.model,
                                                             "Hello, world!")
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == up.text_usage
    assert final.usage.total_tokens == sum(up.text_usage)


def test_responses_stream_function_call(up: Upstream, responses: Any) -> None:
    up.script_tool_call()
    with responses.stream(model=up.model, input="Weather in Paris?",
                          tools=[WEATHER_FUNCTION]) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert deltas and orjson.loads("".join(deltas)) == CITY
    assert [o.type for o in final.output] == ["message", "function_call"]
    assert final.output_text == "Checking."
    call = final.output[1]
    assert call.name == "get_weather" and up.call_id_ok(call.call_id), call.call_id
    assert call.arguments == "".join(deltas) and call.status == "completed"
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == TOOL_USAGE
    assert up.declared_tools() == ["get_weather"]


@pytest.mark.parametrize("how", ["reported", "dropped"])
def test_responses_stream_failure_after_partial_text(up: Upstream, responses: Any,
                                                     how: str) -> None:
    up.script_failure(how)
    with responses.stream(model=up.model, input="hello there") as stream:
        events = list(stream)
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") \
        == "Hello,"
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    error = events[-1].response.error
    message = FAILURES.get((up.dialect, how), ("", "closed the connection"))[1]
    assert error is not None and message in error.message and events[-2].message == error.message


# -- the embedded model ---------------------------------------------------------------------


def test_embedded_model_messages(local_gateway: tuple[ServerThread, Any]) -> None:
    with _anthropic(local_gateway[0]) as client:
        with client.messages.stream(model="default", max_tokens=8, messages=USER) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text and [(b.type, b.text) for b in final.content] == [("text", text)]
        assert final.stop_reason in ("max_tokens", "end_turn")
        assert 1 <= final.usage.output_tokens <= 8
        counted = client.messages.count_tokens(model="default", messages=USER).input_tokens
        assert counted == final.usage.input_tokens  # the model's tokenizer, the same prompt
        with (pytest.raises(anthropic.BadRequestError) as refused,
              client.messages.stream(model="default", max_tokens=8, messages=USER,
                                     tools=[WEATHER_TOOL]) as stream):
            stream.get_final_message()
    error: Any = refused.value.body
    assert error["error"]["type"] == "invalid_request_error"
    assert "'tools'" in error["error"]["message"]


def test_embedded_model_responses(local_gateway: tuple[ServerThread, Any]) -> None:
    with _openai(local_gateway[0]) as client:
        # Greedy "Say hi." ends its turn within the limit: response.completed, not incomplete.
        with client.responses.stream(model="default", input="Say hi.", temperature=0,
                                     max_output_tokens=12) as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
        assert deltas and final.output_text == "".join(deltas)
        assert final.usage is not None and 1 <= final.usage.output_tokens <= 12
        assert final.usage.input_tokens > 0
        with (pytest.raises(openai.BadRequestError) as refused,
              client.responses.stream(model="default", input="Say hi.", max_output_tokens=8,
                                      tools=[WEATHER_FUNCTION]) as rstream):
            rstream.get_final_response()
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "tools"
