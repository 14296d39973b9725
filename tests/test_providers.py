"""Providers by name: built-in keys from the environment, /v1/models, OpenRouter pass-through,
and providers defined in the config. The OpenAI-dialect fake stands in for OpenAI and
OpenRouter on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from sluicegate.config import ConfigError, GatewayConfig, ProviderSettings, load_config
from sluicegate.router import Router

from .fakes import FakeOpenAIUpstream, Script, ServerThread, start_gateway

MESSAGES = [{"role": "user", "content": "hello there"}]
KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
            "OPENROUTER_API_KEY", "OPENROUTER_SITE_URL", "OPENROUTER_APP_NAME",
            "OPENAI_BASE_URL", "OPENROUTER_BASE_URL")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture
def builtin_gateway(fake: FakeOpenAIUpstream, clean_env: pytest.MonkeyPatch
                    ) -> Iterator[ServerThread]:
    """A gateway whose built-in ``openai`` and ``openrouter`` providers point at the fake."""
    config = GatewayConfig(
        embedded_model=False,
        providers={"openai": ProviderSettings(base_url=fake.base_url),
                   "openrouter": ProviderSettings(base_url=fake.base_url),
                   "vllm": ProviderSettings(dialect="openai", base_url=fake.base_url)},
    )
    server, _ = start_gateway(config)
    try:
        yield server
    finally:
        server.stop()


def _client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def _model_ids(server: ServerThread) -> set[str]:
    body = httpx.get(server.url + "/v1/models").json()
    return {entry["id"] for entry in body["data"]}


def test_provider_without_key_is_not_listed_and_gives_a_clear_404(
        builtin_gateway: ServerThread, fake: FakeOpenAIUpstream) -> None:
    ids = _model_ids(builtin_gateway)
    assert not any(i.startswith(("openai/", "openrouter/", "anthropic/", "gemini/")) for i in ids)
    # A provider that needs no key is listed from the upstream's own model list.
    assert {"vllm/fake-model-a", "vllm/fake-model-b"} <= ids
    response = httpx.post(builtin_gateway.url + "/v1/chat/completions",
                          json={"model": "openai/gpt-test", "messages": MESSAGES, "stream": True})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "provider_not_configured"
    assert error["param"] == "model"
    assert "OPENAI_API_KEY" in error["message"]
    assert not [r for r in fake.received if r.path.endswith("/chat/completions")]
    with pytest.raises(openai.NotFoundError):
        _client(builtin_gateway).chat.completions.create(model="anthropic/claude-x",
                                                         messages=MESSAGES)  # type: ignore[arg-type]


def test_key_set_later_lists_models_and_authenticates(builtin_gateway: ServerThread,
                                                      fake: FakeOpenAIUpstream,
                                                      clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_API_KEY", "sk-openai-test")
    ids = _model_ids(builtin_gateway)
    assert {"openai/fake-model-a", "openai/fake-model-b"} <= ids
    assert not any(i.startswith("openrouter/") for i in ids)
    listings = [r.headers.get("Authorization") for r in fake.received if r.path == "/v1/models"]
    assert "Bearer sk-openai-test" in listings  # openai's listing (vllm's has no key)
    text = "".join(c.choices[0].delta.content or ""
                   for c in _client(builtin_gateway).chat.completions.create(
                       model="openai/gpt-test", messages=MESSAGES,  # type: ignore[arg-type]
                       stream=True) if c.choices)
    assert text == "Hello, world!"
    received = fake.received[-1]
    assert received.body["model"] == "gpt-test"
    assert received.headers["Authorization"] == "Bearer sk-openai-test"


def test_openai_does_not_get_openrouter_fields(builtin_gateway: ServerThread,
                                               fake: FakeOpenAIUpstream,
                                               clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_API_KEY", "sk-openai-test")
    list(_client(builtin_gateway).chat.completions.create(
        model="openai/gpt-test", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
        extra_body={"models": ["a", "b"], "provider": {"order": ["x"]}}))
    body = fake.received[-1].body
    assert "models" not in body and "provider" not in body


def test_openrouter_passes_routing_fields_and_attribution(builtin_gateway: ServerThread,
                                                          fake: FakeOpenAIUpstream,
                                                          clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENROUTER_API_KEY", "sk-or-test")
    clean_env.setenv("OPENROUTER_SITE_URL", "https://example.test")
    clean_env.setenv("OPENROUTER_APP_NAME", "sluicegate tests")
    fake.script = Script(comments=3)  # ": OPENROUTER PROCESSING" before the first chunk
    chunks = list(_client(builtin_gateway).chat.completions.create(
        model="openrouter/anthropic/claude-sonnet", messages=MESSAGES,  # type: ignore[arg-type]
        stream=True, extra_body={"models": ["openai/gpt-4o", "google/gemini-2.5-flash"],
                                 "provider": {"order": ["Anthropic"],
                                              "allow_fallbacks": False}}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello, world!"
    received = fake.received[-1]
    assert received.body["model"] == "anthropic/claude-sonnet"
    assert received.body["models"] == ["openai/gpt-4o", "google/gemini-2.5-flash"]
    assert received.body["provider"] == {"order": ["Anthropic"], "allow_fallbacks": False}
    assert received.headers["Authorization"] == "Bearer sk-or-test"
    assert received.headers["HTTP-Referer"] == "https://example.test"
    assert received.headers["X-Title"] == "sluicegate tests"


def test_openrouter_midstream_error_chunk_raises_after_the_text(
        builtin_gateway: ServerThread, fake: FakeOpenAIUpstream,
        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENROUTER_API_KEY", "sk-or-test")
    # OpenRouter's mid-stream error: a chunk with a top-level error and finish_reason "error".
    fake.script = Script(texts=["Partial", " answer", " lost"], error_after=2, comments=1)
    seen: list[str] = []
    stream = _client(builtin_gateway).chat.completions.create(
        model="openrouter/some/model", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    with pytest.raises(openai.APIError, match="Provider disconnected"):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)
    assert "".join(seen) == "Partial answer"


def test_openrouter_error_frame_on_the_wire(builtin_gateway: ServerThread,
                                            fake: FakeOpenAIUpstream,
                                            clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENROUTER_API_KEY", "sk-or-test")
    fake.script = Script(texts=["a", "b"], error_after=1, comments=2)
    raw = httpx.post(builtin_gateway.url + "/v1/chat/completions",
                     json={"model": "openrouter/x/y", "messages": MESSAGES, "stream": True}).content
    events = [e for e in raw.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events), "comments are not forwarded"
    assert events[-1] == b"data: [DONE]"
    assert b'"finish_reason":"error"' in events[-2]
    assert (b'"message":"The upstream (openrouter) reported an error after 1 token: '
            b'Provider disconnected"') in events[-2]


def test_base_url_override_from_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1/")
    router = Router(GatewayConfig(embedded_model=False))
    assert router.providers["openai"].base_url == "http://127.0.0.1:1/v1"
    assert router.providers["anthropic"].base_url == "https://api.anthropic.com/v1"


def test_deployment_with_its_own_base_url_never_gets_the_provider_key(
        fake: FakeOpenAIUpstream, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_API_KEY", "sk-openai-secret")
    config = GatewayConfig.model_validate({
        "embedded_model": False,
        "models": [{"name": "selfhosted", "provider": "openai", "base_url": fake.base_url,
                    "model": "llama"}],
    })
    server, _ = start_gateway(config)
    try:
        list(_client(server).chat.completions.create(
            model="selfhosted", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    finally:
        server.stop()
    received = fake.received[-1]
    assert received.body["model"] == "llama"
    assert "Authorization" not in received.headers


def test_configured_pattern_takes_the_provider_prefix(clean_env: pytest.MonkeyPatch) -> None:
    config = GatewayConfig.model_validate({
        "embedded_model": False,
        "models": [{"name": "openai/*", "provider": "openai", "base_url": "http://127.0.0.1:1/v1"}],
    })
    router = Router(config)
    target = router.resolve("openai/gpt-x")  # no key needed: the deployment has its own endpoint
    assert target.provider.name == "openai/*"
    assert target.upstream_model == "gpt-x"


@pytest.mark.parametrize("text", [
    "models:\n  - name: x\n    provider: nosuch\n",
    "providers:\n  vllm:\n    dialect: openai\n",
    "providers:\n  vllm:\n    base_url: http://h/v1\n",
    "providers:\n  openai:\n    dialect: klingon\n",
    "providers:\n  local:\n    dialect: openai\n    base_url: http://h/v1\n",
])
def test_invalid_provider_config(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config(path, env={})
