"""``StreamingCache``: an in-process cache of whole streams, exact and semantic, for the SDK.

::

    cache = StreamingCache(similarity_threshold=0.95, max_cache_size=100)

    @stream_llm(model="mock/faq", temperature=0, cache=cache)
    async def ask(question: str) -> str:
        return question

    async for text in ask("How do I reset my password?"): ...   # from the gateway, recorded
    async for text in ask("How can I reset my password?"): ...  # replayed from the cache

Keys and similarity are the gateway's own (``sluicegate.cache``): the same normalized request
(model, messages, tools, sampling fields; not transport fields), the same embedding model
(all-MiniLM-L6-v2 int8 on CPU, loaded on the first semantic lookup) and the same meaning of the
threshold. A semantic hit needs cosine ≥ ``similarity_threshold`` on the last user message AND
everything else equal (model, system prompt, earlier turns, tools, sampling). Only a stream that
was read to its end is stored; LRU beyond ``max_cache_size`` entries.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..cache.keys import RequestKeys, request_keys

if TYPE_CHECKING:
    from ..cache.embed import Embedder, Vector

__all__ = ["CacheHit", "StreamingCache"]


@dataclass(frozen=True, slots=True)
class CacheHit:
    """What a lookup found: the recorded items, and the similarity of a semantic hit (None for
    an exact one)."""

    items: list[Any]
    similarity: float | None


@dataclass(slots=True)
class _Entry:
    items: list[Any]
    context: str | None
    vector: Vector | None
    expires_at: float | None


class StreamingCache:
    """Thread-safe; ``semantic=False`` keeps exact matches only (no model is loaded)."""

    def __init__(self, similarity_threshold: float = 0.95, max_cache_size: int = 100, *,
                 ttl_s: float | None = None, semantic: bool = True,
                 embedder: Embedder | None = None) -> None:
        if not 0 < similarity_threshold <= 1:
            raise ValueError("similarity_threshold must be in (0, 1]")
        if max_cache_size < 1:
            raise ValueError("max_cache_size must be at least 1")
        self.similarity_threshold = similarity_threshold
        self.max_cache_size = max_cache_size
        self.ttl_s = ttl_s
        self.semantic = semantic
        self._embedder = embedder
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.semantic_hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from ..cache.embed import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    @staticmethod
    def keys(request: Mapping[str, Any]) -> RequestKeys:
        """The request's keys (a chat request body: ``model``, ``messages``, other fields)."""
        return request_keys(dict(request), chat=True, scope="client")

    def _embed(self, keys: RequestKeys) -> Vector | None:
        if not self.semantic or keys.context is None or keys.text is None:
            return None
        return self.embedder.embed(keys.text)

    def _find(self, keys: RequestKeys, vector: Vector | None) -> CacheHit | None:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(keys.exact)
            if entry is not None and (entry.expires_at is None or entry.expires_at > now):
                self._entries.move_to_end(keys.exact)
                self.hits += 1
                return CacheHit(list(entry.items), None)
            best: tuple[float, str] | None = None
            if vector is not None:
                for key, candidate in self._entries.items():
                    if (candidate.context != keys.context or candidate.vector is None
                            or (candidate.expires_at is not None
                                and candidate.expires_at <= now)):
                        continue
                    score = float(candidate.vector @ vector)
                    if best is None or score > best[0]:
                        best = (score, key)
            if best is not None and best[0] >= self.similarity_threshold:
                self._entries.move_to_end(best[1])
                self.semantic_hits += 1
                return CacheHit(list(self._entries[best[1]].items), best[0])
            self.misses += 1
            return None

    def _exact_only(self, keys: RequestKeys) -> bool:
        with self._lock:
            return keys.exact in self._entries

    def lookup(self, request: Mapping[str, Any]) -> CacheHit | None:
        """The cached stream for ``request``, or None (blocking: may embed, ~10 ms)."""
        keys = self.keys(request)
        vector = None if self._exact_only(keys) else self._embed(keys)
        return self._find(keys, vector)

    async def alookup(self, request: Mapping[str, Any]) -> CacheHit | None:
        """``lookup`` with the embedding in a worker thread."""
        keys = self.keys(request)
        vector = None
        if not self._exact_only(keys):
            vector = await asyncio.to_thread(self._embed, keys)
        return self._find(keys, vector)

    def store(self, request: Mapping[str, Any], items: list[Any]) -> None:
        """Record a stream read to its end (blocking: may embed)."""
        keys = self.keys(request)
        self._put(keys, items, self._embed(keys))

    async def astore(self, request: Mapping[str, Any], items: list[Any]) -> None:
        keys = self.keys(request)
        self._put(keys, items, await asyncio.to_thread(self._embed, keys))

    def _put(self, keys: RequestKeys, items: list[Any], vector: Vector | None) -> None:
        expires = None if self.ttl_s is None else time.monotonic() + self.ttl_s
        with self._lock:
            self._entries[keys.exact] = _Entry(list(items), keys.context, vector, expires)
            self._entries.move_to_end(keys.exact)
            while len(self._entries) > self.max_cache_size:
                self._entries.popitem(last=False)
