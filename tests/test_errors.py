"""Every bad input gets a real 4xx/5xx status and an OpenAI-shaped error body (never a 200).

The body is ``{"error": {"message", "type", "param", "code"}}`` with exactly those four keys.
Checked with raw httpx against a gateway on loopback, and with the official ``openai`` SDK,
which must raise the matching typed exception.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from sluicegate.config import DeploymentConfig, GatewayConfig
from sluicegate.errors import UpstreamError, explain_midstream
from sluicegate.server import Gateway

from .conftest import MASTER_KEY, mock_config
from .fakes import FakeOpenAIUpstream, Script, ServerThread, free_port, start_gateway

MODEL = "mock/gpt-test"
MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
STREAM_ALIAS = "/api/v1/chat/completions/stream"
ERROR_KEYS = {"message", "type", "param", "code"}
BODY_LIMIT = 2048

Gw = tuple[ServerThread, Gateway]


# -- helpers ---------------------------------------------------------------------------------


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert ``status`` and an OpenAI-shaped JSON error body; return its ``error`` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict) and set(err) == ERROR_KEYS, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert err["param"] is None or isinstance(err["param"], str)
    assert err["code"] is None or isinstance(err["code"], str)
    return err


def post(url: str, path: str, *, headers: dict[str, str] | None = None,
         **kwargs: Any) -> httpx.Response:
    return httpx.post(url + path, headers=headers, timeout=10.0, **kwargs)


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, **extra}


def stream_status_and_body(url: str, body: dict[str, Any], path: str = CHAT,
                           headers: dict[str, str] | None = None) -> httpx.Response:
    """POST a streaming request; return the response with its body read (status as first seen)."""
    with httpx.stream("POST", url + path, json=body, headers=headers, timeout=10.0) as r:
        r.read()
    return r


def stream_text(url: str, model: str = MODEL, headers: dict[str, str] | None = None) -> str:
    """Stream one chat request; assert a clean SSE stream ending in [DONE]; return the text."""
    body = {"model": model, "messages": MESSAGES, "stream": True}
    text: list[str] = []
    done = False
    with httpx.stream("POST", url + CHAT, json=body, headers=headers, timeout=10.0) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            payload = line[len("data: "):]
            if payload == "[DONE]":
                done = True
                break
            chunk = json.loads(payload)
            assert "error" not in chunk, chunk
            for choice in chunk["choices"]:
                text.append(choice["delta"].get("content") or "")
    assert done, "the stream must end with data: [DONE]"
    return "".join(text)


def sdk(server: ServerThread, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0,
                         timeout=10.0)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_gateway(upstream: FakeOpenAIUpstream) -> Iterator[ServerThread]:
    server, _ = start_gateway(mock_config(upstream.base_url, max_body_bytes=BODY_LIMIT))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def dead_upstream_gateway() -> Iterator[ServerThread]:
    port = free_port()  # nothing listens there
    config = GatewayConfig(
        embedded_model=False,
        models=[DeploymentConfig(name="dead/*", provider="openai",
                                 base_url=f"http://127.0.0.1:{port}/v1")],
    )
    config.local.preload = False
    server, _ = start_gateway(config)
    try:
        yield server
    finally:
        server.stop()


# -- malformed bodies ------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, TEXT, STREAM_ALIAS])
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"model": "mock/gpt-test", "messages": [', id="truncated"),
        pytest.param(b'{"model": "mock/x",}', id="trailing-comma"),
        pytest.param(b"model=mock/x", id="form-encoded"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"", id="empty"),
        pytest.param(b'[{"model": "mock/gpt-test"}]', id="array"),
        pytest.param(b'"a string"', id="string"),
        pytest.param(b"null", id="null"),
    ],
)
def test_malformed_body_is_400(gw: ServerThread, fake: FakeOpenAIUpstream, path: str,
                               raw: bytes) -> None:
    r = post(gw.url, path, content=raw, headers={"Content-Type": "application/json"})
    err = error_of(r, 400)
    assert err["type"] == "invalid_request_error"
    assert err["param"] is None
    assert fake.received == [], "a rejected request must not reach the upstream"


# -- schema errors ---------------------------------------------------------------------------


SCHEMA_CASES = [
    pytest.param(CHAT, {"model": MODEL}, "messages", id="missing-messages"),
    pytest.param(CHAT, {"messages": MESSAGES}, "model", id="missing-model"),
    pytest.param(CHAT, {"model": "", "messages": MESSAGES}, "model", id="empty-model"),
    pytest.param(CHAT, chat_body(messages=[]), "messages", id="empty-messages"),
    pytest.param(CHAT, chat_body(messages="hi"), "messages", id="messages-not-list"),
    pytest.param(CHAT, chat_body(temperature="hot"), "temperature", id="temperature-str"),
    pytest.param(CHAT, chat_body(temperature=2.5), "temperature", id="temperature-range"),
    pytest.param(CHAT, chat_body(top_p=1.5), "top_p", id="top-p-range"),
    pytest.param(CHAT, chat_body(messages=[{"role": "wizard", "content": "hi"}]),
                 "messages.0.role", id="bad-role"),
    pytest.param(CHAT, chat_body(messages=[*MESSAGES, {"content": "no role"}]),
                 "messages.1.role", id="missing-role"),
    pytest.param(CHAT, chat_body(n=0), "n", id="n-zero"),
    pytest.param(CHAT, chat_body(n=17), "n", id="n-too-big"),
    pytest.param(CHAT, chat_body(max_tokens=-1), "max_tokens", id="max-tokens-negative"),
    pytest.param(CHAT, chat_body(max_tokens=0), "max_tokens", id="max-tokens-zero"),
    pytest.param(CHAT, chat_body(max_completion_tokens=-5), "max_completion_tokens",
                 id="max-completion-tokens"),
    pytest.param(CHAT, chat_body(stop=["a", "b", "c", "d", "e"]), "stop", id="five-stops"),
    pytest.param(CHAT, chat_body(stream="maybe"), "stream", id="stream-not-bool"),
    pytest.param(CHAT, chat_body(stream_options={"include_usage": "sure"}),
                 "stream_options.include_usage", id="include-usage-not-bool"),
    pytest.param(STREAM_ALIAS, {"model": MODEL}, "messages", id="alias-missing-messages"),
    pytest.param(TEXT, {"model": MODEL}, "prompt", id="completions-missing-prompt"),
    pytest.param(TEXT, {"model": MODEL, "prompt": ["a", "b"]}, "prompt",
                 id="completions-two-prompts"),
    pytest.param(TEXT, {"model": MODEL, "prompt": "x", "max_tokens": -1}, "max_tokens",
                 id="completions-max-tokens"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("path", "body", "param"), SCHEMA_CASES)
def test_schema_error_names_the_field(gw: ServerThread, fake: FakeOpenAIUpstream, path: str,
                                      body: dict[str, Any], param: str, stream: bool) -> None:
    if stream and "stream" not in body:
        body = {**body, "stream": True}
    r = stream_status_and_body(gw.url, body, path)
    err = error_of(r, 400)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert param in err["message"]
    assert fake.received == []


UNION_FIELD_CASES = [
    pytest.param(CHAT, chat_body(messages=[{"role": "user", "content": 5}]),
                 "messages.0.content", id="content-number"),
    pytest.param(CHAT, chat_body(stop=5), "stop", id="stop-number"),
    pytest.param(TEXT, {"model": MODEL, "prompt": 5}, "prompt", id="prompt-number"),
    pytest.param(CHAT, chat_body(messages=[{"role": "user", "content": [5]}]),
                 "messages.0.content", id="content-part-number"),
    pytest.param(CHAT, chat_body(stop=["a", 5]), "stop", id="stop-item-number"),
]


@pytest.mark.parametrize(("path", "body", "param"), UNION_FIELD_CASES)
def test_schema_error_param_for_union_fields(gw: ServerThread, path: str, body: dict[str, Any],
                                             param: str) -> None:
    """pydantic tags union members in an error's loc ("str", "list[...]"); param must not."""
    err = error_of(post(gw.url, path, json=body), 400)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"n": 0}, "n"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_schema_error_with_sdk(gw: ServerThread, kwargs: dict[str, Any], param: str,
                               stream: bool) -> None:
    args: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, **kwargs}
    with sdk(gw) as client, pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(stream=stream, **args)
    exc = info.value
    assert exc.status_code == 400
    assert exc.param == param
    assert exc.type == "invalid_request_error"
    assert isinstance(exc.body, dict) and set(exc.body) == ERROR_KEYS


