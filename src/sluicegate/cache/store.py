"""Where cache entries and their vectors live: in the process, or in the shared state (Redis).

``MemoryStore``: an LRU of entries (bytes) bounded by count and bytes, each with its TTL, and a
``VectorIndex`` of the semantic entries.

``SharedStore``: every gateway process sharing the state backend sees every entry. An entry is
one value with its TTL (``{sg:c:<key>}:e``); a semantic entry's vector also goes to one event log
(``{sg:cache}:vectors``, capped at ``max_entries``), from which each process keeps its own
``VectorIndex`` in step: a search that finds nothing good enough in process reads the log's new
entries first (one round trip) and searches again. Redis has no LRU of its own here: entries
leave by TTL (and by Redis's ``maxmemory`` policy where one is set); the vectors by the log's cap.
"""

from __future__ import annotations

import abc
import asyncio
import struct
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..state import StateBackend, key

if TYPE_CHECKING:
    from .embed import Vector
    from .index import VectorIndex

__all__ = ["CacheStore", "MemoryStore", "SharedStore"]

_HEAD = struct.Struct("<64s64sd")  # context, entry key, expiry (time.time() s)


class CacheStore(abc.ABC):
    """Entries by key (bytes with a TTL) and the vectors of the semantic ones."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._index: VectorIndex | None = None  # created on the first vector (imports numpy)

    def index(self) -> VectorIndex:
        if self._index is None:
            from .index import VectorIndex

            self._index = VectorIndex(self.max_entries)
        return self._index

    @abc.abstractmethod
    async def get(self, entry_key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def put(self, entry_key: str, value: bytes, ttl_s: float) -> None: ...

    @abc.abstractmethod
    async def add_vector(self, vector: Vector, context: str, entry_key: str,
                         ttl_s: float) -> None: ...

    async def nearest(self, vector: Vector, context: str, threshold: float
                      ) -> tuple[str, float] | None:
        """The most similar entry of ``context`` (key, cosine), or None."""
        return await self._search(vector, context)

    async def _search(self, vector: Vector, context: str) -> tuple[str, float] | None:
        # In a worker thread: ~0.3 ms at 10k entries, but tens of ms on a busy CPU, and the
        # event loop never waits for it.
        return await asyncio.to_thread(self.index().search, vector, context)

    def forget(self, entry_key: str) -> None:
        """A vector's entry is gone (expired or evicted): drop its rows."""
        if self._index is not None:
            self._index.discard(entry_key)


class MemoryStore(CacheStore):
    """One process's entries: LRU, at most ``max_entries`` and ``max_bytes``."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        super().__init__(max_entries)
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, entry_key: str) -> bytes | None:
        item = self._entries.get(entry_key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            self._drop(entry_key)
            return None
        self._entries.move_to_end(entry_key)
        return item[1]

    def _drop(self, entry_key: str) -> None:
        item = self._entries.pop(entry_key, None)
        if item is not None:
            self.bytes -= len(item[1])
            self.forget(entry_key)

    async def put(self, entry_key: str, value: bytes, ttl_s: float) -> None:
        if len(value) > self.max_bytes:
            return
        self._drop(entry_key)
        self._entries[entry_key] = (time.monotonic() + ttl_s, value)
        self.bytes += len(value)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def add_vector(self, vector: Vector, context: str, entry_key: str,
                         ttl_s: float) -> None:
        self.index().add(vector, context, entry_key, time.time() + ttl_s)


class SharedStore(CacheStore):
    """Entries in the shared state; vectors synced into the process (see the module doc)."""

    def __init__(self, state: StateBackend, max_entries: int, max_bytes: int,
                 max_ttl_s: float) -> None:
        super().__init__(max_entries)
        self.state = state
        self.max_bytes = max_bytes
        self.max_ttl_s = max_ttl_s
        self._log = key("cache", "vectors")
        self._seq = key("cache", "vectors:seq")
        self._synced = 0

    @staticmethod
    def _entry(entry_key: str) -> str:
        return key(f"c:{entry_key}", "e")

    async def get(self, entry_key: str) -> bytes | None:
        return await self.state.get(self._entry(entry_key))

    async def put(self, entry_key: str, value: bytes, ttl_s: float) -> None:
        if len(value) <= self.max_bytes:
            await self.state.set(self._entry(entry_key), value, ttl_s=ttl_s)

    async def add_vector(self, vector: Vector, context: str, entry_key: str,
                         ttl_s: float) -> None:
        expires = time.time() + ttl_s
        payload = _HEAD.pack(context.encode(), entry_key.encode(), expires) + vector.tobytes()
        log_ttl = max(ttl_s, self.max_ttl_s)
        for _ in range(5):  # another process may append a higher seq between incr and append
            seq = await self.state.incr(self._seq, ttl_s=log_ttl)
            try:
                await self.state.log_append(self._log, [(seq, payload)], ttl_s=log_ttl,
                                            max_entries=self.max_entries,
                                            max_bytes=self.max_entries * (len(payload) + 64))
            except ValueError:
                continue
            await self.state.expire(self._seq, log_ttl)
            return

    async def sync(self) -> int:
        """Read the vectors appended since the last sync; returns how many."""
        import numpy as np

        added = 0
        index = self.index()
        while True:
            entries = await self.state.log_read(self._log, self._synced, limit=512)
            if not entries and self._synced:
                # The log expired or was deleted and started again: read it from the start.
                info = await self.state.log_info(self._log)
                if info is None or info.last_seq < self._synced:
                    self._synced = 0
                    continue
            for seq, payload in entries:
                context, entry_key, expires = _HEAD.unpack_from(payload)
                vector = np.frombuffer(payload, dtype=np.float32, offset=_HEAD.size)
                index.add(vector, context.decode(), entry_key.decode(), expires)
                self._synced = seq
                added += 1
            if len(entries) < 512:
                return added

    async def nearest(self, vector: Vector, context: str, threshold: float
                      ) -> tuple[str, float] | None:
        found = await self._search(vector, context)
        if (found is None or found[1] < threshold) and await self.sync():
            found = await self._search(vector, context)
        return found
