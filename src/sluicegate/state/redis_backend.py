"""``RedisBackend``: the state layer on Redis (``shared = True``), via ``redis.asyncio`` + hiredis.

Connections come from a ``BlockingConnectionPool``: at most ``max_connections``, and a caller
that finds them all busy waits up to ``pool_timeout_s`` for one (the default pool would raise at
once). Each connection has ``connect_timeout_s`` and ``socket_timeout_s``, and a failed command
is retried once at once, so a Redis that is down or silent gives ``StateUnavailable`` within
about twice those timeouts, never a hang. Nothing connects before the first command.

Layout: values, counters and leases are plain strings (``SET ... PX``, ``INCRBY``); leases are
changed by Lua scripts that compare the owner first. A log is a stream whose entry IDs are
``<seq>-0`` with one field ``d`` (the payload), and a companion hash ``<key>:meta`` (fields
``last``, ``trimmed``, ``bytes``); one Lua script appends, trims and sets both TTLs. A blocking
``log_read`` is one ``XREAD BLOCK`` on a pooled connection, which it holds while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from redis import exceptions as rexc
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..config import StateSettings
from ..redact import redact_url, register_value
from . import scripts
from .base import LogInfo, StateBackend, StateUnavailable, check_caps, check_entries, ttl_ms

__all__ = ["RedisBackend"]

_UNAVAILABLE = (rexc.ConnectionError, rexc.TimeoutError, rexc.ReadOnlyError,
                rexc.OutOfMemoryError, rexc.NoPermissionError, OSError)
"""Unreachable, silent (``OSError`` covers ``TimeoutError``), no free connection, or refusing
the gateway's commands (a replica, out of memory, an ACL): all ``StateUnavailable``."""


