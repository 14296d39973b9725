"""The shared-state layer, each test on both backends: memory, and Redis on a real server.

Short TTLs (0.2-0.4 s) are waited out for real. The Redis-only checks look at the server itself:
every key has a TTL and a hash tag, a capped stream stays small in ``MEMORY USAGE``, a Redis that
is down gives ``StateUnavailable`` at once, and a busy pool makes callers wait, not fail.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio

from sluicegate.config import GatewayConfig, StateSettings
from sluicegate.state import StateBackend, StateUnavailable, key, open_state

from .fakes import free_port, start_gateway

LOG = {"ttl_s": 30.0, "max_entries": 1000, "max_bytes": 1 << 20}


@pytest.fixture(params=["memory", "redis"])
def settings(request: pytest.FixtureRequest) -> StateSettings:
    if request.param == "memory":
        return StateSettings()
    return StateSettings(url=request.getfixturevalue("redis_clean"))


@pytest.fixture
async def state(settings: StateSettings) -> AsyncIterator[StateBackend]:
    backend = open_state(settings)
    yield backend
    await backend.aclose()


@pytest.fixture
async def raw(redis_clean: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client on the test server, to look at what the backend wrote."""
    client = redis.asyncio.Redis.from_url(redis_clean)
    yield client
    await client.aclose()


def test_keys_carry_a_hash_tag_and_scope_ids_are_checked() -> None:
    assert key("req-1", "log") == "{sg:req-1}:log"
    assert key("a b~!", "x:y") == "{sg:a b~!}:x:y"
    assert key("x" * 128, "p").startswith("{sg:x")
    for bad in ("", "x" * 129, "a{b", "a}b", "é", "tab\there", "nl\n"):
        with pytest.raises(ValueError, match="scope id"):
            key(bad, "log")
    with pytest.raises(ValueError):
        key("ok", "")


def test_settings() -> None:
    assert open_state(StateSettings()).name == "memory"
    assert StateSettings(url="redis://h:1/0").backend == "redis"  # a url implies redis
    assert StateSettings(backend="memory", url="redis://h:1/0").backend == "memory"
    for bad in ({"backend": "redis"}, {"url": "http://h"}):
        with pytest.raises(ValueError, match=r"state\.(url|backend)"):
            StateSettings.model_validate(bad)


async def test_get_set_only_if_absent_and_expiry(state: StateBackend) -> None:
    k = key("kv", "a")
    assert await state.get(k) is None
    assert await state.set(k, b"one", ttl_s=0.3)
    assert await state.get(k) == b"one"
    assert not await state.set(k, b"two", ttl_s=5, only_if_absent=True)
    assert await state.get(k) == b"one"
    await asyncio.sleep(0.45)
    assert await state.get(k) is None
    assert await state.set(k, b"three", ttl_s=5, only_if_absent=True)
    assert await state.get(k) == b"three"
    with pytest.raises(ValueError, match="TTL"):
        await state.set(k, b"x", ttl_s=0)


async def test_delete_and_expire(state: StateBackend) -> None:
    a, b, c = key("d", "a"), key("d", "b"), key("d", "c")
    await state.set(a, b"1", ttl_s=5)
    await state.set(b, b"2", ttl_s=5)
    assert await state.delete(a, b, c) == 2
    assert await state.delete() == 0
    assert await state.get(a) is None
    assert not await state.expire(c, 5)
    await state.set(c, b"3", ttl_s=60)
    assert await state.expire(c, 0.2)
    await asyncio.sleep(0.35)
    assert await state.get(c) is None


async def test_incr_sets_the_ttl_when_it_creates_the_key(state: StateBackend) -> None:
    k = key("n", "count")
    assert await state.incr(k, ttl_s=0.4) == 1
    await asyncio.sleep(0.2)
    assert await state.incr(k, 5, ttl_s=0.4) == 6  # the TTL is not extended
    assert await state.get(k) == b"6"
    await asyncio.sleep(0.35)
    assert await state.incr(k, ttl_s=5) == 1
    assert await state.incr(k, -3, ttl_s=5) == -2
    await state.set(k, b"not a number", ttl_s=5)
    with pytest.raises(ValueError):
        await state.incr(k, ttl_s=5)


