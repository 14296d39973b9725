"""ChatRequestBuilder and ChatRequest, standalone."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from sluicegate.client.builder import BuilderError, ChatRequest, ChatRequestBuilder
from sluicegate.client.errors import SluicegateError
from sluicegate.schemas import ChatMessage, parse_chat_request

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def base() -> ChatRequestBuilder:
    return ChatRequestBuilder().with_model("default").with_text("Hi")


def test_minimal_request_body() -> None:
    request = base().build()
    assert isinstance(request, ChatRequest)
    assert request.stream is False
    assert request.to_body() == {"model": "default", "stream": False,
                                 "messages": [{"role": "user", "content": "Hi"}]}


def test_full_request_body_is_a_valid_gateway_request() -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    request = (ChatRequestBuilder().with_model("mock/a").with_system("Be brief.")
               .with_text("What is 2+2?").with_streaming(True).with_temperature(0.5)
               .with_max_tokens(32).with_fallbacks(["mock/b", "fixed"]).with_tools([tool])
               .with_param("top_p", 0.9).with_param("timeouts", {"total": 30}).build())
    body = request.to_body()
    assert body == {
        "model": "mock/a",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "What is 2+2?"}],
        "stream": True,
        "temperature": 0.5,
        "max_tokens": 32,
        "tools": [tool],
        "models": ["mock/a", "mock/b", "fixed"],
        "top_p": 0.9,
        "timeouts": {"total": 30},
    }
    parsed = parse_chat_request(body)  # the gateway accepts it as is
    assert parsed.token_limit == 32
    assert request.to_kwargs() == {
        "model": "mock/a", "messages": body["messages"], "fallbacks": ["mock/b", "fixed"],
        "temperature": 0.5, "max_tokens": 32, "tools": [tool], "top_p": 0.9,
        "timeouts": {"total": 30},
    }


def test_no_fallbacks_no_models_key() -> None:
    request = base().build()
    assert "models" not in request.to_body()
    assert request.to_kwargs()["fallbacks"] is None


def test_with_system_replaces_and_yields_to_given_system() -> None:
    request = base().with_system("one").with_system("two").build()
    assert request.messages[0] == {"role": "system", "content": "two"}
    messages = [{"role": "system", "content": "given"}, {"role": "user", "content": "q"}]
    request = ChatRequestBuilder().with_model("m").with_system("ignored") \
        .with_messages(messages).build()
    assert request.messages == messages


def test_with_messages_accepts_dicts_and_models() -> None:
    request = (ChatRequestBuilder().with_model("m")
               .with_messages([ChatMessage(role="user", content="a"),
                               {"role": "assistant", "content": "b"}])
               .with_text("c").build())
    assert request.messages == [{"role": "user", "content": "a"},
                                {"role": "assistant", "content": "b"},
                                {"role": "user", "content": "c"}]


def test_image_from_url_joins_last_user_message() -> None:
    request = (ChatRequestBuilder().with_model("m").with_text("What is this?")
               .with_image("https://example.com/cat.png", detail="low").build())
    assert request.messages == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png",
                                            "detail": "low"}},
    ]}]
    parse_chat_request(request.to_body())


def test_image_from_data_url_creates_user_message() -> None:
    request = (ChatRequestBuilder().with_model("m").with_system("s")
               .with_messages([{"role": "assistant", "content": "Send a picture."}])
               .with_image(PNG).with_image("http://example.com/b.jpg").build())
    assert request.messages[-1] == {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "http://example.com/b.jpg"}},
    ]}
    assert request.messages[0] == {"role": "system", "content": "s"}


def test_image_then_text_keeps_order() -> None:
    request = ChatRequestBuilder().with_model("m").with_image(PNG).with_text("and?").build()
    assert [m["role"] for m in request.messages] == ["user", "user"]


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "cat.png", "", "https://",
                                 "data:text/plain;base64,aGk=", "data:image/png,notbase64"])
def test_bad_image_url(url: str) -> None:
    with pytest.raises(BuilderError) as info:
        ChatRequestBuilder().with_image(url)
    assert info.value.field == "image_url"


def test_bad_image_detail() -> None:
    with pytest.raises(BuilderError) as info:
        ChatRequestBuilder().with_image(PNG, detail="max")  # type: ignore[arg-type]
    assert info.value.field == "detail"


@pytest.mark.parametrize(("builder", "field"), [
    (ChatRequestBuilder().with_text("hi"), "model"),
    (ChatRequestBuilder().with_model("").with_text("hi"), "model"),
    (ChatRequestBuilder().with_model("m"), "messages"),
    (base().with_temperature(2.5), "temperature"),
    (base().with_temperature(-0.1), "temperature"),
    (base().with_max_tokens(0), "max_tokens"),
    (base().with_fallbacks(["ok", " "]), "fallbacks"),
    (base().with_messages([{"role": "wizard", "content": "x"}]), "messages.0.role"),
    (base().with_messages([{"role": "user", "content": "a"}, {"role": "user", "content": 5}]),
     "messages.1.content"),
])
def test_validation_errors_name_the_field(builder: ChatRequestBuilder, field: str) -> None:
    with pytest.raises(BuilderError) as info:
        builder.build()
    err = info.value
    assert err.field == field
    assert f"'{field}'" in str(err)
    assert isinstance(err, SluicegateError)
    assert isinstance(err, ValueError)


def test_bad_message_entry_named_at_once() -> None:
    with pytest.raises(BuilderError) as info:
        ChatRequestBuilder().with_messages([{"role": "user", "content": "a"}, "b"])  # type: ignore[list-item]
    assert info.value.field == "messages.1"


def test_tools_accept_bare_function_specs() -> None:
    spec = {"name": "lookup", "description": "Look it up", "parameters": {"type": "object"}}
    request = base().with_tools([spec]).build()
    assert request.tools == [{"type": "function", "function": spec}]


@pytest.mark.parametrize(("tool", "field"), [
    ("lookup", "tools.0"),
    ({"type": "retrieval"}, "tools.0"),
    ({"type": "function", "function": {"description": "no name"}}, "tools.0.function.name"),
])
def test_bad_tools(tool: Any, field: str) -> None:
    with pytest.raises(BuilderError) as info:
        base().with_tools([tool])
    assert info.value.field == field


def test_with_param_routes_own_fields() -> None:
    request = (base().with_param("temperature", 1.0).with_param("max_tokens", 3)
               .with_param("stream", True).with_param("model", "other")
               .with_param("fallbacks", ["x"]).with_param("seed", 7).build())
    assert (request.temperature, request.max_tokens, request.stream) == (1.0, 3, True)
    assert request.model == "other"
    assert request.to_body()["models"] == ["other", "x"]
    assert request.params == {"seed": 7}
    with pytest.raises(BuilderError) as info:
        base().with_param("models", ["a"])
    assert info.value.field == "models"


def test_params_override_in_body() -> None:
    request = base().with_param("stream_options", {"include_usage": True}).build()
    assert request.to_body()["stream_options"] == {"include_usage": True}


def test_request_direct_construction_is_validated() -> None:
    assert ChatRequest(model="m", messages=[{"role": "user", "content": "x"}]).fallbacks == []
    with pytest.raises(ValueError, match=r"messages\.0\.role"):
        ChatRequest(model="m", messages=[{"role": "nobody"}])
    with pytest.raises(ValueError):
        ChatRequest(model="m", messages=[{"role": "user", "content": "x"}], extra_field=1)  # type: ignore[call-arg]


def test_builder_is_reusable_and_requests_independent() -> None:
    builder = base()
    first = builder.build()
    second = builder.with_text("more").build()
    assert len(first.messages) == 1
    assert len(second.messages) == 2
    first.to_body()["messages"].append({"role": "user", "content": "mutated"})
    assert len(first.messages) == 1
