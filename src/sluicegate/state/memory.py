"""``MemoryBackend``: the state layer in one process, with no set-up (``shared = False``).

It behaves as the Redis backend does: TTLs (checked on every access; expired keys are also swept
from a heap of deadlines on every write, so memory does not grow with keys nobody reads again),
the same lease and log rules, and the same caps. It is not thread-safe: use it from one event
loop.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from .base import LogInfo, StateBackend, check_caps, check_entries, ttl_ms

__all__ = ["MemoryBackend"]

_COMPACT_AT = 1024
"""A log drops the slots of trimmed entries once this many (and over half) have accumulated."""


@dataclass(slots=True)
class _Log:
    seqs: list[int] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    head: int = 0  # the first live entry; those before it are trimmed
    last: int = 0
    trimmed: int = 0
    nbytes: int = 0

    def __len__(self) -> int:
        return len(self.seqs) - self.head

    def trim(self, max_entries: int, max_bytes: int) -> None:
        while len(self) and (len(self) > max_entries or self.nbytes > max_bytes):
            self.trimmed = self.seqs[self.head]
            self.nbytes -= len(self.payloads[self.head])
            self.payloads[self.head] = b""
            self.head += 1
        if self.head >= _COMPACT_AT and self.head * 2 >= len(self.seqs):
            del self.seqs[:self.head], self.payloads[:self.head]
            self.head = 0


@dataclass(slots=True)
class _Item:
    value: bytes | _Log
    expires_at: float  # time.monotonic()


@dataclass(slots=True)
class _Waiters:
    """Readers blocked on one log: ``event`` is set (and replaced) by each append."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0


