"""Virtual keys across three ``sluicegate serve`` processes sharing a real Redis: limits and
budgets hold across instances, revocation reaches every instance within 1 s, keys survive a
restart, and no secret reaches a log line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import CREATED_SECRETS, MASTER_KEY
from .fakes import FakeOpenAIUpstream, Script
from .keys_helpers import MASTER, bearer, chat, create_key, usage
from .processes import Instance, start_process, stop


def _start(tmp: Path, upstream: FakeOpenAIUpstream, redis_url: str) -> Instance:
    """An instance with the master key; its ``priced/*`` deployment costs $100 / $200 per
    million input / output tokens (a price override)."""
    return start_process(tmp, (
        "embedded_model: false\n"
        f"server:\n  api_key: {MASTER_KEY}\n"
        f"state:\n  backend: redis\n  url: {redis_url}\n"
        "limits:\n  key_cache_s: 0.5\n"
        "models:\n"
        f"  - name: 'mock/*'\n    provider: openai\n    base_url: {upstream.base_url}\n"
        f"  - name: 'priced/*'\n    provider: openai\n    base_url: {upstream.base_url}\n"
        "    price: {input_per_mtok: 100, output_per_mtok: 200}\n"))


@pytest.fixture(scope="module")
def cluster(upstream: FakeOpenAIUpstream, redis_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Instance]]:
    import redis

    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    base = tmp_path_factory.mktemp("keys-cluster")
    instances = [_start(base / f"g{i}", upstream, redis_url) for i in range(3)]
    yield instances
    for instance in instances:
        stop(instance)
    logs = "".join(instance.output() for instance in instances)
    leaked = [s for s in CREATED_SECRETS if s in logs]
    assert not leaked, "a virtual key's secret is in a gateway's log"


@pytest.fixture(autouse=True)
def _script(upstream: FakeOpenAIUpstream) -> None:
    upstream.script = Script()


def _burst(urls: list[str], secret: str, n: int, **body: object) -> list[httpx.Response]:
    async def one(client: httpx.AsyncClient, i: int) -> httpx.Response:
        payload = {"model": "mock/x", "messages": [{"role": "user", "content": "hi"}],
                   "max_tokens": 10, **body}
        return await client.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=payload,
                                 headers=bearer(secret))

    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            return await asyncio.gather(*(one(client, i) for i in range(n)))

    return asyncio.run(main())


@pytest.mark.timeout(60)
def test_rpm_50_over_three_instances_admits_exactly_50(cluster: list[Instance]) -> None:
    key = create_key(cluster[0].url, rpm=50)
    responses = _burst([i.url for i in cluster], key["secret"], 200)
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 50, codes
    assert codes.count(429) == 150
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "rpm" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.timeout(60)
def test_tpm_reservations_never_exceed_the_limit(cluster: list[Instance],
                                                 upstream: FakeOpenAIUpstream) -> None:
    upstream.script = Script(texts=["a ", "b ", "c "], gap_s=0.05)
    tpm = 2000
    key = create_key(cluster[0].url, tpm=tpm)
    max_tokens = 300  # worst case per request: 5 prompt tokens + 300
    responses = _burst([i.url for i in cluster], key["secret"], 30, max_tokens=max_tokens,
                       stream=True, stream_options={"include_usage": True})
    admitted = [r for r in responses if r.status_code == 200]
    assert 1 <= len(admitted) <= tpm // (max_tokens + 5)
    assert all(r.status_code in (200, 429) for r in responses)
    assert len(admitted) * (max_tokens + 5) <= tpm
    time.sleep(0.5)
    rows = usage(cluster[1].url, key=key["id"])
    assert len(rows) == len(admitted)
    assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows) <= tpm
    for r in admitted:
        assert r.headers["x-ratelimit-limit-tokens"] == str(tpm)


@pytest.mark.timeout(60)
def test_budget_holds_across_instances(cluster: list[Instance]) -> None:
    # Worst case $0.0025 (5 prompt + 10 completion tokens), real $0.0019 (11 + 4 tokens).
    key = create_key(cluster[0].url, budget_usd=0.01, models=["priced/*"])
    urls = [i.url for i in cluster]
    admitted = 0
    for _ in range(40):
        responses = _burst(urls, key["secret"], 6, model="priced/m", max_tokens=10)
        admitted += sum(r.status_code == 200 for r in responses)
        if any(r.status_code == 429 for r in responses):
            break
    else:
        pytest.fail(f"the budget never ran out ({admitted} requests)")
    time.sleep(0.5)
    shown = httpx.get(f"{urls[2]}/admin/keys/{key['id']}", headers=MASTER).json()
    assert 0 < shown["spent_usd"] <= 0.01
    refused = chat(urls[1], key["secret"], model="priced/m", max_tokens=10)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    total = sum(r["cost_usd"] for r in usage(urls[0], key=key["id"]))
    assert total == pytest.approx(shown["spent_usd"], rel=1e-6)
    assert total <= 0.01


@pytest.mark.timeout(60)
def test_revocation_reaches_every_instance_within_a_second(cluster: list[Instance]) -> None:
    key = create_key(cluster[0].url)
    for instance in cluster:
        assert chat(instance.url, key["secret"]).status_code == 200  # cached everywhere
    revoked_at = time.monotonic()
    assert httpx.delete(f"{cluster[0].url}/admin/keys/{key['id']}",
                        headers=MASTER).status_code == 200
    refused_after: dict[int, float] = {}
    while len(refused_after) < 2 and time.monotonic() - revoked_at < 3:
        for n, instance in enumerate(cluster[1:], 1):
            if n not in refused_after and chat(instance.url, key["secret"]).status_code == 401:
                refused_after[n] = time.monotonic() - revoked_at
        time.sleep(0.02)
    assert len(refused_after) == 2 and max(refused_after.values()) <= 1.0, refused_after


@pytest.mark.timeout(90)
def test_keys_survive_a_restart(cluster: list[Instance], upstream: FakeOpenAIUpstream,
                                redis_url: str) -> None:
    key = create_key(cluster[0].url, rpm=1000)
    assert chat(cluster[2].url, key["secret"]).status_code == 200
    stop(cluster[2])
    cluster[2] = _start(cluster[2].log.parent, upstream, redis_url)
    again = chat(cluster[2].url, key["secret"])
    assert again.status_code == 200
    assert again.headers["x-ratelimit-remaining-requests"] == "998"  # the window survived too
    listed = httpx.get(f"{cluster[2].url}/admin/keys", headers=MASTER)
    assert key["id"] in listed.text
    assert all(s not in listed.text for s in CREATED_SECRETS)


def test_admin_refuses_without_the_master_key(cluster: list[Instance]) -> None:
    key = create_key(cluster[0].url)
    for instance in cluster:
        assert httpx.get(f"{instance.url}/admin/keys").status_code == 401
        assert httpx.get(f"{instance.url}/admin/keys",
                         headers=bearer(key["secret"])).status_code == 403


def test_settlement_after_redis_forgot_its_scripts(cluster: list[Instance],
                                                   redis_url: str) -> None:
    import redis

    key = create_key(cluster[0].url, tpm=100_000)
    assert chat(cluster[0].url, key["secret"]).status_code == 200
    with redis.Redis.from_url(redis_url) as client:
        client.script_flush()  # as after a Redis restart: the settle's EVALSHA gets NOSCRIPT
    time.sleep(0.3)
    ok = chat(cluster[0].url, key["secret"], max_tokens=5000)
    assert ok.status_code == 200
    time.sleep(0.3)
    assert len(usage(cluster[0].url, key=key["id"])) == 2  # one ledger record each
    after = chat(cluster[0].url, key["secret"])
    used = 100_000 - int(after.headers["x-ratelimit-remaining-tokens"])
    assert used < 100  # the 5000-token reservation was settled to the real 15 tokens
