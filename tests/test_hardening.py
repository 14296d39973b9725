"""One client must not freeze the gateway, leak a secret or escape the operator's limits.

Each test is a hostile case against the gateway on loopback; the fake upstream is the shared
OpenAI-dialect one. Cases on upstreams that misbehave live beside the dialects they abuse.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from sluicegate.config import GatewayConfig
from sluicegate.policy import TimeoutOverrides, Timeouts
from sluicegate.router import Router
from sluicegate.schemas import parse_chat_request
from sluicegate.server import Gateway

from .conftest import MASTER_KEY, MOCK_KEY, MOCK_KEY_ENV
from .fakes import FakeOpenAIUpstream, Script, ServerThread, free_port, start_gateway

MESSAGES = [{"role": "user", "content": "hi"}]


@contextlib.contextmanager
def _gateway(settings: dict[str, Any]) -> Iterator[ServerThread]:
    """A gateway of its own, configured by ``settings`` (no embedded model), stopped on exit."""
    server, _ = start_gateway(GatewayConfig.model_validate({"embedded_model": False,
                                                            **settings}))
    try:
        yield server
    finally:
        server.stop()


def _chat(server: ServerThread, body: dict[str, object], **headers: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers,
                      timeout=30)


# -- model names and metrics ------------------------------------------------------------------


def test_client_model_strings_never_become_metric_labels(gw: ServerThread,
                                                         fake: FakeOpenAIUpstream) -> None:
    def series() -> set[str]:
        # Accounting runs just after [DONE]: wait until every request is counted.
        deadline = time.monotonic() + 5
        while True:
            text = httpx.get(gw.url + "/metrics").text
            if "sluicegate_streams_in_flight 0.0" in text or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert "unique-" not in text, "a client's model string became a label"
        return {line.split(" ")[0] for line in text.splitlines() if not line.startswith("#")}

    assert _chat(gw, {"model": "mock/first", "messages": MESSAGES}).status_code == 200
    before = series()
    for i in range(40):
        r = _chat(gw, {"model": f"mock/unique-{i}-{'x' * 200}", "messages": MESSAGES})
        assert r.status_code == 200
    assert series() == before, "40 new model names added series"


@pytest.mark.parametrize("model", ["mock/a\r\nX-Injected: 1", "mock/a\x00b", "mock/a b",
                                   "mock/" + "m" * 300, "mock/ü"])
def test_model_names_have_a_length_and_charset_limit(gw: ServerThread, model: str) -> None:
    for stream in (False, True):
        r = _chat(gw, {"model": model, "messages": MESSAGES, "stream": stream})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "model"


# -- the embedded model's prompt ----------------------------------------------------------------


def test_a_huge_prompt_to_the_embedded_model_is_refused_without_stalling_others(
        local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, _ = local_gateway
    huge = "word " * 600_000  # 3 MB: far beyond any context window, under the body limit
    stalls: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            started = time.monotonic()
            httpx.get(server.url + "/healthz", timeout=10)
            stalls.append(time.monotonic() - started)
            time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for prompt in (huge, "word " * 50_000):  # refused unread; tokenized in a thread
            r = _chat(server, {"model": "default", "stream": True,
                               "messages": [{"role": "user", "content": prompt}]})
            assert r.status_code == 400
            assert r.json()["error"]["code"] == "context_length_exceeded"
    finally:
        done.set()
        prober.join(10)
    assert stalls and max(stalls) < 0.5, f"/healthz waited {max(stalls):.2f} s"


# -- per-request limits only tighten -----------------------------------------------------------


def test_request_timeouts_may_only_tighten() -> None:
    base = Timeouts(connect=10, first_token=120, stall=60, total=600)
    loosened = TimeoutOverrides(stall=0, total=0, first_token=900).apply(base, tighten_only=True)
    assert loosened == base
    tightened = TimeoutOverrides(stall=5, total=30).apply(base, tighten_only=True)
    assert (tightened.stall, tightened.total) == (5, 30)
    unlimited = Timeouts(total=None)
    assert TimeoutOverrides(total=30).apply(unlimited, tighten_only=True).total == 30
    # The operator's own overrides (deployments) may still remove a limit.
    assert TimeoutOverrides(total=0).apply(base).total is None


def test_a_request_cannot_loosen_the_operator_limits_through_the_router() -> None:
    config = GatewayConfig.model_validate({"embedded_model": False, "models": [
        {"name": "m", "provider": "openai", "base_url": "http://127.0.0.1:9/v1"}]})
    policy, _ = Router(config).plan(parse_chat_request(
        {"model": "m", "messages": MESSAGES, "timeouts": {"stall": 0, "total": 0}}))
    assert policy.timeouts.stall == 60 and policy.timeouts.total == 600


def test_models_list_is_capped(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    r = _chat(gw, {"model": "mock/a", "messages": MESSAGES,
                   "models": [f"mock/m{i}" for i in range(9)]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "models"
    assert not fake.received, "nothing was sent upstream"
    ok = _chat(gw, {"model": "mock/a", "messages": MESSAGES,
                    "models": [f"mock/m{i}" for i in range(8)]})
    assert ok.status_code == 200


# -- bad bytes -------------------------------------------------------------------------------


def _raw(server: ServerThread, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while b"\r\n\r\n" not in out:
            piece = sock.recv(65536)
            if not piece:
                break
            out += piece
        return out


def test_a_malformed_http_request_never_logs_its_credentials(
        keyed_gateway: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    body = b'{"model": "mock/a", "messages": []}'
    with caplog.at_level(logging.DEBUG):
        out = _raw(keyed_gateway, b"POST /v1/chat/completions HTTP/1.1\nHost: x\n"
                   b"Authorization: Bearer " + MASTER_KEY.encode() + b"\nContent-Length: "
                   + str(len(body)).encode() + b"\n\n" + body)
    assert out.startswith(b"HTTP/1.0 400") or out.startswith(b"HTTP/1.1 400"), out[:100]
    logged = "\n".join(caplog.text.splitlines() + [r.getMessage() for r in caplog.records])
    assert MASTER_KEY not in logged
    assert any("malformed HTTP request" in r.getMessage() for r in caplog.records)


def test_non_utf8_authorization_is_a_401(keyed_gateway: ServerThread) -> None:
    out = _raw(keyed_gateway, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"
               b"Authorization: Bearer \xff\xfe\x80\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 401"), out[:200]


def test_deeply_nested_pass_through_field_is_a_400(gw: ServerThread,
                                                   fake: FakeOpenAIUpstream) -> None:
    nested: object = 1
    for _ in range(300):  # orjson reads up to 1024 levels but writes only 254
        nested = [nested]
    for stream in (False, True):
        r = _chat(gw, {"model": "mock/a", "messages": MESSAGES, "metadata": nested,
                       "stream": stream})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_attempts_per_request_are_capped_over_the_whole_chain(fake: FakeOpenAIUpstream) -> None:
    """Eight failing fallbacks with two retries each would be 24 upstream calls; the cap
    (3 here) stops the request there."""
    fake.script = Script(status=503)
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    try:
        with _gateway({"routing": {"max_retries": 2, "retry_initial_s": 0.01,
                                   "retry_max_wait_s": 0.05, "max_attempts": 3},
                       "models": [{"name": "mock/*", "provider": "openai",
                                   "base_url": fake.base_url,
                                   "api_key_env": MOCK_KEY_ENV}]}) as server:
            r = _chat(server, {"model": "mock/a", "messages": MESSAGES,
                               "models": [f"mock/f{i}" for i in range(8)]})
    finally:
        mp.undo()
    assert r.status_code == 503
    assert len(fake.received) == 3


# -- upstreams are untrusted -------------------------------------------------------------------


def test_upstream_redirects_are_not_followed(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(status=307, error_headers={"Location": fake.base_url + "/completions"})
    r = _chat(gw, {"model": "mock/a", "messages": MESSAGES, "stream": True})
    assert r.status_code == 502
    assert r.json()["error"]["message"] == (
        "The upstream (mock/*) answered with a redirect (HTTP 307), which is not followed.")
    assert [x.path for x in fake.received] == ["/v1/chat/completions"], "sent nowhere else"


@pytest.mark.parametrize("status", [302, 999])
def test_odd_upstream_statuses_become_502(gw: ServerThread, fake: FakeOpenAIUpstream,
                                          status: int) -> None:
    fake.script = Script(status=status)
    r = _chat(gw, {"model": "mock/a", "messages": MESSAGES})
    assert r.status_code == 502
    assert str(status) in r.json()["error"]["message"]


def test_configured_secrets_never_reach_clients_or_logs(
        gw: ServerThread, fake: FakeOpenAIUpstream, caplog: pytest.LogCaptureFixture) -> None:
    echo = f"Incorrect API key provided: Bearer {MOCK_KEY}"
    caplog.set_level(logging.DEBUG)
    fake.queue = [Script(status=401, error_body={"error": {"message": echo}}),
                  Script(status=400, error_body={"error": {"message": echo, "type": "x"}}),
                  Script(raw_chunks=[
                      {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"},
                                    "finish_reason": None}]},
                      {"error": {"message": echo, "code": "oops"}, "choices": []}])]
    seen = [_chat(gw, {"model": "mock/a", "messages": MESSAGES, "stream": True})
            for _ in range(3)]
    assert [r.status_code for r in seen] == [502, 400, 200]
    # 401 upstream: a generic 502, the upstream's words logged (scrubbed).
    assert "credentials" in seen[0].json()["error"]["message"]
    assert seen[1].json()["error"]["message"] == "Incorrect API key provided: Bearer [redacted]"
    assert b"Bearer [redacted]" in seen[2].content
    for r in seen:
        assert MOCK_KEY not in r.text
    logged = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert "[redacted]" in logged
    assert MOCK_KEY not in logged


def test_unreachable_upstream_message_names_the_provider_not_its_address(
        fake: FakeOpenAIUpstream) -> None:
    dead = free_port()
    with _gateway({"routing": {"max_retries": 0},
                   "models": [{"name": "dead", "provider": "openai",
                               "base_url": f"http://127.0.0.1:{dead}/v1"}]}) as server:
        r = _chat(server, {"model": "dead", "messages": MESSAGES})
    assert r.status_code == 502
    assert r.json()["error"]["message"] == "Cannot reach the upstream (dead)."
    assert str(dead) not in r.text


ROLE = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
TEXT = {"index": 0, "delta": {"content": "ok"}, "finish_reason": None}


@pytest.mark.parametrize("bad", [
    {"choices": [{"index": 0, "finish_reason": None}]},  # no delta
    {"choices": [{"index": [0], "delta": {"content": "x"}, "finish_reason": None}]},
    {"choices": [1]},
    {"choices": [{"index": 0, "delta": "text", "finish_reason": None}]},
], ids=["no-delta", "list-index", "int-choice", "string-delta"])
def test_malformed_chunk_shapes_end_with_the_error_frame(gw: ServerThread,
                                                          fake: FakeOpenAIUpstream,
                                                          bad: dict[str, object]) -> None:
    fake.script = Script(raw_chunks=[{"choices": [ROLE]}, {"choices": [TEXT]}, bad,
                                     {"choices": [TEXT]}])
    r = _chat(gw, {"model": "mock/a", "messages": MESSAGES, "stream": True})
    assert r.status_code == 200
    events = [e for e in r.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    frame = orjson.loads(events[-2][6:])
    assert frame["error"]["code"] == "malformed_stream"
    assert "unexpected shape" in frame["error"]["message"]
    plain = _chat(gw, {"model": "mock/a", "messages": MESSAGES})
    assert plain.status_code == 502
    assert plain.json()["error"]["code"] == "malformed_stream"


def test_a_bad_first_chunk_shape_is_a_502_before_streaming(gw: ServerThread,
                                                           fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(raw_chunks=[{"choices": [1]}])
    r = _chat(gw, {"model": "mock/a", "messages": MESSAGES, "stream": True})
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "malformed_stream"


def test_slowloris_connections_are_closed_after_the_header_timeout(
        fake: FakeOpenAIUpstream) -> None:
    """A client trickling its request head (a byte every 0.2 s) is cut off after
    ``server.header_timeout_s`` (1 s here); a prompt client on the same gateway is served."""
    with _gateway({"server": {"header_timeout_s": 1.0}}) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            started = time.monotonic()
            closed_after = None
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
                try:
                    sock.sendall(bytes([byte]))
                    sock.settimeout(0.2)
                    if sock.recv(1) == b"":
                        closed_after = time.monotonic() - started
                        break
                except TimeoutError:
                    continue
                except OSError:
                    closed_after = time.monotonic() - started
                    break
                if time.monotonic() - started > 8:
                    break
        assert closed_after is not None, "the trickling connection was never closed"
        assert closed_after < 4
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e400", "Infinity"])
def test_absurd_retry_after_values_are_ignored(gw: ServerThread, fake: FakeOpenAIUpstream,
                                               value: str) -> None:
    fake.script = Script(status=503, error_headers={"Retry-After": value,
                                                    "retry-after-ms": value})
    r = _chat(gw, {"model": "mock/a", "messages": MESSAGES})
    assert r.status_code == 503
    assert "Retry-After" not in r.headers


def test_an_upstream_event_past_the_size_limit_ends_the_stream(gw: ServerThread,
                                                                fake: FakeOpenAIUpstream) -> None:
    """A 3 MB event (the default limit is 1 MiB) after a token: the stream ends with the error
    frame at once, instead of buffering and re-scanning an ever longer line."""
    huge = {"choices": [{"index": 0, "delta": {"content": "x" * 3_000_000},
                         "finish_reason": None}]}
    fake.script = Script(raw_chunks=[{"choices": [ROLE]}, {"choices": [TEXT]}, huge])
    started = time.monotonic()
    r = _chat(gw, {"model": "mock/a", "messages": MESSAGES, "stream": True})
    assert time.monotonic() - started < 5
    events = [e for e in r.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    frame = orjson.loads(events[-2][6:])
    assert frame["error"]["code"] == "event_too_large"
    assert frame["error"]["message"].startswith(
        "The upstream (mock/*) sent an event larger than the gateway accepts after")
    assert b"x" * 1000 not in r.content


def test_a_gzipped_line_that_never_ends_is_cut_at_the_event_limit() -> None:
    """64 MiB of one line, gzipped to ~64 KiB on the wire: the gateway inflates as it reads and
    gives up at the event limit, instead of re-scanning a growing line on every read."""
    from aiohttp import web

    async def bomb(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Content-Encoding": "gzip"})
        await response.prepare(request)
        gz = zlib.compressobj(9, zlib.DEFLATED, 31)
        head = (b'data: {"id":"u","object":"chat.completion.chunk","created":1,"model":"m",'
                b'"choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},'
                b'"finish_reason":null}]}\n\ndata: {"x":"')
        await response.write(gz.compress(head) + gz.flush(zlib.Z_SYNC_FLUSH))
        block = b"x" * (1024 * 1024)
        try:
            for _ in range(64):
                await response.write(gz.compress(block) + gz.flush(zlib.Z_SYNC_FLUSH))
        except ConnectionError:
            pass
        return response

    def app() -> web.Application:
        application = web.Application()
        application.router.add_post("/v1/chat/completions", bomb)
        return application

    upstream = ServerThread.serve(app)
    try:
        with _gateway({"routing": {"max_retries": 0},
                       "models": [{"name": "bomb", "provider": "openai",
                                   "base_url": upstream.url + "/v1"}]}) as server:
            started = time.monotonic()
            r = _chat(server, {"model": "bomb", "messages": MESSAGES, "stream": True})
            elapsed = time.monotonic() - started
    finally:
        upstream.stop()
    events = [e for e in r.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert orjson.loads(events[-2][6:])["error"]["code"] == "event_too_large"
    assert elapsed < 10


def test_a_trickled_request_body_gets_a_408(fake: FakeOpenAIUpstream) -> None:
    """The head arrives, the body (1,000 bytes announced) does not: 408 after
    ``server.header_timeout_s`` (1 s here), instead of a handler waiting forever."""
    with (_gateway({"server": {"header_timeout_s": 1.0}}) as server,
          socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock):
        started = time.monotonic()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        answer = sock.recv(65536)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code":"request_timeout"' in answer
    assert 0.9 < elapsed < 5
