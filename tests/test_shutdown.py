"""SIGTERM: no new connections, live streams get a bounded grace, then a clear ending.

The console script serves the fake upstream. A short stream that finishes within the grace
period ends normally; a long one gets the error frame (``code: "shutting_down"``) and ``[DONE]``
when the grace runs out, and the process exits soon after.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from .fakes import FakeOpenAIUpstream, Script
from .test_cli import serve_mock, wait_healthy

MESSAGES = [{"role": "user", "content": "hi"}]


def _stream(url: str, started: threading.Event, out: dict[str, bytes], name: str) -> None:
    body = {"model": "mock/x", "messages": MESSAGES, "stream": True}
    data = b""
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
        for piece in r.iter_raw():
            data += piece
            if b'"content":"w' in data:
                started.set()
    out[name] = data


@pytest.mark.timeout(60)
def test_sigterm_gives_live_streams_a_bounded_grace(tmp_path: Path,
                                                     upstream: FakeOpenAIUpstream,
                                                     fake: FakeOpenAIUpstream) -> None:
    fake.queue = [Script(texts=[f"w{i} " for i in range(100)], gap_s=0.1),  # 10 s
                  Script(texts=[f"w{i} " for i in range(8)], gap_s=0.1)]  # 0.8 s
    proc, url, log = serve_mock(tmp_path, upstream, "server:\n  shutdown_grace_s: 1.5\n")
    out: dict[str, bytes] = {}
    try:
        wait_healthy(url, proc)
        threads = []
        for name in ("long", "short"):
            started = threading.Event()
            thread = threading.Thread(target=_stream, args=(url, started, out, name))
            thread.start()
            assert started.wait(10), f"the {name} stream did not start"
            threads.append(thread)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no new connections
            httpx.get(url + "/healthz", timeout=2)
        code = proc.wait(timeout=15)
        exited = time.monotonic() - signalled
        for thread in threads:
            thread.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = log.read_text(encoding="utf-8", errors="replace")
    assert code == 0, output
    assert "ending 1 live request(s)" in output
    assert exited < 1.5 + 3, f"exit took {exited:.1f} s"
    short = [e for e in out["short"].split(b"\n\n") if e]
    assert short[-1] == b"data: [DONE]" and b'"error"' not in out["short"]
    assert b'"finish_reason":"stop"' in out["short"], "the short stream finished in the grace"
    long = [e for e in out["long"].split(b"\n\n") if e]
    assert long[-1] == b"data: [DONE]"
    frame = orjson.loads(long[-2][6:])
    assert frame["error"]["code"] == "shutting_down"
    assert frame["choices"][0]["finish_reason"] == "error"
    assert out["long"].count(b'"content":"w') >= 10, "tokens flowed during the grace"
