"""The ``sluicegate`` command line: ``models``, ``chat`` and ``serve``.

In-process runs use typer's ``CliRunner`` against gateways on loopback; one test runs the real
console script in a subprocess.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from bench.procs import die_with_parent
from typer.testing import CliRunner, Result

from sluicegate.cli import app

from .conftest import MASTER_KEY
from .fakes import FakeOpenAIUpstream, Script, ServerThread, free_port

SCRIPT = Path(sys.executable).parent / "sluicegate"
STATS = re.compile(r"TTFT (\d+|nan) ms · (\d+) tokens · (\d+\.\d) tokens/s · (\d+\.\d\d) s total")


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    # No stray SLUICEGATE_* from the outer environment (an API key would change requests).
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SLUICEGATE_")}
    return CliRunner(env={**clean, **(env or {})}).invoke(app, list(args))


def flat(text: str) -> str:
    """Rich wraps long lines at the console width; compare with whitespace collapsed."""
    return " ".join(text.split())


@pytest.fixture
def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def quiet_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` calls logging.basicConfig; keep it off the runner's short-lived streams."""
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)


# -- models ----------------------------------------------------------------------------------


def test_models_lists_exact_names_and_aliases(gw: ServerThread) -> None:
    result = run("models", "--url", gw.url)
    assert result.exit_code == 0, result.output
    served = {m["id"] for m in httpx.get(gw.url + "/v1/models", timeout=10).json()["data"]}
    assert {"fixed", "fast"} <= served
    words = set(re.findall(r"[\w./*-]+", result.stdout))
    assert served <= words, "every model the gateway serves is listed"
    assert "mock/*" not in words
    assert "owned by" in result.stdout


def test_models_url_may_end_with_a_slash(gw: ServerThread) -> None:
    result = run("models", "--url", gw.url + "/")
    assert result.exit_code == 0, result.output
    assert re.search(r"\bfast\b", result.stdout)


def test_models_against_a_closed_port(closed_url: str) -> None:
    result = run("models", "--url", closed_url)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert f"cannot reach the gateway at {closed_url}" in flat(result.stderr)
    assert "Traceback" not in result.output


def test_models_with_master_key(keyed_gateway: ServerThread) -> None:
    denied = run("models", "--url", keyed_gateway.url)
    assert denied.exit_code == 1
    assert "HTTP 401" in denied.stderr
    allowed = run("models", "--url", keyed_gateway.url, "--api-key", MASTER_KEY)
    assert allowed.exit_code == 0, allowed.output
    assert re.search(r"\bfixed\b", allowed.stdout)
    from_env = run("models", "--url", keyed_gateway.url, env={"SLUICEGATE_API_KEY": MASTER_KEY})
    assert from_env.exit_code == 0, from_env.output


# -- chat ------------------------------------------------------------------------------------