async def test_leases(state: StateBackend) -> None:
    k = key("job", "lease")
    assert await state.lease_owner(k) is None
    assert await state.acquire_lease(k, "a", ttl_s=0.3)
    assert not await state.acquire_lease(k, "b", ttl_s=5)
    assert await state.acquire_lease(k, "a", ttl_s=0.3)  # the holder again: still its own
    assert await state.lease_owner(k) == "a"
    assert not await state.renew_lease(k, "b", ttl_s=5)
    assert not await state.release_lease(k, "b")
    await asyncio.sleep(0.2)
    assert await state.renew_lease(k, "a", ttl_s=0.3)
    await asyncio.sleep(0.2)  # 0.4 s after taking it: held only thanks to the renewal
    assert await state.lease_owner(k) == "a"
    await asyncio.sleep(0.3)
    assert await state.lease_owner(k) is None  # expired: it passes to another owner
    assert not await state.renew_lease(k, "a", ttl_s=5)
    assert await state.acquire_lease(k, "b", ttl_s=5)
    assert await state.lease_owner(k) == "b"
    assert not await state.release_lease(k, "a")
    assert await state.release_lease(k, "b")
    assert await state.lease_owner(k) is None
    assert await state.acquire_lease(k, "c", ttl_s=5)


async def test_log_append_and_read(state: StateBackend) -> None:
    k = key("s1", "log")
    assert await state.log_info(k) is None
    assert await state.log_read(k, 0) == []
    await state.log_append(k, [(1, b"a"), (2, b"bb")], **LOG)
    await state.log_append(k, [(5, b"")], **LOG)
    await state.log_append(k, [(6, b"d" * 10), (9, b"\x00\xff")], **LOG)
    everything = [(1, b"a"), (2, b"bb"), (5, b""), (6, b"d" * 10), (9, b"\x00\xff")]
    assert await state.log_read(k, 0) == everything
    assert await state.log_read(k, 2) == everything[2:]
    assert await state.log_read(k, 3) == everything[2:]
    assert await state.log_read(k, 0, limit=2) == everything[:2]
    assert await state.log_read(k, 5, limit=1) == [(6, b"d" * 10)]
    assert await state.log_read(k, 9) == []
    assert await state.log_read(k, 9, block_s=0.01) == []
    info = await state.log_info(k)
    assert info is not None
    assert (info.last_seq, info.trimmed_through, info.entries, info.bytes) == (9, 0, 5, 15)
    await state.log_append(k, [], **LOG)
    assert await state.log_info(k) == info
    await state.log_append(key("s1", "other"), [], **LOG)  # nothing to append: no log
    assert await state.log_info(key("s1", "other")) is None


async def test_seq_must_increase(state: StateBackend) -> None:
    k = key("s2", "log")
    await state.log_append(k, [(3, b"x")], **LOG)
    for entries in ([(3, b"y")], [(2, b"y")], [(4, b"y"), (4, b"z")], [(5, b"y"), (4, b"z")],
                    [(0, b"y")], [(-1, b"y")]):
        with pytest.raises(ValueError, match="seq"):
            await state.log_append(k, entries, **LOG)
    assert await state.log_read(k, 0) == [(3, b"x")]  # nothing of a refused call was added
    await state.log_append(k, [(4, b"y")], **LOG)
    assert await state.log_read(k, 0) == [(3, b"x"), (4, b"y")]


async def test_blocking_read_is_woken_by_an_append(state: StateBackend) -> None:
    k = key("s3", "log")

    async def later() -> None:
        await asyncio.sleep(0.2)
        await state.log_append(k, [(1, b"first"), (2, b"second")], **LOG)

    task = asyncio.create_task(later())
    start = time.monotonic()
    got = await state.log_read(k, 0, block_s=5)  # the log does not exist yet
    assert got == [(1, b"first"), (2, b"second")]
    assert 0.1 < time.monotonic() - start < 2
    await task

    async def append_three() -> None:
        await asyncio.sleep(0.1)
        await state.log_append(k, [(3, b"third")], **LOG)

    task = asyncio.create_task(append_three())
    assert await state.log_read(k, 2, block_s=5) == [(3, b"third")]
    await task


