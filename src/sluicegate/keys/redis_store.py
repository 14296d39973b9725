"""Keys, the ledger and the limits on the Redis the gateway processes already share
(``state.backend: redis``), through one client with the state settings' pool and timeouts.

Layout (every key of one virtual key shares the hash tag ``{sg:k:<id>}``, so each Lua script
touches one Cluster slot):

- ``{sg:keys}:records`` hash id → record JSON; ``{sg:keys}:hashes`` hash secret-SHA-256 → id.
  No TTL: keys are configuration, kept until revoked (and then kept, marked revoked).
- ``{sg:ledger}:usage``: a Redis Stream, one entry per request, its ID the request's end time
  in ms, so ``since``/``until`` are an ``XRANGE``; entries older than
  ``limits.ledger_retention_days`` are trimmed (``MINID``) as new ones arrive.
- ``{sg:k:<id>}:win`` (sorted set: request → admitted at, ms), ``:tok`` (hash request →
  tokens), ``:tot`` (tokens in the window), ``:live`` (sorted set request → lease deadline),
  ``:held`` (hash request → micro-USD), ``:spent:<period>`` (micro-USD settled in the period,
  kept for the period plus a margin).

A failure to reach Redis raises ``StateUnavailable``, like the state layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import orjson
from redis import exceptions as rexc
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..config import StateSettings
from ..redact import redact_url
from ..state import StateUnavailable
from .limits import WINDOW_S, Ask, Decision, Limiter
from .model import KeyRecord
from .store import KeyStore, Ledger, UsageRecord

__all__ = ["RedisKeyStore", "RedisLedger", "RedisLimiter", "redis_client"]

_UNAVAILABLE = (rexc.ConnectionError, rexc.TimeoutError, rexc.ReadOnlyError,
                rexc.OutOfMemoryError, rexc.NoPermissionError, OSError)

RECORDS = "{sg:keys}:records"
HASHES = "{sg:keys}:hashes"
LEDGER = "{sg:ledger}:usage"


def redis_client(settings: StateSettings) -> Redis:
    assert settings.url is not None
    pool = BlockingConnectionPool.from_url(
        settings.url, max_connections=settings.max_connections,
        timeout=settings.pool_timeout_s, socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.connect_timeout_s, retry=Retry(NoBackoff(), 1),
        protocol=2)
    return Redis.from_pool(pool)


@contextlib.contextmanager
def unavailable(url: str, what: str) -> Iterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StateUnavailable(f"Redis at {redact_url(url)} is unavailable ({what}): "
                               f"{type(exc).__name__}") from exc


class RedisKeyStore(KeyStore):
    def __init__(self, client: Redis, url: str) -> None:
        self.r = client
        self.url = url

    async def put(self, record: KeyRecord) -> None:
        with unavailable(self.url, "key put"):
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.hset(RECORDS, record.id, record.model_dump_json())
                pipe.hset(HASHES, record.hash, record.id)
                await pipe.execute()

    async def get(self, key_id: str) -> KeyRecord | None:
        with unavailable(self.url, "key get"):
            raw = await self.r.hget(RECORDS, key_id)
        return None if raw is None else KeyRecord.model_validate_json(raw)

    async def by_hash(self, secret_hash: str) -> KeyRecord | None:
        with unavailable(self.url, "key lookup"):
            key_id = await self.r.hget(HASHES, secret_hash)
            if key_id is None:
                return None
            raw = await self.r.hget(RECORDS, key_id)
        return None if raw is None else KeyRecord.model_validate_json(raw)

    async def all(self) -> list[KeyRecord]:
        with unavailable(self.url, "key list"):
            raw = await self.r.hvals(RECORDS)
        return sorted((KeyRecord.model_validate_json(v) for v in raw),
                      key=lambda r: r.created_at)

    async def aclose(self) -> None:
        await self.r.aclose()


class RedisLedger(Ledger):
    def __init__(self, client: Redis, url: str, retention_days: int) -> None:
        self.r = client
        self.url = url
        self.retention_ms = retention_days * 86_400_000

    async def add(self, record: UsageRecord) -> None:
        with unavailable(self.url, "ledger add"):
            await self.append(self.r, record)

    def append(self, client: Any, record: UsageRecord) -> Any:
        """The ``XADD`` of ``record`` on ``client`` (the client, or a pipeline). The entry ID is
        Redis's clock at the append (≈ the request's end): instances whose clocks differ
        still append in order."""
        ms = int(record.time * 1000)
        return client.xadd(LEDGER, {"r": orjson.dumps(record.to_dict())},
                           minid=str(ms - self.retention_ms), approximate=True)

    async def query(self, *, key: str | None = None, model: str | None = None,
                    since: float | None = None,
                    until: float | None = None) -> list[UsageRecord]:
        low = "-" if since is None else str(int(since * 1000))
        high = "+" if until is None else f"({int(until * 1000)}"
        out: list[UsageRecord] = []
        with unavailable(self.url, "ledger query"):
            while True:
                rows: Any = await self.r.xrange(LEDGER, min=low, max=high, count=5000)
                for _id, fields in rows:
                    data = orjson.loads(fields[b"r"])
                    if (key is None or data["key_id"] == key) and (
                            model is None or data["model"] == model):
                        out.append(UsageRecord(**data))
                if len(rows) < 5000:
                    return out
                low = "(" + rows[-1][0].decode()


RESERVE = """
local win, tok, tot, live, held, spent = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local rid = ARGV[1]
local rpm, tpm, par = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local budget, tokens, cost = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local lease, period_ttl, window = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZRANGEBYSCORE', win, '-inf', now - window)
for _, m in ipairs(old) do
  local n = tonumber(redis.call('HGET', tok, m) or '0')
  redis.call('HDEL', tok, m)
  redis.call('DECRBY', tot, n)