def test_completions_missing_prompt_with_sdk(gw: ServerThread) -> None:
    with sdk(gw) as client, pytest.raises(openai.BadRequestError) as info:
        client.post("/completions", cast_to=object, body={"model": MODEL})
    assert info.value.param == "prompt"


# -- unknown model ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, {"model": "no-such-model", "messages": MESSAGES}),
        (CHAT, {"model": "no-such-model", "messages": MESSAGES, "stream": True}),
        (CHAT, {"model": "mock/", "messages": MESSAGES, "stream": True}),  # empty suffix
        (CHAT, {"model": "Fixed", "messages": MESSAGES}),  # names are case-sensitive
        (STREAM_ALIAS, {"model": "no-such-model", "messages": MESSAGES}),
        (TEXT, {"model": "no-such-model", "prompt": "hi", "stream": True}),
    ],
)
def test_unknown_model_is_404(gw: ServerThread, fake: FakeOpenAIUpstream, path: str,
                              body: dict[str, Any]) -> None:
    r = stream_status_and_body(gw.url, body, path)
    err = error_of(r, 404)
    assert err["code"] == "model_not_found"
    assert err["param"] == "model"
    assert err["type"] == "not_found_error"
    assert body["model"] in err["message"]
    assert fake.received == []


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_with_sdk(gw: ServerThread, stream: bool) -> None:
    with sdk(gw) as client, pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES,
                                       stream=stream)
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"


