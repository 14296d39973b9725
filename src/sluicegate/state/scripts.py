"""The Lua scripts of ``RedisBackend`` (each runs atomically; every key of a call shares one hash
tag, so they are valid on Redis Cluster too). TTLs arrive in milliseconds.

Sequence numbers travel as strings and are compared with ``tonumber`` (exact below 2**53, which
``check_entries`` enforces); they are written back as the strings received, because Lua prints
large numbers in exponent notation.
"""

from __future__ import annotations

__all__ = ["SOURCES"]

INCR = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""
"""KEYS: counter. ARGV: amount, ttl_ms. A key without a TTL (just created) gets one."""

LEASE_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
"""KEYS: lease. ARGV: owner, ttl_ms. 1 if taken (or already the owner's), else 0."""

LEASE_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
"""KEYS: lease. ARGV: owner, ttl_ms. 1 if the owner holds it (TTL reset), else 0."""

LEASE_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
"""
"""KEYS: lease. ARGV: owner. 1 if the owner held it (now free), else 0."""

LOG_APPEND = """
local stream, meta = KEYS[1], KEYS[2]
local ttl, max_entries, max_bytes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local last, trimmed, nbytes = '0', '0', 0
if redis.call('EXISTS', stream) == 1 then
  local m = redis.call('HMGET', meta, 'last', 'trimmed', 'bytes')
  last, trimmed, nbytes = m[1] or '0', m[2] or '0', tonumber(m[3]) or 0
elseif #ARGV < 4 then
  return 0
end
local previous = tonumber(last)
for i = 4, #ARGV, 2 do
  if tonumber(ARGV[i]) <= previous then
    return redis.error_reply('ERR log seq ' .. ARGV[i] .. ' does not increase (last is '
                             .. last .. ')')
  end
  previous, last = tonumber(ARGV[i]), ARGV[i]
end
for i = 4, #ARGV, 2 do
  redis.call('XADD', stream, ARGV[i] .. '-0', 'd', ARGV[i + 1])
  nbytes = nbytes + #ARGV[i + 1]
end
local n = redis.call('XLEN', stream)
local cut = nil
while n > 0 and (n > max_entries or nbytes > max_bytes) do
  local start = cut and ('(' .. cut .. '-0') or '-'
  local batch = redis.call('XRANGE', stream, start, '+', 'COUNT', 64)
  if #batch == 0 then
    break
  end
  for _, entry in ipairs(batch) do
    if n == 0 or (n <= max_entries and nbytes <= max_bytes) then
      break
    end
    cut = string.match(entry[1], '^(%d+)')
    nbytes = nbytes - #entry[2][2]
    n = n - 1
  end
end
if cut then
  -- MINID <cut>-1 drops every entry up to and including <cut>-0 (all IDs end in -0).
  redis.call('XTRIM', stream, 'MINID', cut .. '-1')
  trimmed = cut
end
redis.call('HSET', meta, 'last', last, 'trimmed', trimmed,
           'bytes', string.format('%d', nbytes))
redis.call('PEXPIRE', stream, ttl)
redis.call('PEXPIRE', meta, ttl)
return n
"""
"""KEYS: stream, meta. ARGV: ttl_ms, max_entries, max_bytes, then seq, payload pairs. Appends
(all or nothing), trims the oldest entries while over a cap, refreshes both TTLs; returns the
entries left. A meta hash without its stream (the log was deleted) is stale and starts over."""

LOG_INFO = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local m = redis.call('HMGET', KEYS[2], 'last', 'trimmed', 'bytes')
return {m[1] or '0', m[2] or '0', m[3] or '0', redis.call('XLEN', KEYS[1])}
"""
"""KEYS: stream, meta. {last, trimmed, bytes, entries}, or nil when the log does not exist."""

LOG_EXPIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return 0
"""
"""KEYS: stream, meta. ARGV: ttl_ms."""

SOURCES: dict[str, str] = {
    "incr": INCR,
    "lease_acquire": LEASE_ACQUIRE,
    "lease_renew": LEASE_RENEW,
    "lease_release": LEASE_RELEASE,
    "log_append": LOG_APPEND,
    "log_info": LOG_INFO,
    "log_expire": LOG_EXPIRE,
}
"""Script name → source, registered once per client (``EVALSHA``, loaded on first use)."""
