"""Virtual keys on one gateway process (``state.backend: memory``: keys and ledger in SQLite,
limits in the process): the admin API, auth, limits, budgets, settlement, restarts, and the
limits with a Redis that goes away (fail open and fail closed)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bench.procs import start_redis, stop_redis

from sluicegate.config import GatewayConfig, PriceOverride
from sluicegate.keys.limits import duration

from .client_modes import Api
from .conftest import MOCK_KEY, MOCK_KEY_ENV, mock_config
from .fakes import FakeOpenAIUpstream, Script, ServerThread, start_gateway
from .keys_helpers import MASTER, bearer, chat, create_key, usage

MASTER_KEY = MASTER["Authorization"].removeprefix("Bearer ")


def keys_config(base_url: str, db: Path, **limits: object) -> GatewayConfig:
    config = mock_config(base_url, api_key=MASTER_KEY)
    config.limits.db_path = str(db)
    for name, value in limits.items():
        setattr(config.limits, name, value)
    # $1 per million input tokens, $2 per million output tokens on mock/*
    config.models[0].price = PriceOverride(input_per_mtok=1.0, output_per_mtok=2.0)
    return config


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MOCK_KEY_ENV, MOCK_KEY)


@pytest.fixture
def gateway(upstream: FakeOpenAIUpstream, tmp_path: Path, env: None) -> Iterator[ServerThread]:
    upstream.script = Script()
    server, _ = start_gateway(keys_config(upstream.base_url, tmp_path / "keys.db"))
    yield server
    server.stop()


def test_admin_api_needs_the_master_key(gateway: ServerThread) -> None:
    url = gateway.url
    for headers in ({}, bearer("sk-wrong-key-123"), bearer("sk-sg-" + "x" * 32)):
        response = httpx.get(f"{url}/admin/keys", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        assert httpx.post(f"{url}/admin/keys", json={"name": "x"},
                          headers=headers).status_code == 401
    key = create_key(url)
    response = httpx.get(f"{url}/admin/keys", headers=bearer(key["secret"]))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert httpx.get(f"{url}/admin/usage", headers=bearer(key["secret"])).status_code == 403


@pytest.mark.parametrize(("body", "param"), [
    ({"name": "x", "rpm": -1}, "rpm"),
    ({"name": "x", "tpm": 10**12}, "tpm"),
    ({"name": "x", "max_parallel": -5}, "max_parallel"),
    ({"name": "x", "budget_usd": -0.5}, "budget_usd"),
    ({"name": "x", "budget_period": "weekly"}, "budget_period"),
    ({"name": "x", "models": ["openai/gpt*"]}, "models"),
    ({"name": "x", "models": ["*/x"]}, "models"),
    ({"name": "x", "surprise": 1}, "surprise"),
    ({}, "name"),
])
def test_bad_admin_bodies_are_400_naming_the_field(gateway: ServerThread, body: dict[str, object],
                                                   param: str) -> None:
    response = httpx.post(f"{gateway.url}/admin/keys", json=body, headers=MASTER)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert param.split(".")[0] in error["message"]


def test_key_lifecycle_and_the_secret_shown_once(gateway: ServerThread) -> None:
    url = gateway.url
    key = create_key(url, name="team-a", models=["mock/*"], rpm=100, tpm=100_000)
    secret = key["secret"]
    assert secret.startswith("sk-sg-") and len(secret) == 38
    assert "hash" not in key
    listed = httpx.get(f"{url}/admin/keys", headers=MASTER)
    shown = httpx.get(f"{url}/admin/keys/{key['id']}", headers=MASTER)
    for response in (listed, shown):
        assert secret not in response.text and secret[6:] not in response.text
        assert "hash" not in response.text
    assert [k["id"] for k in listed.json()["data"]] == [key["id"]]
    assert shown.json()["rpm"] == 100

    ok = chat(url, secret)
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-ratelimit-limit-requests"] == "100"
    assert ok.headers["x-ratelimit-remaining-requests"] == "99"
    assert ok.headers["x-ratelimit-limit-tokens"] == "100000"
    assert int(ok.headers["x-ratelimit-remaining-tokens"]) < 100_000
    assert ok.headers["x-ratelimit-reset-requests"].endswith("s")
    # The master key still serves models, without the headers.
    master = chat(url, MASTER_KEY)
    assert master.status_code == 200 and "x-ratelimit-limit-requests" not in master.headers

    refused = chat(url, secret, model="fixed")
    assert refused.status_code == 403
    assert refused.json()["error"]["param"] == "model"

    patched = httpx.patch(f"{url}/admin/keys/{key['id']}", json={"rpm": 5}, headers=MASTER)
    assert patched.status_code == 200 and patched.json()["rpm"] == 5
    assert httpx.patch(f"{url}/admin/keys/{key['id']}", json={"rpm": -5},
                       headers=MASTER).status_code == 400

    unknown = chat(url, "sk-sg-" + "A" * 32)
    assert httpx.delete(f"{url}/admin/keys/{key['id']}", headers=MASTER).status_code == 200
    revoked = chat(url, secret)
    assert revoked.status_code == unknown.status_code == 401
    assert revoked.json() == unknown.json()

    expired = create_key(url, expires_at=time.time() + 0.3)
    assert chat(url, expired["secret"]).status_code == 200
    time.sleep(0.4)
    assert chat(url, expired["secret"]).json() == unknown.json()


def test_rpm_then_429_naming_the_limit(gateway: ServerThread) -> None:
    key = create_key(gateway.url, rpm=3)
    with httpx.Client(timeout=10) as client:
        codes = [chat(gateway.url, key["secret"], client=client).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        refused = chat(gateway.url, key["secret"], client=client)
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "rpm" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_tpm_counts_the_worst_case_and_settles_to_the_real_usage(
        gateway: ServerThread) -> None:
    key = create_key(gateway.url, tpm=1000)
    too_big = chat(gateway.url, key["secret"], max_tokens=2000)
    assert too_big.status_code == 429
    assert "tpm" in too_big.json()["error"]["message"]
    # Each request reserves prompt + 600 tokens, and uses 11 + 4 (the fake's usage).
    first = chat(gateway.url, key["secret"], max_tokens=600)
    assert first.status_code == 200
    remaining = int(first.headers["x-ratelimit-remaining-tokens"])
    assert remaining < 400
    deadline = time.monotonic() + 3
    while True:  # settlement runs after the response
        second = chat(gateway.url, key["secret"], max_tokens=600)
        if second.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert second.status_code == 200, second.text
    assert int(second.headers["x-ratelimit-remaining-tokens"]) >= 1000 - 15 - 620


def test_budget_with_an_override_price(gateway: ServerThread) -> None:
    # Worst case per request: 5 prompt tokens at $1/M + 10 completion tokens at $2/M
    # = $0.000025; the real usage (11 + 4 tokens) costs $0.000019.
    key = create_key(gateway.url, budget_usd=0.00004, budget_period="daily")
    assert chat(gateway.url, key["secret"]).status_code == 200
    time.sleep(0.1)
    refused = chat(gateway.url, key["secret"])  # 19 spent + 25 > 40 micro-USD
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert int(refused.headers["Retry-After"]) <= 86_400
    time.sleep(0.2)
    shown = httpx.get(f"{gateway.url}/admin/keys/{key['id']}", headers=MASTER).json()
    assert shown["spent_usd"] == pytest.approx((11 * 1 + 4 * 2) / 1e6)


def test_cancelled_stream_settles_to_its_delivered_tokens(
        gateway: ServerThread, upstream: FakeOpenAIUpstream) -> None:
    upstream.script = Script(texts=[f"w{i} " for i in range(200)], gap_s=0.02)
    key = create_key(gateway.url, tpm=100_000, max_parallel=1)
    with httpx.Client(timeout=10) as client, client.stream(
            "POST", f"{gateway.url}/v1/chat/completions", headers=bearer(key["secret"]),
            json={"model": "mock/x", "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 5000, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-tokens"] == "100000"
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                seen += 1
                if seen == 5:
                    break
    deadline = time.monotonic() + 5
    while not (rows := usage(gateway.url, key=key["id"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(rows) == 1
    row = rows[0]
    assert row["outcome"] == "cancelled"
    assert 5 <= row["completion_tokens"] < 100
    after = chat(gateway.url, key["secret"])  # the parallel slot was freed
    assert after.status_code == 200, after.text
    used = 100_000 - int(after.headers["x-ratelimit-remaining-tokens"])
    assert used < 300  # the cancelled stream's 5000-token reservation was given back


def test_usage_aggregates(gateway: ServerThread) -> None:
    a = create_key(gateway.url, name="a")
    b = create_key(gateway.url, name="b")
    for secret in (a["secret"], a["secret"], b["secret"]):
        assert chat(gateway.url, secret).status_code == 200
    time.sleep(0.2)
    by_key = {r["group"]: r for r in usage(gateway.url, group_by="key")}
    assert by_key[a["id"]]["requests"] == 2 and by_key[b["id"]]["requests"] == 1
    assert by_key[a["id"]]["cost_usd"] == pytest.approx(2 * 19 / 1e6)
    by_model = usage(gateway.url, group_by="model")
    assert by_model[0]["group"] == "mock/gpt-4o-mini" and by_model[0]["requests"] == 3
    assert usage(gateway.url, group_by="day", since="2000-01-01")[0]["requests"] == 3
    assert usage(gateway.url, until="2000-01-01") == []
    records = usage(gateway.url, key=b["id"])
    assert records[0]["provider"] == "mock/*" and records[0]["ttft_ms"] is not None
    bad = httpx.get(f"{gateway.url}/admin/usage", params={"group_by": "week"}, headers=MASTER)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"


def test_keys_and_spend_survive_a_restart(upstream: FakeOpenAIUpstream, tmp_path: Path,
                                         env: None) -> None:
    db = tmp_path / "keys.db"
    server, _ = start_gateway(keys_config(upstream.base_url, db))
    key = create_key(server.url, budget_usd=0.00006)  # worst case 25, real 19 micro-USD
    assert chat(server.url, key["secret"]).status_code == 200
    time.sleep(0.2)
    server.stop()
    server, _ = start_gateway(keys_config(upstream.base_url, db))
    try:
        assert chat(server.url, key["secret"]).status_code == 200
        time.sleep(0.1)
        refused = chat(server.url, key["secret"])  # 2 × 19 (one before the restart) + 25 > 60
        assert refused.json()["error"]["code"] == "budget_exceeded", refused.text
    finally:
        server.stop()


def test_duration_format() -> None:
    assert [duration(s) for s in (0.25, 1, 59.2, 360, 3723)] == [
        "250ms", "1s", "1m0s", "6m0s", "1h2m3s"]


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_unreachable(mode: str, upstream: FakeOpenAIUpstream, tmp_path: Path,
                           env: None) -> None:
    """A private Redis, stopped mid-test: ``open`` serves a key this instance has seen,
    unlimited; ``closed`` answers 503. Both log it."""
    upstream.script = Script()
    proc, redis_url = start_redis(tmp_path / "redis")
    config = keys_config(upstream.base_url, tmp_path / "unused.db", on_state_error=mode)
    config.state.backend = "redis"
    config.state.url = redis_url
    config.state.socket_timeout_s = config.state.connect_timeout_s = 0.3
    config.limits.key_cache_s = 0.0 if mode == "closed" else 0.1
    server, _ = start_gateway(config)
    try:
        key = create_key(server.url, rpm=2)
        assert chat(server.url, key["secret"]).status_code == 200
        stop_redis(proc)
        responses = [chat(server.url, key["secret"]) for _ in range(3)]
        if mode == "open":
            assert [r.status_code for r in responses] == [200, 200, 200]  # rpm 2 not enforced
        else:
            assert [r.status_code for r in responses] == [503, 503, 503]
            assert responses[0].json()["error"]["code"] == "state_unavailable"
        assert chat(server.url, MASTER_KEY).status_code == 200  # the master key always works
    finally:
        server.stop()
        if proc.poll() is None:
            stop_redis(proc)


def test_sdk_reads_the_rate_limit_headers_and_does_not_retry_a_spent_budget(
        gateway: ServerThread, upstream: FakeOpenAIUpstream, api: Api) -> None:
    from sluicegate.client import RateLimitError, RateLimits

    key = create_key(gateway.url, rpm=10, tpm=50_000, budget_usd=0.00004)
    messages = [{"role": "user", "content": "hi"}]
    client = api.Client(gateway.url + "/v1", api_key=key["secret"], max_retries=3)
    try:
        stream = api.run(client.chat.stream(model="mock/x", messages=messages, max_tokens=10))
        api.list(stream)
        limits = stream.stats.rate_limits
        assert isinstance(limits, RateLimits)
        assert (limits.limit_requests, limits.remaining_requests) == (10, 9)
        assert limits.limit_tokens == 50_000 and limits.remaining_tokens is not None
        assert limits.reset_requests is not None and limits.reset_tokens is not None
        time.sleep(0.1)
        before = len(upstream.received)
        with pytest.raises(RateLimitError) as caught:  # $0.000019 spent + $0.000025 > budget
            api.list(api.run(client.chat.stream(model="mock/x", messages=messages,
                                                max_tokens=10)))
        assert caught.value.code == "budget_exceeded"
        assert len(upstream.received) == before
        used = usage(gateway.url, key=key["id"])
        assert len(used) == 1  # one request reached the gateway's ledger: no retries
    finally:
        api.close(client)


def test_sdk_retries_rate_limits_but_not_budgets() -> None:
    from sluicegate.client._http import retryable
    from sluicegate.client.errors import status_error

    def error(code: str) -> Exception:
        return status_error(429, {"error": {"message": "m", "type": "t", "param": None,
                                            "code": code}}, {"retry-after": "1"})

    assert retryable(error("rate_limit_exceeded"))
    assert not retryable(error("budget_exceeded"))


def test_cli_keys_and_usage(gateway: ServerThread) -> None:
    from .conftest import CREATED_SECRETS
    from .test_cli import run

    env = {"SLUICEGATE_MASTER_KEY": MASTER_KEY, "COLUMNS": "200"}
    url = ["--url", gateway.url]
    created = run("keys", "create", "cli-key", "--model", "mock/*", "--rpm", "7", "--budget",
                  "1.5", "--period", "monthly", *url, env=env)
    assert created.exit_code == 0, created.output
    secret = created.output.split("secret (shown once, store it now): ")[1].split()[0]
    CREATED_SECRETS.append(secret)
    assert chat(gateway.url, secret).status_code == 200
    listed = run("keys", "list", *url, env=env)
    assert listed.exit_code == 0 and "cli-key" in listed.output and "$1.5/monthly" in listed.output
    assert secret not in listed.output
    key_id = next(w for w in listed.output.split() if w.startswith("key_"))
    shown = run("keys", "show", key_id, *url, env=env)
    assert shown.exit_code == 0 and "spent this period" in shown.output
    time.sleep(0.1)
    table = run("usage", "--group-by", "model", *url, env=env)
    assert table.exit_code == 0 and "mock/gpt-4o-mini" in table.output
    assert run("keys", "revoke", key_id, *url, env=env).output.count("revoked") == 1
    assert chat(gateway.url, secret).status_code == 401
    no_master = run("keys", "list", *url, env={"COLUMNS": "200"})
    assert no_master.exit_code == 2 and "SLUICEGATE_MASTER_KEY" in no_master.output
    wrong = run("keys", "list", *url, "--master-key", "sk-not-it", env=env)
    assert wrong.exit_code == 1 and "401" in wrong.output
    bad = run("keys", "create", "x", "--period", "weekly", *url, env=env)
    assert bad.exit_code == 1 and "budget_period" in bad.output


def test_resumable_stream_with_a_virtual_key(gateway: ServerThread) -> None:
    key = create_key(gateway.url, rpm=10, tpm=100_000)
    response = chat(gateway.url, key["secret"], stream=True,
                    stream_options={"resumable": True, "include_usage": True})
    assert response.status_code == 200, response.text
    assert response.headers.get("x-sluicegate-stream-id")
    assert response.headers["x-ratelimit-remaining-requests"] == "9"
    assert b"data: [DONE]" in response.content
    deadline = time.monotonic() + 3
    while not (rows := usage(gateway.url, key=key["id"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r["outcome"] for r in rows] == ["completed"]
    assert rows[0]["completion_tokens"] == 4


def test_a_cache_hit_costs_a_key_nothing(upstream: FakeOpenAIUpstream, tmp_path: Path,
                                         env: None) -> None:
    upstream.script = Script()
    config = keys_config(upstream.base_url, tmp_path / "keys.db")
    config.cache.enabled = True
    server, _ = start_gateway(config)
    try:
        key = create_key(server.url)
        first = chat(server.url, key["secret"], temperature=0)
        again = chat(server.url, key["secret"], temperature=0)
        assert first.headers["X-Sluicegate-Cache"] == "miss"
        assert again.headers["X-Sluicegate-Cache"] == "hit"
        assert again.json()["choices"] == first.json()["choices"]
        time.sleep(0.2)  # settling runs in a task of its own
        records = usage(server.url, key=key["id"], group_by="key")
        assert records and records[0]["requests"] == 2
        # Only the miss was paid: 11 prompt tokens at $1/M + 4 completion tokens at $2/M.
        assert records[0]["cost_usd"] == pytest.approx((11 * 1 + 4 * 2) / 1e6)
    finally:
        server.stop()


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
def test_virtual_key_limits_hold_on_the_other_dialects(gateway: ServerThread, path: str) -> None:
    key = create_key(gateway.url, rpm=1, models=["mock/*"])
    if path == "/v1/messages":
        body: dict[str, object] = {"model": "mock/gpt-4o-mini", "max_tokens": 10,
                                   "messages": [{"role": "user", "content": "hi"}]}
        headers = {"x-api-key": key["secret"], "anthropic-version": "2023-06-01"}
    else:
        body = {"model": "mock/gpt-4o-mini", "input": "hi", "max_output_tokens": 10}
        headers = bearer(key["secret"])
    first = httpx.post(gateway.url + path, json=body, headers=headers, timeout=10)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    again = httpx.post(gateway.url + path, json=body, headers=headers, timeout=10)
    assert again.status_code == 429
    assert "rpm" in again.text or "requests" in again.text
    other = httpx.post(gateway.url + path, json={**body, "model": "fixed"}, headers=headers,
                       timeout=10)
    assert other.status_code in (403, 404, 429)
    time.sleep(0.2)
    assert usage(gateway.url, key=key["id"], group_by="key")[0]["requests"] == 1


def test_a_budget_period_ends_at_the_next_period_start() -> None:
    """Retry-After for a spent budget: the exact next UTC midnight / first of the month, also
    just after midnight (counting in hours from now overshot it by up to an hour)."""
    from datetime import UTC, datetime

    from sluicegate.keys.model import period_end

    def at(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()

    assert period_end("daily", at("2026-12-02T00:06:00")) - at("2026-12-02T00:06:00") == 86_040
    assert period_end("daily", at("2026-12-31T23:59:59")) == at("2027-01-01T00:00:00")
    assert period_end("monthly", at("2026-12-31T23:59:59")) == at("2027-01-01T00:00:00")
    assert period_end("monthly", at("2026-02-15T12:00:00")) == at("2026-03-01T00:00:00")
    with pytest.raises(ValueError):
        period_end("total")
