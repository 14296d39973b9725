"""The fault cases of chat completions on ``/v1/messages`` and ``/v1/responses``: fallback
before the first token, a stall before and after it, and a client that disconnects."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from sluicegate.config import GatewayConfig

from .fakes import FakeOpenAIUpstream, Script, ServerThread, start_gateway

USER = [{"role": "user", "content": "hello there"}]
TEN = [f"t{i} " for i in range(10)]


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeOpenAIUpstream, FakeOpenAIUpstream]]:
    primary, backup = FakeOpenAIUpstream().start(), FakeOpenAIUpstream().start()
    yield primary, backup
    primary.stop()
    backup.stop()


@pytest.fixture(scope="module")
def server(fakes: tuple[FakeOpenAIUpstream, FakeOpenAIUpstream]) -> Iterator[ServerThread]:
    primary, backup = fakes
    config = GatewayConfig.model_validate({
        "embedded_model": False,
        "routing": {"max_retries": 0},
        "models": [
            {"name": "primary", "provider": "openai", "base_url": primary.base_url,
             "model": "p-model", "fallbacks": ["backup"],
             "timeouts": {"first_token": 0.6, "stall": 0.6}},
            {"name": "backup", "provider": "openai", "base_url": backup.base_url,
             "model": "b-model"},
        ],
    })
    gateway, _ = start_gateway(config)
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def fresh(fakes: tuple[FakeOpenAIUpstream, FakeOpenAIUpstream]) -> None:
    for fake in fakes:
        fake.script = Script()
        fake.queue.clear()
        fake.received.clear()
        fake.closed_early.clear()
    fakes[1].script = Script(texts=["Backup", " answer", "."])


def _body(dialect: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    if dialect == "messages":
        return "/v1/messages", {"model": "primary", "max_tokens": 50, "messages": USER,
                                "stream": True, **extra}
    return "/v1/responses", {"model": "primary", "input": "hello there", "stream": True,
                             **extra}


def _events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for frame in raw.split(b"\n\n"):
        if frame and not frame.startswith(b":"):
            out.append(orjson.loads(frame.split(b"\n")[1][6:]))
    return out


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"].get("text", "") if isinstance(e.get("delta"), dict)
                   else e["delta"] for e in events
                   if e["type"] in ("content_block_delta", "response.output_text.delta"))


DIALECTS = pytest.mark.parametrize("dialect", ["messages", "responses"])


@DIALECTS
def test_5xx_then_the_fallback(server: ServerThread, dialect: str,
                               fakes: tuple[FakeOpenAIUpstream, FakeOpenAIUpstream]) -> None:
    fakes[0].script = Script(status=500)
    path, body = _body(dialect)
    response = httpx.post(server.url + path, json=body, timeout=10)
    assert response.status_code == 200
    assert response.headers["x-sluicegate-provider"] == "backup"
    assert _text(_events(response.content)) == "Backup answer."


@DIALECTS
def test_stall_before_the_first_token_then_the_fallback(
        server: ServerThread, dialect: str,
        fakes: tuple[FakeOpenAIUpstream, FakeOpenAIUpstream]) -> None:
    fakes[0].script = Script(first_delay_s=5)
    path, body = _body(dialect)
    started = time.monotonic()
    response = httpx.post(server.url + path, json=body, timeout=10)
    assert time.monotonic() - started < 3
    assert _text(_events(response.content)) == "Backup answer."


@DIALECTS
def test_stall_after_tokens_ends_with_the_dialects_error(
        server: ServerThread, dialect: str,
        fakes: tuple[FakeOpenAIUpstream, FakeOpenAIUpstream]) -> None:
    fakes[0].script = Script(texts=[*TEN, "never"], stall_after=10, stall_s=5)
    path, body = _body(dialect)
    events = _events(httpx.post(server.url + path, json=body, timeout=10).content)
    assert _text(events) == "".join(TEN)
    if dialect == "messages":
        assert events[-1]["type"] == "error"
        assert events[-1]["error"]["type"] == "timeout_error"
        assert "sent nothing for 0.6 s" in events[-1]["error"]["message"]
    else:
        assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
        assert events[-1]["response"]["error"]["code"] == "stall_timeout"


@DIALECTS
def test_client_disconnect_closes_the_upstream_and_counts_usage(
        server: ServerThread, dialect: str, caplog: pytest.LogCaptureFixture,
        fakes: tuple[FakeOpenAIUpstream, FakeOpenAIUpstream]) -> None:
    primary = fakes[0]
    primary.script = Script(texts=[f"w{i} " for i in range(400)], gap_s=0.02)
    caplog.set_level(logging.INFO, logger="sluicegate.usage")
    path, body = _body(dialect)
    raw = orjson.dumps(body)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(raw)).encode() + b"\r\n\r\n" + raw)
        received = b""
        while received.count(b"delta\"") < 6:
            received += sock.recv(65536)
        closed_at = time.monotonic()
    deadline = time.monotonic() + 2
    while not primary.closed_early and time.monotonic() < deadline:
        time.sleep(0.005)
    assert primary.closed_early, "the upstream connection was closed"
    assert primary.closed_early[0] - closed_at < 0.5
    deadline = time.monotonic() + 2

    def cancelled() -> list[dict[str, Any]]:
        records = [orjson.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records
                   if r.name == "sluicegate.usage"]
        return [r for r in records if r["outcome"] == "cancelled"]

    while not cancelled() and time.monotonic() < deadline:
        time.sleep(0.01)
    (record,) = cancelled()
    assert record["usage"]["completion_tokens"] >= 4
