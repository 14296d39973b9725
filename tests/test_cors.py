"""CORS (``server.cors``, ``sluicegate.web.cors``): preflights on every route before the key
check, headers on simple, streamed and error responses, allowed and refused origins."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sluicegate.config import CorsSettings

from .conftest import MASTER_KEY, MOCK_KEY, MOCK_KEY_ENV, mock_config
from .fakes import FakeOpenAIUpstream, ServerThread, start_gateway

LOCAL = "http://localhost:5173"
EVIL = "https://evil.example"
CHAT = {"model": "mock/gpt", "messages": [{"role": "user", "content": "hi"}]}


def preflight(url: str, origin: str, method: str = "POST") -> httpx.Response:
    return httpx.options(url, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, last-event-id"})


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/v1/completions",
                                  "/v1/chat/completions/rs_x/stream", "/v1/stats", "/healthz",
                                  "/nowhere"])
def test_preflight_is_answered_on_every_route(gw: ServerThread, path: str) -> None:
    r = preflight(gw.url + path, LOCAL)
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == LOCAL
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "DELETE" in r.headers["Access-Control-Allow-Methods"]
    assert r.headers["Access-Control-Allow-Headers"] == (
        "authorization, content-type, last-event-id")
    assert r.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in r.headers["Vary"]


def test_refused_origin_gets_no_cors_header(gw: ServerThread) -> None:
    r = preflight(gw.url + "/v1/chat/completions", EVIL)
    assert r.status_code == 403
    assert "Access-Control-Allow-Origin" not in r.headers
    assert r.json()["error"]["code"] == "origin_not_allowed"
    r = httpx.get(gw.url + "/v1/models", headers={"Origin": EVIL})
    assert r.status_code == 200  # the server answers; the browser withholds it from the page
    assert "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:8080",
                                    "https://localhost", "http://[::1]:9000"])
def test_default_allows_loopback_pages(gw: ServerThread, origin: str) -> None:
    r = httpx.get(gw.url + "/v1/models", headers={"Origin": origin})
    assert r.headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize("origin", ["http://localhost.evil.example", "http://127.0.0.1.nip.io",
                                    "null", "http://localhost:3000/"])
def test_default_refuses_lookalikes(gw: ServerThread, origin: str) -> None:
    r = httpx.get(gw.url + "/v1/models", headers={"Origin": origin})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_simple_response(gw: ServerThread) -> None:
    r = httpx.get(gw.url + "/v1/models", headers={"Origin": LOCAL})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == LOCAL
    assert "Access-Control-Allow-Credentials" not in r.headers


def test_streamed_response_exposes_sluicegate_headers(gw: ServerThread,
                                                      fake: FakeOpenAIUpstream) -> None:
    with httpx.stream("POST", gw.url + "/v1/chat/completions", headers={"Origin": LOCAL},
                      json={**CHAT, "stream": True}) as r:
        body = r.read().decode()
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["Access-Control-Allow-Origin"] == LOCAL
    exposed = {h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"X-Sluicegate-Provider", "X-Sluicegate-Model", "X-Sluicegate-Attempts",
            "X-Sluicegate-Stream-Id", "Retry-After"} <= exposed
    assert body.endswith("data: [DONE]\n\n")


def test_resumable_stream_and_resume_carry_cors(gw: ServerThread,
                                                 fake: FakeOpenAIUpstream) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"resumable": True}}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", headers={"Origin": LOCAL},
                      json=body) as r:
        r.read()
    assert r.headers["Access-Control-Allow-Origin"] == LOCAL
    sid = r.headers["X-Sluicegate-Stream-Id"]
    with httpx.stream("GET", f"{gw.url}/v1/chat/completions/{sid}/stream",
                      headers={"Origin": LOCAL, "Last-Event-ID": f"{sid}:1"}) as again:
        again.read()
    assert again.status_code == 200
    assert again.headers["Access-Control-Allow-Origin"] == LOCAL


def test_error_responses_carry_cors(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    r = httpx.post(gw.url + "/v1/chat/completions", headers={"Origin": LOCAL},
                   content=b"{not json")
    assert r.status_code == 400
    assert r.headers["Access-Control-Allow-Origin"] == LOCAL
    r = httpx.get(gw.url + "/nowhere", headers={"Origin": LOCAL})
    assert r.status_code == 404
    assert r.headers["Access-Control-Allow-Origin"] == LOCAL
    fake.script.status = 429
    fake.script.error_headers = {"Retry-After": "3"}
    r = httpx.post(gw.url + "/v1/chat/completions", headers={"Origin": LOCAL},
                   json={**CHAT, "stream": True})
    assert r.status_code == 429
    assert r.headers["Access-Control-Allow-Origin"] == LOCAL
    assert "Retry-After" in r.headers["Access-Control-Expose-Headers"]
    r = httpx.post(gw.url + "/v1/chat/completions", headers={"Origin": EVIL}, content=b"{")
    assert r.status_code == 400
    assert "Access-Control-Allow-Origin" not in r.headers


def test_keyed_gateway_preflight_needs_no_key(keyed_gateway: ServerThread) -> None:
    r = preflight(keyed_gateway.url + "/v1/chat/completions", LOCAL)
    assert r.status_code == 204
    r = httpx.post(keyed_gateway.url + "/v1/chat/completions", headers={"Origin": LOCAL},
                   json=CHAT)
    assert r.status_code == 401
    assert r.headers["Access-Control-Allow-Origin"] == LOCAL
    for path in ("/playground", "/static/sluicegate.js"):
        r = httpx.get(keyed_gateway.url + path, headers={"Origin": LOCAL})
        assert r.status_code == 200, path
        assert r.headers["Access-Control-Allow-Origin"] == LOCAL
    assert httpx.get(keyed_gateway.url + "/v1/stats").status_code == 401
    r = httpx.get(keyed_gateway.url + "/v1/stats",
                  headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert r.status_code == 200
    assert httpx.get(keyed_gateway.url + "/static/../config.py").status_code in (401, 404)


@pytest.fixture
def configured(upstream: FakeOpenAIUpstream,
               request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    config = mock_config(upstream.base_url, api_key=MASTER_KEY)
    config.server.cors = request.param
    server, _ = start_gateway(config)
    try:
        yield server
    finally:
        server.stop()
        mp.undo()


@pytest.mark.parametrize("configured", [CorsSettings(origins=["https://app.example.com"],
                                                     credentials=True, max_age_s=60)],
                         indirect=True)
def test_listed_origins_with_credentials(configured: ServerThread) -> None:
    r = preflight(configured.url + "/v1/models", "https://app.example.com", "GET")
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    assert r.headers["Access-Control-Max-Age"] == "60"
    assert preflight(configured.url + "/v1/models", LOCAL).status_code == 403
    r = httpx.get(configured.url + "/v1/models", headers={"Origin": LOCAL})
    assert "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.parametrize("configured", [CorsSettings(origins="*")], indirect=True)
def test_any_origin(configured: ServerThread) -> None:
    r = httpx.get(configured.url + "/v1/models", headers={
        "Origin": EVIL, "Authorization": f"Bearer {MASTER_KEY}"})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in r.headers


def test_no_origin_no_cors_headers(gw: ServerThread) -> None:
    r = httpx.get(gw.url + "/v1/models")
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]