class MemoryBackend(StateBackend):
    """In-process state; see ``StateBackend`` for the contract."""

    name = "memory"
    shared = False

    def __init__(self) -> None:
        self._data: dict[str, _Item] = {}
        self._deadlines: list[tuple[float, str]] = []  # heap; stale entries are skipped
        self._waiters: dict[str, _Waiters] = {}

    # -- storage ---------------------------------------------------------------------------

    def _live(self, key: str) -> _Item | None:
        item = self._data.get(key)
        if item is not None and item.expires_at <= time.monotonic():
            del self._data[key]
            return None
        return item

    def _value(self, key: str) -> bytes | None:
        item = self._live(key)
        if item is None:
            return None
        if isinstance(item.value, _Log):
            raise ValueError(f"state key {key!r} holds a log, not a value")
        return item.value

    def _log(self, key: str) -> _Log | None:
        item = self._live(key)
        if item is None:
            return None
        if not isinstance(item.value, _Log):
            raise ValueError(f"state key {key!r} holds a value, not a log")
        return item.value

    def _put(self, key: str, value: bytes | _Log, ttl_s: float) -> None:
        expires_at = time.monotonic() + ttl_ms(ttl_s) / 1000
        self._data[key] = _Item(value, expires_at)
        heapq.heappush(self._deadlines, (expires_at, key))
        self._sweep()

    def _sweep(self) -> None:
        """Drop keys whose deadline passed: O(log n) per expired key, amortized."""
        now = time.monotonic()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            item = self._data.get(key)
            if item is not None and item.expires_at <= now:
                del self._data[key]
        if len(heap) > 2 * len(self._data) + 1024:  # refreshed TTLs left stale deadlines
            self._deadlines = [(item.expires_at, k) for k, item in self._data.items()]
            heapq.heapify(self._deadlines)

    # -- StateBackend ----------------------------------------------------------------------

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._data.clear()
        self._deadlines.clear()

    async def get(self, key: str) -> bytes | None:
        return self._value(key)

    async def set(self, key: str, value: bytes, *, ttl_s: float,
                  only_if_absent: bool = False) -> bool:
        ttl_ms(ttl_s)
        if only_if_absent and self._live(key) is not None:
            return False
        self._put(key, bytes(value), ttl_s)
        return True

    async def delete(self, *keys: str) -> int:
        deleted = 0
        for k in keys:
            if self._live(k) is not None:
                del self._data[k]
                deleted += 1
        return deleted

    async def expire(self, key: str, ttl_s: float) -> bool:
        item = self._live(key)
        if item is None:
            ttl_ms(ttl_s)
            return False
        self._put(key, item.value, ttl_s)
        return True

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float) -> int:
        ttl_ms(ttl_s)
        item = self._live(key)
        current = self._value(key)
        try:
            value = int(current or b"0") + amount
        except ValueError:
            raise ValueError(f"state key {key!r} does not hold an integer") from None
        if item is None:
            self._put(key, str(value).encode(), ttl_s)
        else:
            item.value = str(value).encode()
        return value

    async def acquire_lease(self, key: str, owner: str, *, ttl_s: float) -> bool:
        ttl_ms(ttl_s)
        holder = self._value(key)
        if holder is not None and holder != owner.encode():
            return False
        self._put(key, owner.encode(), ttl_s)
        return True

    async def renew_lease(self, key: str, owner: str, *, ttl_s: float) -> bool:
        ttl_ms(ttl_s)
        if self._value(key) != owner.encode():
            return False
        self._put(key, owner.encode(), ttl_s)
        return True

    async def release_lease(self, key: str, owner: str) -> bool:
        if self._value(key) != owner.encode():
            return False
        del self._data[key]
        return True

    async def lease_owner(self, key: str) -> str | None:
        holder = self._value(key)
        return None if holder is None else holder.decode()

    async def log_append(self, key: str, entries: Sequence[tuple[int, bytes]], *,
                         ttl_s: float, max_entries: int, max_bytes: int) -> None:
        ttl_ms(ttl_s)
        check_caps(max_entries, max_bytes)
        log = self._log(key)
        check_entries(entries, log.last if log is not None else 0)
        if log is None:
            if not entries:
                return
            log = _Log()
        for seq, payload in entries:
            log.seqs.append(seq)
            log.payloads.append(bytes(payload))
            log.nbytes += len(payload)
        if entries:
            log.last = entries[-1][0]
        log.trim(max_entries, max_bytes)
        self._put(key, log, ttl_s)
        waiters = self._waiters.get(key)
        if waiters is not None and entries:
            waiters.event.set()
            waiters.event = asyncio.Event()

    def _read(self, key: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        log = self._log(key)
        if log is None:
            return []
        start = bisect_right(log.seqs, after_seq, lo=log.head)
        end = min(start + limit, len(log.seqs))
        return list(zip(log.seqs[start:end], log.payloads[start:end], strict=True))

    async def log_read(self, key: str, after_seq: int, *, limit: int = 512,
                       block_s: float | None = None) -> list[tuple[int, bytes]]:
        if limit < 1:
            raise ValueError(f"log_read limit must be at least 1, got {limit}")
        entries = self._read(key, after_seq, limit)
        if entries or block_s is None or block_s <= 0:
            return entries
        deadline = asyncio.get_running_loop().time() + block_s
        waiters = self._waiters.setdefault(key, _Waiters())
        waiters.count += 1
        try:
            while not entries:
                try:
                    async with asyncio.timeout_at(deadline):
                        await waiters.event.wait()
                except TimeoutError:
                    return []
                entries = self._read(key, after_seq, limit)
            return entries
        finally:
            waiters.count -= 1
            if not waiters.count and self._waiters.get(key) is waiters:
                del self._waiters[key]

    async def log_info(self, key: str) -> LogInfo | None:
        log = self._log(key)
        if log is None:
            return None
        return LogInfo(last_seq=log.last, trimmed_through=log.trimmed, entries=len(log),
                       bytes=log.nbytes)

    async def log_expire(self, key: str, ttl_s: float) -> None:
        ttl_ms(ttl_s)
        if self._log(key) is not None:
            await self.expire(key, ttl_s)
