"""Fault injection: fallbacks, retries, timeouts, continuation, malformed events, disconnects,
slow clients and keep-alives, with scripted fakes on loopback and the official openai SDK.

Each case checks what reached the client and what happened upstream. Two fakes: ``primary``
(faults are scripted here) and ``backup`` (the fallback, healthy unless told otherwise).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest

from sluicegate.config import GatewayConfig
from sluicegate.server import Gateway
from sluicegate.tokens import counter_for

from .fakes import FakeOpenAIUpstream, Script, ServerThread, free_port, start_gateway

MESSAGES = [{"role": "user", "content": "hello there"}]
TEN = [f"t{i} " for i in range(10)]


@pytest.fixture(scope="module")
def primary() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def backup() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def fresh(primary: FakeOpenAIUpstream, backup: FakeOpenAIUpstream) -> None:
    for fake in (primary, backup):
        fake.script = Script()
        fake.queue.clear()
        fake.received.clear()
        fake.closed_early.clear()
    backup.script = Script(texts=["Backup", " answer", "."])


class SilentListener:
    """A TCP listener on loopback that accepts connections and never sends a byte: a TLS
    client's handshake gets no answer."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture(scope="module")
def silent() -> Iterator[SilentListener]:
    listener = SilentListener()
    yield listener
    listener.close()


def _config(primary: FakeOpenAIUpstream, backup: FakeOpenAIUpstream,
            silent: SilentListener) -> GatewayConfig:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connect refused
    fast = {"first_token": 0.6, "stall": 0.6}
    config = GatewayConfig.model_validate({
        "embedded_model": False,
        "routing": {"max_retries": 0, "retry_initial_s": 0.05, "retry_max_wait_s": 2.0,
                    "keepalive_s": 15, "max_malformed": 3},
        "models": [
            {"name": "primary", "provider": "openai", "base_url": primary.base_url,
             "model": "p-model", "fallbacks": ["backup"], "timeouts": fast},
            {"name": "retrying", "provider": "openai", "base_url": primary.base_url,
             "model": "p-model", "max_retries": 1},
            {"name": "refused", "provider": "openai", "base_url": dead, "fallbacks": ["backup"]},
            {"name": "continued", "provider": "openai", "base_url": primary.base_url,
             "model": "p-model", "fallbacks": ["backup"], "continuation": True,
             "timeouts": fast},
            {"name": "slowclient", "provider": "openai", "base_url": primary.base_url,
             "timeouts": {"stall": 1.0}},
            {"name": "backup", "provider": "openai", "base_url": backup.base_url,
             "model": "b-model"},
            {"name": "tls-silent", "provider": "openai",
             "base_url": f"https://127.0.0.1:{silent.port}/v1",
             "timeouts": {"connect": 0.5, "first_token": 60}},
        ],
    })
    config.routing.max_buffered_bytes = 64 * 1024
    return config


@pytest.fixture(scope="module")
def gateway(primary: FakeOpenAIUpstream, backup: FakeOpenAIUpstream,
            silent: SilentListener) -> Iterator[tuple[ServerThread, Gateway]]:
    server, gw = start_gateway(_config(primary, backup, silent))
    yield server, gw
    server.stop()


@pytest.fixture
def server(gateway: tuple[ServerThread, Gateway]) -> ServerThread:
    return gateway[0]


def _client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def _stream_text(server: ServerThread, model: str, **kw: object) -> tuple[str, dict[str, str]]:
    raw = _client(server).chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, stream=True, **kw)  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    return text, dict(raw.headers)


def _chat_requests(fake: FakeOpenAIUpstream) -> int:
    return len([r for r in fake.received if r.path.endswith("/chat/completions")])


# -- before the first token: hidden ----------------------------------------------------------


def test_5xx_then_success_on_the_fallback(server: ServerThread, primary: FakeOpenAIUpstream,
                                          backup: FakeOpenAIUpstream) -> None:
    primary.script = Script(status=503)
    text, headers = _stream_text(server, "primary")
    assert text == "Backup answer."
    assert headers["x-sluicegate-provider"] == "backup"
    assert headers["x-sluicegate-model"] == "b-model"
    assert headers["x-sluicegate-attempts"] == "2"
    assert _chat_requests(primary) == 1 and _chat_requests(backup) == 1
    assert backup.received[-1].body["model"] == "b-model"