# -- body size limit -------------------------------------------------------------------------


def padded_body(size: int) -> bytes:
    """A valid non-streaming chat body of exactly ``size`` bytes."""
    base = orjson.dumps(chat_body(messages=[{"role": "user", "content": ""}]))
    body = orjson.dumps(chat_body(messages=[{"role": "user",
                                             "content": "x" * (size - len(base))}]))
    assert len(body) == size
    return body


def test_body_over_limit_with_content_length_is_413(limited_gateway: ServerThread,
                                                     fake: FakeOpenAIUpstream) -> None:
    raw = padded_body(8 * BODY_LIMIT)
    r = post(limited_gateway.url, CHAT, content=raw,
             headers={"Content-Type": "application/json"})
    assert r.request.headers["content-length"] == str(len(raw))
    err = error_of(r, 413)
    assert err["code"] == "request_too_large"
    assert err["type"] == "invalid_request_error"
    assert str(BODY_LIMIT) in err["message"]
    assert fake.received == []


def test_body_over_limit_chunked_is_413(limited_gateway: ServerThread,
                                        fake: FakeOpenAIUpstream) -> None:
    raw = padded_body(8 * BODY_LIMIT)

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(raw), 512):
            yield raw[i:i + 512]

    r = post(limited_gateway.url, CHAT, content=pieces(),
             headers={"Content-Type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    err = error_of(r, 413)
    assert err["code"] == "request_too_large"
    assert fake.received == []


@pytest.mark.parametrize("chunked", [False, True])
def test_body_at_limit_is_accepted_and_one_over_is_not(limited_gateway: ServerThread,
                                                       fake: FakeOpenAIUpstream,
                                                       chunked: bool) -> None:
    def send(raw: bytes) -> httpx.Response:
        content: bytes | Iterator[bytes] = iter([raw[:100], raw[100:]]) if chunked else raw
        return post(limited_gateway.url, CHAT, content=content,
                    headers={"Content-Type": "application/json"})

    ok = send(padded_body(BODY_LIMIT))
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["message"]["content"] == "".join(fake.script.texts)
    error_of(send(padded_body(BODY_LIMIT + 1)), 413)


def test_body_over_limit_with_sdk(limited_gateway: ServerThread) -> None:
    big = [{"role": "user", "content": "x" * (4 * BODY_LIMIT)}]
    with sdk(limited_gateway) as client, pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=big, stream=True)
    assert info.value.status_code == 413
    assert info.value.code == "request_too_large"


def test_limited_gateway_still_serves_after_413(limited_gateway: ServerThread,
                                               fake: FakeOpenAIUpstream) -> None:
    assert stream_text(limited_gateway.url) == "".join(fake.script.texts)


# -- master key ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer sk-wrong"}, id="wrong-key"),
        pytest.param({"Authorization": f"Bearer {MASTER_KEY}x"}, id="key-prefix"),
        pytest.param({"Authorization": "Bearer"}, id="empty-token"),
        pytest.param({"Authorization": MASTER_KEY}, id="no-scheme"),
        pytest.param({"Authorization": f"Basic {MASTER_KEY}"}, id="basic-scheme"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", CHAT, chat_body(stream=True)),
        ("POST", STREAM_ALIAS, chat_body()),
        ("POST", TEXT, {"model": MODEL, "prompt": "hi"}),
        ("GET", "/v1/models", None),
    ],
)
def test_master_key_rejects_bad_credentials(keyed_gateway: ServerThread,
                                            fake: FakeOpenAIUpstream, headers: dict[str, str],
                                            method: str, path: str,
                                            body: dict[str, Any] | None) -> None:
    r = httpx.request(method, keyed_gateway.url + path, json=body, headers=headers, timeout=10)
    err = error_of(r, 401)
    assert err["type"] == "authentication_error"
    assert MASTER_KEY not in err["message"]
    assert fake.received == []