end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', win, '-inf', now - window) end
local dead = redis.call('ZRANGEBYSCORE', live, '-inf', now)
for _, m in ipairs(dead) do redis.call('HDEL', held, m) end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', live, '-inf', now) end
local count = redis.call('ZCARD', win)
local total = tonumber(redis.call('GET', tot) or '0')
local first = redis.call('ZRANGE', win, 0, 0, 'WITHSCORES')
local reset = window
if #first > 0 then reset = tonumber(first[2]) + window - now end
local function answer(refused, retry)
  return {refused, retry, rpm - count, tpm - total, reset}
end
if rpm > 0 and count >= rpm then return answer('rpm', reset) end
if tpm > 0 and total + tokens > tpm then return answer('tpm', reset) end
if par > 0 and redis.call('ZCARD', live) >= par then return answer('parallel', 1000) end
if budget > 0 then
  local s = tonumber(redis.call('GET', spent) or '0')
  local h = 0
  for _, v in ipairs(redis.call('HVALS', held)) do h = h + tonumber(v) end
  if s + h + cost > budget then return answer('budget', 0) end
end
redis.call('ZADD', win, now, rid)
redis.call('HSET', tok, rid, tokens)
total = redis.call('INCRBY', tot, tokens)
redis.call('ZADD', live, now + lease, rid)
redis.call('HSET', held, rid, cost)
count = count + 1
if #first == 0 then reset = window end
for _, k in ipairs({win, tok, tot}) do redis.call('PEXPIRE', k, window + lease) end
for _, k in ipairs({live, held}) do redis.call('PEXPIRE', k, lease + window) end
return answer('', 0)
"""
"""KEYS: win, tok, tot, live, held, spent. ARGV: request id, rpm, tpm, parallel, budget (micro
USD), tokens, cost (micro USD), lease ms, period ttl ms, window ms. Returns {refused ('' when
admitted), retry ms, remaining requests, remaining tokens, reset ms}."""

SETTLE = """
local win, tok, tot, live, held, spent = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local rid, tokens, cost, period_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local before = redis.call('HGET', tok, rid)
if before then
  redis.call('HSET', tok, rid, tokens)
  redis.call('INCRBY', tot, tokens - tonumber(before))
end
redis.call('ZREM', live, rid)
redis.call('HDEL', held, rid)
if cost > 0 then
  redis.call('INCRBY', spent, cost)
  redis.call('PEXPIRE', spent, period_ttl)
end
return 0
"""
"""KEYS: as RESERVE. ARGV: request id, real tokens, real cost (micro USD), period ttl ms."""


def _keys(ask: Ask) -> list[str]:
    base = f"{{sg:k:{ask.key_id}}}:"
    return [base + "win", base + "tok", base + "tot", base + "live", base + "held",
            f"{base}spent:{ask.period}"]


class RedisLimiter(Limiter):
    def __init__(self, client: Redis, url: str) -> None:
        self.r = client
        self.url = url
        self._reserve = client.register_script(RESERVE)
        self._settle = client.register_script(SETTLE)

    async def reserve(self, ask: Ask) -> Decision:
        args: list[str | int] = [
                ask.request_id, ask.rpm, ask.tpm, ask.parallel, ask.budget_micro, ask.tokens,
                ask.cost_micro, int(ask.lease_s * 1000), int(ask.period_ttl_s * 1000),
                int(WINDOW_S * 1000)]
        with unavailable(self.url, "reserve"):
            reply = await self._reserve(keys=_keys(ask), args=args)
        refused, retry, left_req, left_tok, reset = reply
        name = refused.decode() if isinstance(refused, bytes) else str(refused)
        reset_s = int(reset) / 1000
        return Decision(name or None, int(retry) / 1000, int(left_req), int(left_tok),
                        reset_s, reset_s)

    async def settle(self, ask: Ask, tokens: int, cost_micro: int) -> None:
        with unavailable(self.url, "settle"):
            await self._settle(keys=_keys(ask), args=self._settle_args(ask, tokens, cost_micro))

    @staticmethod
    def _settle_args(ask: Ask, tokens: int, cost_micro: int) -> list[str | int]:
        return [ask.request_id, tokens, cost_micro, int(ask.period_ttl_s * 1000)]

    async def settle_and_record(self, ask: Ask, tokens: int, cost_micro: int,
                                entry: UsageRecord, ledger: Ledger) -> None:
        if not isinstance(ledger, RedisLedger):
            return await super().settle_and_record(ask, tokens, cost_micro, entry, ledger)
        keys = _keys(ask)
        args = self._settle_args(ask, tokens, cost_micro)
        with unavailable(self.url, "settle"):  # one round trip for both
            pipe = self.r.pipeline(transaction=False)  # raw EVALSHA: no SCRIPT EXISTS first
            pipe.evalsha(self._settle.sha, len(keys), *keys, *args)
            ledger.append(pipe, entry)
            try:
                await pipe.execute()
            except rexc.NoScriptError:  # a restarted Redis: the XADD went through
                await self.settle(ask, tokens, cost_micro)
        return None
