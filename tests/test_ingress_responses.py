"""``/v1/responses`` driven with the openai SDK (``responses.stream()`` and ``create``): from
an OpenAI-dialect fake upstream and from the embedded model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from .fakes import FakeOpenAIUpstream, Script, ServerThread, tool_call_chunks

MODEL = "mock/some-model"

_CLIENTS: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def _client(server: ServerThread) -> openai.OpenAI:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    _CLIENTS.append(client)
    return client


def _events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for frame in raw.split(b"\n\n"):
        if not frame or frame.startswith(b":"):
            continue
        name, data = frame.split(b"\n")
        payload = orjson.loads(data[6:])
        assert name == b"event: " + payload["type"].encode()
        out.append(payload)
    return out


WEATHER: Any = {"type": "function", "name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def test_stream_text_and_final_response(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    with _client(gw).responses.stream(model=MODEL, input="hello there",
                                      instructions="Be brief.", max_output_tokens=40,
                                      temperature=0.3) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Hello, world!"
    assert final.output_text == "Hello, world!"
    assert final.status == "completed" and final.model == MODEL
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 4)
    sent = fake.received[-1].body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "hello there"}]
    assert (sent["max_tokens"], sent["temperature"]) == (40, 0.3)


def test_event_sequence_and_sequence_numbers(gw: ServerThread) -> None:
    response = httpx.post(gw.url + "/v1/responses",
                          json={"model": MODEL, "input": "hi", "stream": True})
    assert response.status_code == 200
    events = _events(response.content)
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * 4,
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert all(e["logprobs"] == [] for e in events if e["type"].startswith("response.output_t"))


def test_function_call_stream_and_history(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(raw_chunks=tool_call_chunks())
    history: Any = [
        {"role": "user", "content": "Weather in Rome?"},
        {"type": "function_call", "call_id": "call_0", "name": "get_weather",
         "arguments": '{"city": "Rome"}'},
        {"type": "function_call_output", "call_id": "call_0", "output": "sunny"},
        {"role": "user", "content": [{"type": "input_text", "text": "And Paris?"}]},
    ]
    with _client(gw).responses.stream(model=MODEL, input=history, tools=[WEATHER],
                                      tool_choice="required") as stream:
        argument_deltas = [e.delta for e in stream
                           if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert "".join(argument_deltas) == '{"city": "Paris"}'
    call = final.output[0]
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == ("call_1", "get_weather",
                                                         '{"city": "Paris"}')
    sent = fake.received[-1].body
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather", "parameters": WEATHER["parameters"]}}]
    assert sent["tool_choice"] == "required"
    assert sent["messages"][1:3] == [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_0", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny"}]


def test_create_without_stream(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    client = _client(gw)
    response = client.responses.create(model=MODEL, input="hi")
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Hello, world!"
    assert response.usage is not None and response.usage.output_tokens == 4
    fake.script = Script(raw_chunks=tool_call_chunks())
    called = client.responses.create(model=MODEL, input="hi", tools=[WEATHER])
    assert called.output[0].type == "function_call"
    assert called.output[0].arguments == '{"city": "Paris"}'


def test_length_ends_incomplete(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(finish_reason="length")
    response = httpx.post(gw.url + "/v1/responses",
                          json={"model": MODEL, "input": "hi", "stream": True})
    last = _events(response.content)[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_midstream_failure_is_response_failed(gw: ServerThread,
                                              fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(error_after=2)
    with _client(gw).responses.stream(model=MODEL, input="hi") as stream:
        events = list(stream)
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["error", "response.failed"]
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.error is not None and failed.response.error.message
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello,"


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": "hi", "background": True, "store": False}, "store"),
    ({"input": []}, "input"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools.0.type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input.0.content.0.type"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
])
def test_bad_input_is_a_400_naming_the_field(gw: ServerThread, body: dict[str, Any],
                                             param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        _client(gw).responses.create(model=MODEL, **body)
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_unknown_model_is_a_404(gw: ServerThread) -> None:
    with pytest.raises(openai.NotFoundError):
        _client(gw).responses.create(model="nope", input="hi")


def test_embedded_model(local_gateway: tuple[ServerThread, Any]) -> None:
    server, _ = local_gateway
    client = _client(server)
    with client.responses.stream(model="default", input="Say hi.",
                                 max_output_tokens=8) as stream:
        events = list(stream)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text
    last = events[-1]
    assert last.type in ("response.completed", "response.incomplete")
    assert last.response.usage is not None
    assert 1 <= last.response.usage.output_tokens <= 8
    assert last.response.output_text == text
    whole = client.responses.create(model="default", input="Say hi.", max_output_tokens=8)
    assert whole.output_text and whole.usage is not None


# -- previous_response_id ----------------------------------------------------------------------


def _keyed_client(server: ServerThread, key: str) -> openai.OpenAI:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    _CLIENTS.append(client)
    return client


def test_previous_response_id_continues_a_stored_response(gw: ServerThread,
                                                          fake: FakeOpenAIUpstream) -> None:
    client = _keyed_client(gw, "key-a")
    first = client.responses.create(model=MODEL, input="hi", instructions="Old rules.")
    assert first.store is True
    second = client.responses.create(model=MODEL, input="more", instructions="New rules.",
                                     previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert fake.received[-1].body["messages"] == [
        {"role": "system", "content": "New rules."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": "more"}]
    with pytest.raises(openai.BadRequestError) as other:  # another credential's response
        _keyed_client(gw, "key-b").responses.create(model=MODEL, input="x",
                                                    previous_response_id=second.id)
    assert isinstance(other.value.body, dict)
    assert other.value.body["code"] == "previous_response_not_found"


def test_a_streamed_function_call_is_continued_with_its_output(
        gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    client = _keyed_client(gw, "key-a")
    fake.script = Script(raw_chunks=tool_call_chunks())
    with client.responses.stream(model=MODEL, input="Weather in Paris?",
                                 tools=[WEATHER]) as stream:
        first = stream.get_final_response()
    fake.script = Script()
    client.responses.create(model=MODEL, previous_response_id=first.id, tools=[WEATHER],
                            input=[{"type": "function_call_output", "call_id": "call_1",
                                    "output": "12 C"}])
    assert fake.received[-1].body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12 C"}]


def test_store_false_keeps_nothing(gw: ServerThread) -> None:
    client = _keyed_client(gw, "key-a")
    response = client.responses.create(model=MODEL, input="hi", store=False)
    assert response.store is False
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input="x", previous_response_id=response.id)


def test_item_reference_stands_for_a_stored_item(gw: ServerThread,
                                                 fake: FakeOpenAIUpstream) -> None:
    """``{"type": "item_reference", "id": …}`` names an output item of a stored response (a
    streamed one here): the upstream gets the item; unknown, another credential's or a
    ``store: false`` response's items are a 400 naming the input item."""
    client = _keyed_client(gw, "key-a")
    fake.script = Script(raw_chunks=tool_call_chunks())
    with client.responses.stream(model=MODEL, input="Weather in Paris?",
                                 tools=[WEATHER]) as stream:
        called = stream.get_final_response()
    fake.script = Script()
    answered = client.responses.create(model=MODEL, input="hi")
    call_id, message_id = called.output[0].id, answered.output[0].id
    assert call_id.startswith("fc_") and message_id.startswith("msg_")
    client.responses.create(model=MODEL, tools=[WEATHER], input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "item_reference", "id": call_id},
        {"type": "function_call_output", "call_id": "call_1", "output": "12 C"},
        {"type": "item_reference", "id": message_id},
        {"role": "user", "content": "Thanks"}])
    assert fake.received[-1].body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": "Thanks"}]
    unstored = client.responses.create(model=MODEL, input="hi", store=False).output[0].id
    for reference, who in ((message_id[:-1] + "f", client), ("msg_1", client),
                           (message_id, _keyed_client(gw, "key-b")), (unstored, client)):
        with pytest.raises(openai.BadRequestError) as info:
            who.responses.create(model=MODEL, input=[
                {"role": "user", "content": "x"}, {"type": "item_reference", "id": reference}])
        assert isinstance(info.value.body, dict) and info.value.body["param"] == "input.1.id"