async def test_blocking_read_times_out_empty(state: StateBackend) -> None:
    k = key("s4", "log")
    await state.log_append(k, [(1, b"x")], **LOG)
    start = time.monotonic()
    assert await state.log_read(k, 1, block_s=0.3) == []
    assert 0.25 < time.monotonic() - start < 1.5
    assert await state.log_read(k, 0, block_s=0.3) == [(1, b"x")]  # data: no wait


async def test_cancelled_blocking_read_leaves_the_backend_usable(state: StateBackend) -> None:
    k = key("s5", "log")
    task = asyncio.create_task(state.log_read(k, 0, block_s=5))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await state.log_append(k, [(1, b"x")], **LOG)
    assert await state.log_read(k, 0) == [(1, b"x")]
    assert await state.log_read(k, 0, block_s=1) == [(1, b"x")]


async def test_caps_by_entries_and_by_bytes(state: StateBackend) -> None:
    by_entries = key("s6", "entries")
    await state.log_append(by_entries, [(i, b"x" * 10) for i in range(1, 6)], ttl_s=30,
                           max_entries=3, max_bytes=1000)
    assert await state.log_read(by_entries, 0) == [(i, b"x" * 10) for i in (3, 4, 5)]
    info = await state.log_info(by_entries)
    assert info is not None
    assert (info.last_seq, info.trimmed_through, info.entries, info.bytes) == (5, 2, 3, 30)

    k = key("s6", "bytes")
    caps = {"ttl_s": 30.0, "max_entries": 100, "max_bytes": 100}
    expected = [  # appended entry, then (seqs kept, last, trimmed_through, bytes)
        ([(1, 40), (2, 40)], ([1, 2], 2, 0, 80)),
        ([(3, 30)], ([2, 3], 3, 1, 70)),
        ([(4, 100)], ([4], 4, 3, 100)),  # exactly the cap: kept
        ([(5, 150)], ([], 5, 5, 0)),  # larger than the cap: trimmed at once
        ([(6, 1), (7, 2)], ([6, 7], 7, 5, 3)),
    ]
    for appended, (kept, last, trimmed, nbytes) in expected:
        await state.log_append(k, [(seq, b"p" * size) for seq, size in appended], **caps)
        assert [seq for seq, _ in await state.log_read(k, 0)] == kept
        info = await state.log_info(k)
        assert info is not None
        assert (info.last_seq, info.trimmed_through, info.entries, info.bytes) == (
            last, trimmed, len(kept), nbytes)
    with pytest.raises(ValueError, match="seq"):
        await state.log_append(k, [(5, b"again")], **caps)