def test_429_with_retry_after_then_success(server: ServerThread,
                                           primary: FakeOpenAIUpstream) -> None:
    primary.queue = [Script(status=429, error_headers={"Retry-After": "1"}), Script()]
    started = time.monotonic()
    text, headers = _stream_text(server, "retrying")
    waited = time.monotonic() - started
    assert text == "Hello, world!"
    assert headers["x-sluicegate-attempts"] == "2"
    assert _chat_requests(primary) == 2
    assert waited >= 0.95, "Retry-After: 1 was honoured"


def test_retry_after_ms_is_capped(server: ServerThread, primary: FakeOpenAIUpstream) -> None:
    primary.queue = [Script(status=503, error_headers={"retry-after-ms": "60000"}), Script()]
    started = time.monotonic()
    text, _ = _stream_text(server, "retrying")
    assert text == "Hello, world!"
    assert time.monotonic() - started < 5, "a 60 s Retry-After is capped at retry_max_wait_s"


def test_connect_refused_then_success_on_the_fallback(server: ServerThread,
                                                      backup: FakeOpenAIUpstream) -> None:
    text, headers = _stream_text(server, "refused")
    assert text == "Backup answer."
    assert headers["x-sluicegate-provider"] == "backup"
    assert _chat_requests(backup) == 1


def test_connect_timeout_covers_an_unanswered_tls_handshake(server: ServerThread,
                                                           silent: SilentListener) -> None:
    """TCP connects, the TLS handshake never gets an answer: ``connect`` (0.5 s) ends it, not
    ``first_token`` (60 s)."""
    started = time.monotonic()
    r = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
        "model": "tls-silent", "messages": MESSAGES, "stream": True})
    elapsed = time.monotonic() - started
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "connect_timeout"
    assert r.json()["error"]["message"] == "Could not connect to tls-silent within 0.5 s."
    assert silent.accepted, "the TCP connection itself was accepted"
    assert elapsed < 5


def test_slow_response_headers_count_against_first_token_not_connect(
        server: ServerThread, backup: FakeOpenAIUpstream) -> None:
    """Headers 1.5 s after the request, with ``connect`` 0.5 s: the wait is the first token's."""
    backup.queue = [Script(headers_delay_s=1.5, texts=["late", " but", " fine"])]
    text, headers = _stream_text(server, "backup",
                                 extra_body={"timeouts": {"connect": 0.5, "first_token": 5}})
    assert text == "late but fine"
    assert headers["x-sluicegate-attempts"] == "1"


def test_slow_response_headers_past_first_token_time_out_there(
        server: ServerThread, backup: FakeOpenAIUpstream) -> None:
    backup.queue = [Script(headers_delay_s=3)]
    r = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
        "model": "backup", "messages": MESSAGES, "stream": True,
        "timeouts": {"connect": 0.5, "first_token": 1}})
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "first_token_timeout"


def test_stall_before_first_token_then_fallback(server: ServerThread,
                                                primary: FakeOpenAIUpstream,
                                                backup: FakeOpenAIUpstream) -> None:
    primary.script = Script(first_delay_s=5)
    started = time.monotonic()
    text, headers = _stream_text(server, "primary")
    assert text == "Backup answer."
    assert time.monotonic() - started < 3
    assert headers["x-sluicegate-provider"] == "backup"
    deadline = time.monotonic() + 2
    while not primary.closed_early and time.monotonic() < deadline:
        time.sleep(0.02)
    assert primary.closed_early, "the stalled upstream connection was closed"


def test_stream_ending_before_content_falls_back(server: ServerThread,
                                                 primary: FakeOpenAIUpstream) -> None:
    primary.script = Script(texts=[], send_finish=False)  # role chunk, then [DONE]
    text, headers = _stream_text(server, "primary")
    assert text == "Backup answer."
    assert headers["x-sluicegate-provider"] == "backup"