def test_chat_streams_text_and_prints_stats(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    result = run("chat", "hi", "--model", "mock/gpt-test", "--url", gw.url)
    assert result.exit_code == 0, result.output
    expected = "".join(fake.script.texts)
    assert expected == "Hello, world!"
    assert result.stdout.strip() == expected
    stats = STATS.search(flat(result.stderr))
    assert stats is not None, result.stderr
    assert "TTFT" in result.stderr and "tokens/s" in result.stderr
    assert int(stats.group(2)) == len(fake.script.texts)  # the upstream's completion_tokens
    assert float(stats.group(3)) > 0
    # What reached the upstream: the chat request, streamed, with usage asked for.
    (received,) = fake.received
    assert received.path == "/v1/chat/completions"
    assert received.body["model"] == "gpt-test"
    assert received.body["messages"] == [{"role": "user", "content": "hi"}]
    assert received.body["stream"] is True
    assert received.body["max_tokens"] == 128


def test_chat_options_reach_the_upstream(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(texts=["a", "b", "c"])
    result = run("chat", "question", "--model", "fast", "--url", gw.url, "--system", "be brief",
                 "--temperature", "0.25", "--max-tokens", "7")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "abc"
    stats = STATS.search(flat(result.stderr))
    assert stats is not None and int(stats.group(2)) == 3
    body = fake.received[-1].body
    assert body["model"] == "upstream-fixed"
    assert body["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "question"}]
    assert body["temperature"] == 0.25
    assert body["max_tokens"] == 7


def test_chat_against_a_closed_port(closed_url: str) -> None:
    result = run("chat", "hi", "--model", "mock/gpt-test", "--url", closed_url)
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)
    assert f"cannot reach the gateway at {closed_url}" in flat(result.stderr)
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_chat_unknown_model_shows_the_http_error(gw: ServerThread) -> None:
    result = run("chat", "hi", "--model", "no-such-model", "--url", gw.url)
    assert result.exit_code == 1
    err = flat(result.stderr)
    assert "HTTP 404" in err
    assert "model_not_found" in err
    assert "TTFT" not in err


def test_chat_upstream_error_before_stream(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(status=429, error_headers={"retry-after": "3"},
                         error_body={"error": {"message": "slow down please", "type": "requests",
                                               "param": None, "code": "rate_limit_exceeded"}})
    result = run("chat", "hi", "--model", "mock/gpt-test", "--url", gw.url)
    assert result.exit_code == 1
    assert "HTTP 429" in result.stderr
    assert "slow down please" in flat(result.stderr)


def test_chat_error_mid_stream(gw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    fake.script = Script(error_after=2)
    result = run("chat", "hi", "--model", "mock/gpt-test", "--url", gw.url)
    assert result.exit_code == 1
    assert result.stdout == "".join(fake.script.texts[:2])  # what arrived before the error
    assert "stream error" in flat(result.stderr)
    assert "Provider disconnected" in flat(result.stderr)


def test_chat_with_master_key(keyed_gateway: ServerThread, fake: FakeOpenAIUpstream) -> None:
    denied = run("chat", "hi", "--model", "mock/gpt-test", "--url", keyed_gateway.url,
                 "--api-key", "sk-wrong")
    assert denied.exit_code == 1
    assert "HTTP 401" in denied.stderr
    assert fake.received == []
    allowed = run("chat", "hi", "--model", "mock/gpt-test", "--url", keyed_gateway.url,
                  env={"SLUICEGATE_API_KEY": MASTER_KEY})
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stdout.strip() == "Hello, world!"


# -- serve -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("server: [unclosed\n", id="invalid-yaml"),
        pytest.param("serverr:\n  port: 1\n", id="unknown-key"),
        pytest.param("server:\n  port: 70000\n", id="bad-port"),
    ],
)
def test_serve_with_a_bad_config_exits_2(tmp_path: Path, text: str, quiet_logging: None) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    result = run("serve", "--config", str(path), "--port", "0")
    assert result.exit_code == 2
    assert "error:" in result.stderr
    assert "Traceback" not in result.output


def test_serve_with_a_missing_config_exits_2(tmp_path: Path, quiet_logging: None) -> None:
    result = run("serve", "--config", str(tmp_path / "missing.yaml"), "--port", "0")
    assert result.exit_code == 2
    assert "missing.yaml" in flat(result.stderr)


def test_serve_bad_config_from_env_exits_2(tmp_path: Path, quiet_logging: None) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("local:\n  n_ctx: 1\n", encoding="utf-8")
    result = run("serve", "--port", "0", env={"SLUICEGATE_CONFIG": str(path)})
    assert result.exit_code == 2


def subprocess_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SLUICEGATE_")}


def wait_healthy(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited early with {proc.returncode}"
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url}/healthz did not answer within {deadline_s} s")


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    """Send ``sig``; wait (bounded); kill if it lingers. Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
            pytest.fail(f"the server ignored {sig.name} for 15 s")
    return proc.returncode


def serve_mock(tmp_path: Path, upstream: FakeOpenAIUpstream, settings: str = "",
               *args: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The console script serving ``mock/*`` from ``upstream`` on a free port, with
    ``settings`` (YAML lines) in its config and ``args`` after ``serve``; its output goes to
    ``serve.log``. Returns the process, its base URL and the log's path."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"embedded_model: false\n{settings}models:\n"
        f"  - name: 'mock/*'\n    provider: openai\n    base_url: {upstream.base_url}\n",
        encoding="utf-8")
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(SCRIPT), "serve", *args, "--port", str(port), "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=subprocess_env(), cwd=tmp_path, preexec_fn=die_with_parent)
    return proc, f"http://127.0.0.1:{port}", log_path


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_console_script_serves_and_stops(tmp_path: Path, upstream: FakeOpenAIUpstream,
                                         fake: FakeOpenAIUpstream, sig: signal.Signals) -> None:
    assert SCRIPT.exists(), SCRIPT
    proc, url, log_path = serve_mock(tmp_path, upstream, "local:\n  preload: true\n")
    try:
        wait_healthy(url, proc)
        health = httpx.get(url + "/healthz", timeout=5).json()
        assert health == {"status": "ok", "pid": proc.pid, "local_models_loaded": {},
                          "local_models": {}, "state": {"backend": "memory", "ok": True}}

        body = {"model": "mock/gpt-sub", "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}
        text: list[str] = []
        with httpx.stream("POST", url + "/v1/chat/completions", json=body,
                          timeout=10) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in r.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        for line in lines[:-1]:
            chunk = json.loads(line.removeprefix("data: "))
            text.extend((c["delta"].get("content") or "") for c in chunk["choices"])
        assert "".join(text) == "".join(fake.script.texts)
        assert fake.received[-1].body["model"] == "gpt-sub"

        models = httpx.get(url + "/v1/models", timeout=5).json()["data"]
        assert models == []  # only a pattern, and no embedded model
    finally:
        status = stop(proc, sig)
    output = log_path.read_text(encoding="utf-8", errors="replace")
    assert f"listening on {url}" in flat(output)
    assert status == 0, output  # both signals shut down cleanly
    assert "stopped" in output
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz", timeout=2)


def test_serve_model_with_unknown_provider_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "unknown.yaml"
    config.write_text("embedded_model: false\nmodels:\n  - name: x\n    provider: nosuch\n",
                      encoding="utf-8")
    proc = subprocess.Popen(
        [str(SCRIPT), "serve", "--port", str(free_port()), "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=subprocess_env(), cwd=tmp_path, preexec_fn=die_with_parent,
    )
    try:
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=15)
    assert proc.returncode == 2, output.decode(errors="replace")
    assert b"Traceback" not in output