async def test_twenty_megabytes_stay_under_the_byte_cap(state: StateBackend,
                                                        settings: StateSettings) -> None:
    k = key("big", "log")
    cap = 1 << 20
    payload = bytes(range(256)) * 16  # 4 KiB
    seq = 0
    for _ in range(20 * 1024 * 1024 // (len(payload) * 8)):
        batch = [(seq + i, payload) for i in range(1, 9)]
        seq += 8
        await state.log_append(k, batch, ttl_s=30, max_entries=100_000, max_bytes=cap)
    info = await state.log_info(k)
    assert info is not None
    assert info.last_seq == seq
    assert cap - len(payload) < info.bytes <= cap
    assert info.entries == info.bytes // len(payload)
    assert info.trimmed_through == seq - info.entries
    tail = await state.log_read(k, 0, limit=100_000)
    assert [s for s, _ in tail] == list(range(info.trimmed_through + 1, seq + 1))
    if settings.backend == "redis":
        async with redis.asyncio.Redis.from_url(str(settings.url)) as client:
            used = await client.memory_usage(k, samples=0)
        assert used is not None and used < 2 * cap, used


async def test_log_expire_and_log_ttl(state: StateBackend) -> None:
    k = key("s7", "log")
    await state.log_append(k, [(1, b"x")], ttl_s=0.3, max_entries=10, max_bytes=100)
    await asyncio.sleep(0.2)
    await state.log_append(k, [(2, b"y")], ttl_s=0.3, max_entries=10, max_bytes=100)
    await asyncio.sleep(0.2)  # alive: the append refreshed the TTL
    assert [s for s, _ in await state.log_read(k, 0)] == [1, 2]
    await state.log_expire(k, 60)
    await asyncio.sleep(0.2)
    assert await state.log_info(k) is not None
    await state.log_expire(k, 0.2)
    await asyncio.sleep(0.35)
    assert await state.log_info(k) is None
    assert await state.log_read(k, 0) == []
    await state.log_expire(k, 5)  # no log: nothing happens
    await state.log_append(k, [(1, b"new")], **LOG)  # a new log starts from scratch
    info = await state.log_info(k)
    assert info is not None and (info.last_seq, info.entries) == (1, 1)


async def test_a_deleted_log_starts_over(state: StateBackend) -> None:
    k = key("s8", "log")
    await state.log_append(k, [(10, b"x" * 40)], ttl_s=30, max_entries=1, max_bytes=100)
    await state.log_append(k, [(11, b"y")], ttl_s=30, max_entries=1, max_bytes=100)
    assert await state.delete(k) == 1
    assert await state.log_info(k) is None
    await state.log_append(k, [(1, b"z" * 5)], **LOG)
    info = await state.log_info(k)
    assert info is not None
    assert (info.last_seq, info.trimmed_through, info.entries, info.bytes) == (1, 0, 1, 5)


async def test_memory_sweeps_expired_keys_nobody_reads() -> None:
    state = open_state(StateSettings())
    for i in range(2000):
        await state.set(key("sweep", str(i)), b"x", ttl_s=0.05)
        await state.log_append(key("sweep", f"log{i}"), [(1, b"x")], ttl_s=0.05, max_entries=1,
                               max_bytes=10)
    await asyncio.sleep(0.1)
    await state.set(key("sweep", "last"), b"x", ttl_s=5)
    assert len(state._data) == 1  # type: ignore[attr-defined]
    assert len(state._deadlines) <= 1025  # type: ignore[attr-defined]


# -- Redis only -----------------------------------------------------------------------------

async def test_every_redis_key_has_a_ttl_and_a_hash_tag(redis_clean: str,
                                                        raw: redis.asyncio.Redis) -> None:
    state = open_state(StateSettings(url=redis_clean))
    try:
        await state.set(key("t", "v"), b"x", ttl_s=30)
        await state.set(key("t", "w"), b"x", ttl_s=30, only_if_absent=True)
        await state.incr(key("t", "n"), ttl_s=30)
        await state.incr(key("t", "n"), ttl_s=30)
        await state.acquire_lease(key("t", "lease"), "me", ttl_s=30)
        await state.renew_lease(key("t", "lease"), "me", ttl_s=30)
        await state.log_append(key("t", "log"), [(1, b"a"), (2, b"b")], ttl_s=30,
                               max_entries=1, max_bytes=100)
        await state.log_expire(key("t", "log"), 20)
        await state.log_append(key("u", "log"), [(1, b"a")], **LOG)
    finally:
        await state.aclose()
    keys = sorted([k async for k in raw.scan_iter(count=1000)])
    assert keys == [b"{sg:t}:lease", b"{sg:t}:log", b"{sg:t}:log:meta", b"{sg:t}:n",
                    b"{sg:t}:v", b"{sg:t}:w", b"{sg:u}:log", b"{sg:u}:log:meta"]
    for k in keys:
        assert re.fullmatch(rb"\{sg:[^{}]+\}:.+", k), k
        assert await raw.pttl(k) > 0, k
    assert 0 < await raw.pttl(b"{sg:t}:log") <= 20_000
    assert 0 < await raw.pttl(b"{sg:t}:log:meta") <= 20_000
    assert await raw.type(b"{sg:t}:log") == b"stream"


async def test_redis_down_gives_state_unavailable_fast() -> None:
    port = free_port()  # nothing listens here
    state = open_state(StateSettings(url=f"redis://user:s3cret-pw@127.0.0.1:{port}/0"))
    try:
        for call in (state.get(key("x", "a")), state.set(key("x", "a"), b"1", ttl_s=1),
                     state.log_read(key("x", "log"), 0),
                     state.log_read(key("x", "log"), 0, block_s=5),
                     state.log_append(key("x", "log"), [(1, b"a")], **LOG), state.ping()):
            start = time.monotonic()
            with pytest.raises(StateUnavailable) as caught:
                await call
            assert time.monotonic() - start < 2
            message = str(caught.value)
            assert f"redis://user:***@127.0.0.1:{port}/0" in message
            assert "s3cret" not in message
    finally:
        await state.aclose()


async def test_a_silent_redis_gives_state_unavailable_within_the_timeouts() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        state = open_state(StateSettings(url=url, socket_timeout_s=0.3,
                                         connect_timeout_s=0.3))
        try:
            for call in (state.get(key("x", "a")), state.log_read(key("x", "log"), 0,
                                                                  block_s=5)):
                start = time.monotonic()
                with pytest.raises(StateUnavailable, match="Timeout"):
                    await call
                assert time.monotonic() - start < 2
        finally:
            await state.aclose()


@pytest.mark.parametrize("backend", ["memory", "redis", "redis-down"])
def test_healthz_reports_the_state_backend(backend: str, request: pytest.FixtureRequest) -> None:
    config = GatewayConfig(embedded_model=False)
    config.local.preload = False
    if backend == "redis":
        config.state = StateSettings(url=request.getfixturevalue("redis_url"))
    elif backend == "redis-down":
        config.state = StateSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    server, _ = start_gateway(config)
    try:
        for _ in range(2):
            start = time.monotonic()
            health = httpx.get(server.url + "/healthz", timeout=10).json()
            assert time.monotonic() - start < 2
            assert health["status"] == "ok"
            assert health["state"] == {"backend": backend.removesuffix("-down"),
                                       "ok": backend != "redis-down"}
    finally:
        server.stop()


async def test_a_busy_pool_makes_callers_wait(redis_clean: str) -> None:
    state = open_state(StateSettings(url=redis_clean, max_connections=2,
                                     max_blocking_connections=2))
    try:
        k = key("pool", "log")
        start = time.monotonic()

        async def timed_get() -> float:
            await asyncio.sleep(0.05)  # every blocking connection is waiting by now
            began = time.monotonic()
            assert await state.get(key("pool", "v")) is None
            return time.monotonic() - began

        reads = [state.log_read(k, 0, block_s=0.3) for _ in range(5)]
        results = await asyncio.gather(*reads, timed_get())
        assert results[:5] == [[], [], [], [], []]
        assert time.monotonic() - start >= 0.85  # 3 rounds of 2 connections
        # Waiting readers have a pool of their own: a plain command is not starved.
        assert results[5] < 0.2
    finally:
        await state.aclose()


async def test_a_blocking_read_outlasts_the_socket_timeout(redis_clean: str) -> None:
    state = open_state(StateSettings(url=redis_clean, socket_timeout_s=0.2))
    try:
        k = key("slow", "log")
        start = time.monotonic()
        assert await state.log_read(k, 0, block_s=0.6) == []
        assert time.monotonic() - start >= 0.55

        async def later() -> None:
            await asyncio.sleep(0.4)
            await state.log_append(k, [(1, b"late")], **LOG)

        task = asyncio.create_task(later())
        assert await state.log_read(k, 0, block_s=2) == [(1, b"late")]
        await task
    finally:
        await state.aclose()


async def test_redis_and_memory_share_nothing_but_two_redis_clients_share(
        redis_clean: str) -> None:
    one = open_state(StateSettings(url=redis_clean))
    two = open_state(StateSettings(url=redis_clean))
    try:
        assert one.shared and not open_state(StateSettings()).shared
        await one.set(key("shared", "v"), b"seen", ttl_s=5)
        assert await two.get(key("shared", "v")) == b"seen"
        assert await one.acquire_lease(key("shared", "l"), "one", ttl_s=5)
        assert not await two.acquire_lease(key("shared", "l"), "two", ttl_s=5)
    finally:
        await one.aclose()
        await two.aclose()