def test_client_errors_are_not_retried_or_moved_past(server: ServerThread,
                                                     primary: FakeOpenAIUpstream,
                                                     backup: FakeOpenAIUpstream) -> None:
    primary.script = Script(status=400, error_body={"error": {
        "message": "bad field", "type": "invalid_request_error", "param": "x", "code": None}})
    with pytest.raises(openai.BadRequestError, match="bad field"):
        _stream_text(server, "primary")
    assert _chat_requests(primary) == 1 and _chat_requests(backup) == 0


def test_every_deployment_failing_gives_the_last_status(server: ServerThread,
                                                        primary: FakeOpenAIUpstream,
                                                        backup: FakeOpenAIUpstream) -> None:
    primary.script = Script(status=503)
    backup.script = Script(status=502)
    with pytest.raises(openai.InternalServerError) as info:
        _stream_text(server, "primary")
    assert info.value.status_code == 502


def test_per_request_models_list_is_a_fallback_chain(server: ServerThread,
                                                     primary: FakeOpenAIUpstream,
                                                     backup: FakeOpenAIUpstream) -> None:
    primary.script = Script(status=500)
    text, headers = _stream_text(server, "retrying", extra_body={
        "models": ["retrying", "unknown/model", "backup"]})
    assert text == "Backup answer."
    assert headers["x-sluicegate-attempts"] == "3"
    assert _chat_requests(primary) == 2  # its own retry first
    assert "models" not in backup.received[-1].body, "gateway-level field, not sent upstream"


def test_bad_timeouts_field_is_a_400(server: ServerThread) -> None:
    r = httpx.post(server.url + "/v1/chat/completions", json={
        "model": "primary", "messages": MESSAGES, "timeouts": {"stall": -1}})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "timeouts.stall"


# -- after the first token: reported -----------------------------------------------------------


def _collect_until_error(server: ServerThread, model: str) -> tuple[list[str], Exception]:
    seen: list[str] = []
    stream = _client(server).chat.completions.create(model=model, messages=MESSAGES,
                                                     stream=True)  # type: ignore[arg-type]
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)
    return seen, info.value


def test_stall_after_ten_tokens_ends_with_the_error_frame(server: ServerThread,
                                                          primary: FakeOpenAIUpstream) -> None:
    primary.script = Script(texts=[*TEN, "never"], stall_after=10, stall_s=5)
    started = time.monotonic()
    seen, error = _collect_until_error(server, "primary")
    assert seen == TEN
    assert f"sent nothing for 0.6 s after {_tokens(TEN)} tokens" in str(error)
    assert time.monotonic() - started < 3


def test_a_request_cannot_lift_the_stall_and_total_limits(server: ServerThread,
                                                         primary: FakeOpenAIUpstream) -> None:
    """``"timeouts": {"stall": 0, "total": 0}`` asks for no limits; the deployment's stall
    (0.6 s) still ends a stalled stream."""
    primary.script = Script(texts=[*TEN, "never"], stall_after=10, stall_s=5)
    started = time.monotonic()
    raw = httpx.post(server.url + "/v1/chat/completions", timeout=10, json={
        "model": "primary", "messages": MESSAGES, "stream": True,
        "timeouts": {"stall": 0, "total": 0}}).content
    assert time.monotonic() - started < 3
    events = [e for e in raw.split(b"\n\n") if e]
    assert orjson.loads(events[-2][6:])["error"]["code"] == "stall_timeout"


def test_stall_error_frame_on_the_wire(server: ServerThread,
                                       primary: FakeOpenAIUpstream) -> None:
    primary.script = Script(texts=[*TEN, "never"], stall_after=10, stall_s=5)
    raw = httpx.post(server.url + "/v1/chat/completions", json={
        "model": "primary", "messages": MESSAGES, "stream": True}, timeout=10).content
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    frame = orjson.loads(events[-2][6:])
    assert frame["error"]["code"] == "stall_timeout"
    assert frame["choices"] == [{"index": 0, "delta": {}, "logprobs": None,
                                 "finish_reason": "error"}]


def test_upstream_dying_after_ten_tokens_ends_with_the_error_frame(
        server: ServerThread, primary: FakeOpenAIUpstream) -> None:
    primary.script = Script(texts=[*TEN, "never"], die_after=10)
    seen, error = _collect_until_error(server, "primary")
    assert seen == TEN
    assert "closed the connection" in str(error)