def test_master_key_accepts_the_right_key(keyed_gateway: ServerThread,
                                          fake: FakeOpenAIUpstream) -> None:
    text = stream_text(keyed_gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert text == "".join(fake.script.texts)
    # The client's key is the gateway's, never forwarded to the upstream.
    assert len(fake.received) == 1
    assert all(MASTER_KEY not in v for v in fake.received[0].headers.values())
    r = httpx.get(keyed_gateway.url + "/v1/models",
                  headers={"Authorization": f"bearer {MASTER_KEY}"}, timeout=10)
    assert r.status_code == 200
    assert {m["id"] for m in r.json()["data"]} >= {"fixed", "fast"}


def test_healthz_needs_no_key(keyed_gateway: ServerThread) -> None:
    r = httpx.get(keyed_gateway.url + "/healthz", timeout=10)
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_master_key_with_sdk(keyed_gateway: ServerThread, fake: FakeOpenAIUpstream) -> None:
    with sdk(keyed_gateway, api_key="sk-wrong") as client, \
            pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert info.value.status_code == 401
    assert info.value.type == "authentication_error"

    with sdk(keyed_gateway, api_key=MASTER_KEY) as client:
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES,
                                                stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "".join(fake.script.texts)


# -- routes and methods ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/v1/nope"), ("POST", "/v1/embeddings"),
     ("POST", "/v1/chat/completion"), ("GET", "/v2/models")],
)
def test_unknown_route_is_404(gw: ServerThread, method: str, path: str) -> None:
    r = httpx.request(method, gw.url + path, json={"model": MODEL}, timeout=10)
    err = error_of(r, 404)
    assert err["type"] == "not_found_error"
    assert path in err["message"]


def test_unknown_route_with_sdk(gw: ServerThread) -> None:
    with sdk(gw) as client, pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model=MODEL, input="hi")
    assert info.value.status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", CHAT), ("PUT", CHAT), ("DELETE", TEXT), ("GET", STREAM_ALIAS),
     ("POST", "/v1/models"), ("POST", "/healthz")],
)
def test_wrong_method_is_405(gw: ServerThread, fake: FakeOpenAIUpstream, method: str,
                             path: str) -> None:
    r = httpx.request(method, gw.url + path, timeout=10)
    err = error_of(r, 405)
    assert err["type"] == "invalid_request_error"
    assert method in err["message"]
    assert fake.received == []


@pytest.mark.parametrize(("method", "path", "allowed"),
                         [("GET", CHAT, "POST"), ("POST", "/v1/models", "GET")])
def test_wrong_method_lists_allowed_methods(gw: ServerThread, method: str, path: str,
                                            allowed: str) -> None:
    """RFC 9110 §15.5.6: a 405 carries an Allow header."""
    r = httpx.request(method, gw.url + path, timeout=10)
    error_of(r, 405)
    methods = {m.strip() for m in r.headers.get("allow", "").split(",")}
    assert allowed in methods
    assert method not in methods


# -- upstream failures -----------------------------------------------------------------------


RATE_LIMIT_BODY = {"error": {"message": "Rate limit reached for gpt-test: 3 RPM.",
                             "type": "requests", "param": None, "code": "rate_limit_exceeded"}}


@pytest.mark.parametrize(
    ("path", "body"),
    [(CHAT, chat_body(stream=True)), (CHAT, chat_body()), (STREAM_ALIAS, chat_body()),
     (TEXT, {"model": MODEL, "prompt": "hi", "stream": True})],
)
def test_upstream_429_passes_through(gw: ServerThread, fake: FakeOpenAIUpstream, path: str,
                                     body: dict[str, Any]) -> None:
    fake.script = Script(status=429, error_headers={"retry-after": "7"},
                         error_body=RATE_LIMIT_BODY)
    r = stream_status_and_body(gw.url, body, path)
    err = error_of(r, 429)
    assert r.headers["retry-after"] == "7"
    assert err["message"] == RATE_LIMIT_BODY["error"]["message"]
    assert err["code"] == "rate_limit_exceeded"
    assert len(fake.received) == 1