class RedisBackend(StateBackend):
    """Shared state on one Redis server; see ``StateBackend`` for the contract.

    Raises ``ValueError`` at construction if ``settings.url`` is missing or not a Redis URL.
    """

    name = "redis"
    shared = True

    def __init__(self, settings: StateSettings) -> None:
        if not settings.url:
            raise ValueError("the redis state backend needs state.url")
        self.url = redact_url(settings.url)
        password = urlsplit(settings.url).password
        if password:  # never in an upstream's echo or a log line
            register_value(password)
            register_value(unquote(password))
        self._socket_timeout_s = settings.socket_timeout_s
        self._pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
            settings.url,
            max_connections=settings.max_connections,
            timeout=settings.pool_timeout_s,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.connect_timeout_s,
            retry=Retry(NoBackoff(), 1),
            protocol=2,
        )
        # Blocking reads hold a connection for the whole wait: a pool of their own, so that
        # many waiting readers never starve the commands of live streams.
        self._block_pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
            settings.url,
            max_connections=settings.max_blocking_connections,
            timeout=settings.pool_timeout_s,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.connect_timeout_s,
            protocol=2,
        )
        self._client: Redis = Redis.from_pool(self._pool)
        self._scripts = {name: self._client.register_script(source)
                         for name, source in scripts.SOURCES.items()}

    @contextlib.contextmanager
    def _unavailable(self, what: str) -> Iterator[None]:
        try:
            yield
        except _UNAVAILABLE as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise StateUnavailable(f"Redis at {self.url} is unavailable ({what}): "
                                   f"{detail}") from exc

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script of ``scripts``. An error it replies (the log's seq check, a key of
        another type, a value that is not an integer) raises ``ValueError``."""
        try:
            with self._unavailable(script):
                return await self._scripts[script](keys=list(keys), args=list(args))
        except rexc.ResponseError as exc:
            raise ValueError(f"{script} on {keys[0]!r}: {exc}") from None

    # -- StateBackend ----------------------------------------------------------------------

    async def ping(self) -> None:
        with self._unavailable("PING"):
            await self._client.ping()

    async def aclose(self) -> None:
        try:
            await self._client.aclose()
        finally:
            await self._block_pool.aclose()

    async def get(self, key: str) -> bytes | None:
        with self._unavailable("GET"):
            value = await self._client.get(key)
        return cast("bytes | None", value)  # decode_responses is off

    async def set(self, key: str, value: bytes, *, ttl_s: float,
                  only_if_absent: bool = False) -> bool:
        ms = ttl_ms(ttl_s)
        with self._unavailable("SET"):
            done = await self._client.set(key, value, px=ms, nx=only_if_absent)
        return bool(done)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        with self._unavailable("DEL"):
            return int(await self._client.delete(*keys))

    async def expire(self, key: str, ttl_s: float) -> bool:
        ms = ttl_ms(ttl_s)
        with self._unavailable("PEXPIRE"):
            return bool(await self._client.pexpire(key, ms))

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float) -> int:
        return int(await self._run("incr", [key], [amount, ttl_ms(ttl_s)]))

    async def acquire_lease(self, key: str, owner: str, *, ttl_s: float) -> bool:
        return bool(await self._run("lease_acquire", [key], [owner, ttl_ms(ttl_s)]))

    async def renew_lease(self, key: str, owner: str, *, ttl_s: float) -> bool:
        return bool(await self._run("lease_renew", [key], [owner, ttl_ms(ttl_s)]))

    async def release_lease(self, key: str, owner: str) -> bool:
        return bool(await self._run("lease_release", [key], [owner]))

    async def lease_owner(self, key: str) -> str | None:
        holder = await self.get(key)
        return None if holder is None else holder.decode()

    async def log_append(self, key: str, entries: Sequence[tuple[int, bytes]], *,
                         ttl_s: float, max_entries: int, max_bytes: int) -> None:
        ms = ttl_ms(ttl_s)
        check_caps(max_entries, max_bytes)
        check_entries(entries)  # positive and increasing here; above last_seq in the script
        args: list[Any] = [ms, max_entries, max_bytes]
        for seq, payload in entries:
            args += [seq, payload]
        await self._run("log_append", [key, f"{key}:meta"], args)

    async def log_read(self, key: str, after_seq: int, *, limit: int = 512,
                       block_s: float | None = None) -> list[tuple[int, bytes]]:
        if limit < 1:
            raise ValueError(f"log_read limit must be at least 1, got {limit}")
        after = max(0, after_seq)
        if block_s is None or block_s <= 0:
            with self._unavailable("XRANGE"):
                rows: Any = await self._client.xrange(key, min=f"({after}-0", max="+",
                                                      count=limit)
            return [(_seq(entry_id), fields[b"d"]) for entry_id, fields in rows]
        with self._unavailable("XREAD BLOCK"):
            reply = await self._xread_block(key, after, limit, block_s)
        if not reply:
            return []
        return [(_seq(entry_id), fields[1]) for entry_id, fields in reply[0][1]]

    async def _xread_block(self, key: str, after: int, limit: int, block_s: float) -> Any:
        """``XREAD COUNT limit BLOCK ms STREAMS key <after>-0`` on a connection of its own
        from the blocking reads' pool (the client's socket timeout would cut a longer wait
        short); the raw reply. Raises ``TimeoutError`` if Redis has not answered
        ``socket_timeout_s`` after the block ends. A connection left with a reply in flight is
        closed, never reused."""
        conn = await self._block_pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_command("XREAD", "COUNT", limit, "BLOCK",
                                    max(1, round(block_s * 1000)), "STREAMS", key, f"{after}-0")
            wait_s = block_s + self._socket_timeout_s
            async with asyncio.timeout(wait_s):  # fires first: read_response's own returns None
                return await conn.read_response(timeout=wait_s + 1)
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await self._block_pool.release(conn)

    async def log_info(self, key: str) -> LogInfo | None:
        reply = await self._run("log_info", [key, f"{key}:meta"], [])
        if reply is None:
            return None
        last, trimmed, nbytes, entries = (int(v) for v in reply)
        return LogInfo(last_seq=last, trimmed_through=trimmed, entries=entries, bytes=nbytes)

    async def log_expire(self, key: str, ttl_s: float) -> None:
        await self._run("log_expire", [key, f"{key}:meta"], [ttl_ms(ttl_s)])


def _seq(entry_id: bytes) -> int:
    return int(entry_id.partition(b"-")[0])