def _tokens(pieces: list[str]) -> int:
    """Completion tokens the gateway estimates for the delivered text (cl100k_base)."""
    return counter_for("openai")("".join(pieces))


MIDSTREAM = {
    # kind: (script, per-request extra body, code, message)
    "connection_lost": (
        Script(texts=[*TEN, "never"], die_after=10), {}, "upstream_error",
        "The upstream (primary) closed the connection after {n} tokens without finishing "
        "the answer."),
    "ended_early": (
        Script(texts=TEN, send_finish=False, send_usage=False), {}, "upstream_error",
        "The upstream (primary) ended the stream after {n} tokens without finishing the "
        "answer."),
    "reported": (
        Script(texts=[*TEN, "never"], error_after=10), {}, "502",
        "The upstream (primary) reported an error after {n} tokens: Provider disconnected"),
    "malformed": (
        Script(texts=[*TEN, "never"], malformed_after=10, malformed_count=5), {},
        "malformed_stream",
        "The upstream (primary) sent too many malformed events in a row after {n} tokens; "
        "the stream was stopped."),
    "stall": (
        Script(texts=[*TEN, "never"], stall_after=10, stall_s=5), {}, "stall_timeout",
        "The upstream (primary) sent nothing for 0.6 s after {n} tokens; the stream was "
        "stopped."),
    "total": (
        Script(texts=[*TEN, "never"], stall_after=10, stall_s=5),
        {"timeouts": {"total": 0.5}}, "total_timeout",
        "The request reached its time limit of 0.5 s after {n} tokens; the stream was "
        "stopped."),
}