def test_upstream_429_with_sdk(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(status=429, error_headers={"retry-after": "7"},
                         error_body=RATE_LIMIT_BODY)
    with sdk(gw) as client, pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    exc = info.value
    assert exc.status_code == 429
    assert exc.response.headers["retry-after"] == "7"
    assert isinstance(exc.body, dict) and exc.body["message"] == RATE_LIMIT_BODY["error"]["message"]
    assert len(fake.received) == 1, "max_retries=0: exactly one attempt"


def test_upstream_retry_after_ms_becomes_retry_after(gw: ServerThread,
                                                     fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(status=429, error_headers={"retry-after-ms": "3000"},
                         error_body=RATE_LIMIT_BODY)
    r = stream_status_and_body(gw.url, chat_body(stream=True))
    error_of(r, 429)
    assert r.headers["retry-after"] == "3"


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_503_passes_through(gw: ServerThread, fake: FakeOpenAIUpstream,
                                     stream: bool) -> None:
    fake.script = Script(status=503)
    r = stream_status_and_body(gw.url, chat_body(stream=stream))
    err = error_of(r, 503)
    assert err["type"] == "server_error"
    assert err["message"] == "fake failure"  # the fake's default error body
    assert "retry-after" not in r.headers

    with sdk(gw) as client, pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES,
                                       stream=stream)
    assert info.value.status_code == 503


def test_upstream_400_keeps_its_param(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(status=400, error_body={"error": {
        "message": "This model does not support tools.", "type": "invalid_request_error",
        "param": "tools", "code": "unsupported_parameter"}})
    r = stream_status_and_body(gw.url, chat_body(stream=True))
    err = error_of(r, 400)
    assert err == {"message": "This model does not support tools.",
                   "type": "invalid_request_error", "param": "tools",
                   "code": "unsupported_parameter"}


def test_upstream_error_body_not_openai_shaped(gw: ServerThread,
                                               fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(status=502, error_body={"detail": "bad gateway"})
    r = stream_status_and_body(gw.url, chat_body(stream=True))
    err = error_of(r, 502)
    assert err["type"] == "server_error"
    assert "502" in err["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [(CHAT, {"model": "dead/m", "messages": MESSAGES, "stream": True}),
     (CHAT, {"model": "dead/m", "messages": MESSAGES}),
     (TEXT, {"model": "dead/m", "prompt": "hi", "stream": True})],
)
def test_upstream_not_listening_is_502(dead_upstream_gateway: ServerThread, path: str,
                                       body: dict[str, Any]) -> None:
    r = stream_status_and_body(dead_upstream_gateway.url, body, path)
    err = error_of(r, 502)
    assert err["type"] == "server_error"
    assert err["code"] == "upstream_error"


def test_upstream_not_listening_with_sdk(dead_upstream_gateway: ServerThread) -> None:
    with sdk(dead_upstream_gateway) as client, \
            pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="dead/m", messages=MESSAGES,
                                       stream=True)
    assert info.value.status_code == 502
    assert info.value.type == "server_error"


# -- and the gateway keeps working -----------------------------------------------------------


def test_gateway_still_works_after_errors(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    # Leave the upstream failing once more, then healthy again.
    fake.script = Script(status=429, error_headers={"retry-after": "1"})
    error_of(stream_status_and_body(gw.url, chat_body(stream=True)), 429)
    fake.script = Script(texts=["still", " ", "alive"])
    assert stream_text(gw.url) == "still alive"
    assert stream_text(gw.url, model="fast") == "still alive"
    assert fake.received[-1].body["model"] == "upstream-fixed"
    with sdk(gw) as client:
        result = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert result.choices[0].message.content == "still alive"
    health = httpx.get(gw.url + "/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"


@pytest.mark.parametrize(("error", "expected"), [
    (UpstreamError("x", reason="local_failed", detail="RuntimeError('llama_decode -3')"),
     "The local model (local) failed after 1 token."),
    (UpstreamError("Provider disconnected", code="502", reason="reported"),
     "The upstream (local) reported an error after 1 token: Provider disconnected"),
    (UpstreamError("Something odd."),
     "The upstream (local) failed after 1 token: Something odd."),
])
def test_midstream_messages_without_a_fake(error: UpstreamError, expected: str) -> None:
    """The wording of the kinds no fake upstream triggers; code and detail are kept."""
    code, detail = error.code, error.detail
    explain_midstream(error, "local", 1)
    assert error.message == expected
    assert error.code == code
    assert error.detail == (detail or error.detail)
    if error.reason == "reported":
        assert error.detail is None  # the upstream's words are in the message already
    else:
        assert error.detail and "failed after" not in error.detail
