"""``sluicegate serve --workers 2``: two processes on one port sharing state in a real Redis,
both taking requests, both drained by one SIGTERM, none left behind; without shared state it is
refused."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from .fakes import FakeOpenAIUpstream
from .test_children import _alive
from .test_cli import serve_mock


@pytest.mark.timeout(120)
def test_two_workers_share_one_port(tmp_path: Path, upstream: FakeOpenAIUpstream,
                                    fake: FakeOpenAIUpstream, redis_clean: str) -> None:
    settings = f"server:\n  shutdown_grace_s: 2\nstate:\n  backend: redis\n  url: {redis_clean}\n"
    proc, url, log = serve_mock(tmp_path, upstream, settings, "--workers", "2")
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:  # a new connection each time: the kernel picks a worker per connection
                pids.add(httpx.get(url + "/healthz", timeout=2).json()["pid"])
            except httpx.HTTPError:
                time.sleep(0.1)
        assert len(pids) == 2, f"only {pids} answered"
        health = httpx.get(url + "/healthz", timeout=2).json()
        assert health["state"] == {"backend": "redis", "ok": True}
        assert proc.pid not in pids, "the supervisor itself serves nothing"
        body = {"model": "mock/x", "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}
        lines = httpx.post(url + "/v1/chat/completions", json=body, timeout=10).text.split("\n")
        chunks = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text == "".join(fake.script.texts)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), "a worker outlived the supervisor"
    assert log.read_text().count("listening on") == 2


def test_workers_need_shared_state(tmp_path: Path, upstream: FakeOpenAIUpstream) -> None:
    proc, _, log = serve_mock(tmp_path, upstream, "", "--workers", "2")
    try:
        assert proc.wait(timeout=30) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = " ".join(log.read_text().split())
    assert "--workers 2 needs shared state: set state.backend: redis" in text, text
    assert "SLUICEGATE_REDIS_URL" in text
    assert "listening on" not in text and "starting 2 workers" not in text