@pytest.mark.parametrize("kind", list(MIDSTREAM))
def test_midstream_error_messages_speak_to_people(
        server: ServerThread, primary: FakeOpenAIUpstream, kind: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Each kind of failure after 10 tokens: the frame's message names what happened, the
    provider and the tokens delivered; no exception reprs; code and type as before. The log
    line keeps the technical detail."""
    script, extra, code, message = MIDSTREAM[kind]
    primary.script = script
    with caplog.at_level(logging.WARNING, logger="sluicegate.server"):
        raw = httpx.post(server.url + "/v1/chat/completions", timeout=10, json={
            "model": "primary", "messages": MESSAGES, "stream": True, **extra}).content
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    frame = orjson.loads(events[-2][6:])
    error = frame["error"]
    assert error["message"] == message.format(n=_tokens(TEN))
    assert error["code"] == code
    assert error["type"] in ("server_error", "timeout_error")
    for internal in ("<", "Error", "aiohttp", "payload", "Traceback"):
        assert internal not in error["message"]
    (line,) = [r.getMessage() for r in caplog.records if "stream failed" in r.getMessage()]
    assert error["message"] in line
    if kind == "connection_lost":
        assert "ClientPayloadError" in line or "ServerDisconnectedError" in line, line


def test_failed_stream_sends_usage_before_the_error_frame(server: ServerThread,
                                                          primary: FakeOpenAIUpstream) -> None:
    """With include_usage, a stream that dies after 10 tokens still tells the client its usage
    (estimated: the upstream never sent it), just before the error frame; the openai SDK yields
    it, then raises on the frame."""
    primary.script = Script(texts=[*TEN, "never"], die_after=10)
    stream = _client(server).chat.completions.create(
        model="primary", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True})
    chunks = []
    with pytest.raises(openai.APIError, match="closed the connection after"):
        for chunk in stream:
            chunks.append(chunk)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == _tokens(TEN)
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert (usage.model_extra or {}).get("estimated") is True
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(TEN)

    raw = httpx.post(server.url + "/v1/chat/completions", timeout=10, json={
        "model": "primary", "messages": MESSAGES, "stream": True,
        "stream_options": {"include_usage": True}}).content
    events = [orjson.loads(e[6:]) for e in raw.split(b"\n\n") if e and e != b"data: [DONE]"]
    assert raw.endswith(b"data: [DONE]\n\n")
    assert events[-2]["choices"] == [] and events[-2]["usage"]["estimated"] is True
    assert events[-1]["error"]["code"] == "upstream_error"


def test_failed_stream_without_include_usage_sends_no_usage(
        server: ServerThread, primary: FakeOpenAIUpstream) -> None:
    primary.script = Script(texts=[*TEN, "never"], die_after=10)
    raw = httpx.post(server.url + "/v1/chat/completions", timeout=10, json={
        "model": "primary", "messages": MESSAGES, "stream": True}).content
    assert b'"usage"' not in raw


def test_non_stream_failure_after_first_token_speaks_to_people(
        server: ServerThread, primary: FakeOpenAIUpstream) -> None:
    primary.script = Script(texts=[*TEN, "never"], die_after=10)
    r = httpx.post(server.url + "/v1/chat/completions", timeout=10, json={
        "model": "primary", "messages": MESSAGES})
    assert r.status_code == 502
    assert r.json()["error"]["message"] == (
        f"The upstream (primary) closed the connection after {_tokens(TEN)} tokens without "
        "finishing the answer.")


def test_continuation_makes_a_dying_upstream_seamless(server: ServerThread,
                                                      primary: FakeOpenAIUpstream,
                                                      backup: FakeOpenAIUpstream) -> None:
    primary.script = Script(texts=[*TEN, "never"], die_after=10)
    chunks = list(_client(server).chat.completions.create(
        model="continued", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(TEN) + "Backup answer."
    assert len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes.count("stop") == 1 and "error" not in finishes
    asked = backup.received[-1].body["messages"]
    assert asked[:-1] == MESSAGES
    assert asked[-1] == {"role": "assistant", "content": "".join(TEN)}
    usage = chunks[-1].usage
    assert usage is not None
    # The first attempt's usage (estimated: it died before its usage chunk) plus the backup's
    # own (11 prompt tokens, 3 completion tokens from the fake).
    assert usage.completion_tokens >= 3 + 10
    assert usage.prompt_tokens >= 11 + 2


def test_malformed_lines_are_skipped_and_counted(gateway: tuple[ServerThread, Gateway],
                                                 primary: FakeOpenAIUpstream,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    server, gw = gateway
    primary.script = Script(malformed_after=2, malformed_count=2)
    before = _malformed_total(gw)
    with caplog.at_level(logging.WARNING, logger="sluicegate.providers"):
        text, _ = _stream_text(server, "primary")
    assert text == "Hello, world!"
    deadline = time.monotonic() + 2  # counted when the request is accounted, after [DONE]
    while _malformed_total(gw) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _malformed_total(gw) - before == 2
    assert sum("malformed upstream event" in r.message for r in caplog.records) == 2


def test_too_many_malformed_lines_in_a_row_fail_the_stream(server: ServerThread,
                                                           primary: FakeOpenAIUpstream) -> None:
    primary.script = Script(texts=TEN, malformed_after=3, malformed_count=5)
    seen, error = _collect_until_error(server, "primary")
    assert seen == TEN[:3]
    assert "malformed" in str(error)


def _malformed_total(gw: Gateway) -> float:
    assert gw.metrics is not None
    value = gw.metrics.registry.get_sample_value("sluicegate_malformed_events_total",
                                                 {"provider": "primary"})
    return value or 0.0


# -- the client's side -----------------------------------------------------------------------


def _usage_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    out = []
    for record in caplog.records:
        if record.name == "sluicegate.usage":
            out.append(orjson.loads(record.getMessage().split(" ", 1)[1]))
    return out


def test_client_disconnect_closes_upstream_within_100ms_and_counts_usage(
        server: ServerThread, primary: FakeOpenAIUpstream,
        caplog: pytest.LogCaptureFixture) -> None:
    primary.script = Script(texts=[f"w{i} " for i in range(400)], gap_s=0.02)
    caplog.set_level(logging.INFO, logger="sluicegate.usage")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        body = orjson.dumps({"model": "primary", "messages": MESSAGES, "stream": True})
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        received = b""
        while received.count(b"data: ") < 6:
            received += sock.recv(65536)
        closed_at = time.monotonic()
    deadline = time.monotonic() + 2
    while not primary.closed_early and time.monotonic() < deadline:
        time.sleep(0.005)
    assert primary.closed_early, "the upstream connection was closed"
    assert primary.closed_early[0] - closed_at < 0.1
    deadline = time.monotonic() + 2
    def cancelled() -> list[dict[str, object]]:
        return [r for r in _usage_records(caplog) if r["outcome"] == "cancelled"]

    while not cancelled() and time.monotonic() < deadline:
        time.sleep(0.01)
    (record,) = cancelled()
    assert record["outcome"] == "cancelled"
    usage = record["usage"]
    assert isinstance(usage, dict)
    assert usage["estimated"] is True and usage["completion_tokens"] >= 4


def test_slow_client_is_bounded_then_cut_off(server: ServerThread,
                                             primary: FakeOpenAIUpstream,
                                             caplog: pytest.LogCaptureFixture) -> None:
    chunk = "x" * 1000
    primary.script = Script(texts=[chunk] * 20000)  # 20 MB, as fast as it can be written
    sent_before = primary.sent
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        body = orjson.dumps({"model": "slowclient", "messages": MESSAGES, "stream": True})
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        with caplog.at_level(logging.WARNING, logger="sluicegate.server"):
            time.sleep(0.6)  # the client reads nothing
            # The upstream is held back: at most the kernel's socket buffers (a few MB on
            # loopback) and the gateway's capped buffer hold data, not the 20 MB stream.
            assert primary.sent - sent_before < 20000, "the upstream was never held back"
            deadline = time.monotonic() + 5
            while not primary.closed_early and time.monotonic() < deadline:
                time.sleep(0.02)
        assert primary.closed_early, "the stuck stream was cancelled upstream too"
        (record,) = [r for r in caplog.records if "client stopped reading" in r.message]
        buffered = record.args[1] if isinstance(record.args, tuple) else None
        assert isinstance(buffered, int)
        # What the gateway itself held for the client: its cap (64 KiB here), plus what aiohttp
        # writes before it drains (64 KiB), plus one upstream read as shaped for the client, a
        # little longer than read (the gateway's id is longer than the fake's: +11 bytes on each
        # ~1,100-byte event, so 1% is ample). One read is what aiohttp's reader holds: it pauses
        # the socket past 128 KiB, but the socket read that crosses that line may bring up to
        # 256 KiB (asyncio's and uvloop's read size), which a loaded machine does show.
        assert buffered <= 64 * 1024 + 64 * 1024 + int((128 + 256) * 1024 * 1.01)


# -- keep-alives -------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_forty_second_first_token_wait_sends_keepalives(server: ServerThread,
                                                        primary: FakeOpenAIUpstream,
                                                        backup: FakeOpenAIUpstream) -> None:
    """Keep-alives every 15 s (the default) while no token exists, whether the upstream has
    answered without a token (``primary``) or has not even sent its headers (``backup``, with
    the default ``connect`` of 10 s and ``first_token`` of 120 s); raw readers and the openai
    SDK get the whole answer. Runs ~40 s: the four requests go at once."""
    slow = Script(first_delay_s=40)
    primary.queue = [slow, slow]
    backup.script = Script(headers_delay_s=40, texts=["Backup", " answer", "."])
    results: dict[str, object] = {}

    def raw(name: str, model: str, extra: dict[str, object]) -> None:
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=90, json={
                "model": model, "messages": MESSAGES, "stream": True, **extra}) as r:
            results[name] = b"".join(r.iter_raw())

    def sdk(name: str, model: str, extra: dict[str, object]) -> None:
        results[name] = _stream_text(server, model, extra_body=extra)[0]

    first_token_60 = {"timeouts": {"first_token": 60}}
    threads = [threading.Thread(target=raw, args=("raw", "retrying", first_token_60)),
               threading.Thread(target=sdk, args=("sdk", "retrying", first_token_60)),
               threading.Thread(target=raw, args=("raw-headers", "backup", {})),
               threading.Thread(target=sdk, args=("sdk-headers", "backup", {}))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    for name in ("raw", "raw-headers"):
        body = results[name]
        assert isinstance(body, bytes)
        assert body.startswith(b": keep-alive\n\n: keep-alive\n\ndata: "), name
        assert body.count(b": keep-alive\n\n") == 2
        assert b"data: \n" not in body, "never an empty data event"
    assert results["sdk"] == "Hello, world!"
    assert results["sdk-headers"] == "Backup answer."
