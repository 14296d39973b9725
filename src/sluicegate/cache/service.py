"""The stream cache: look a request up, replay a hit as a stream, record a miss.

``StreamCache.serve`` is called by the gateway for every request when a cache is configured
(one check; no cache configured: never called). It returns None when the cache does not apply
to the request (mode ``off``, a resumable stream, a non-deterministic request without opt-in),
so the request is served as usual.

- A hit is served by a ``CachedRun``: a ``Run`` whose stream is the recorded one, so it is
  shaped, accumulated (non-stream requests), closed and accounted like any other: a fresh
  ``id`` and ``created``, the client's model name, the usage chunk when asked (the recorded
  counts, marked ``"cached": true``), one write per recorded batch, at once or with the recorded
  gaps (``pace``). The usage log line carries ``cached: true`` (a hit costs nothing upstream).
- A miss runs as usual with a ``Recorder``: the relay's recording loop keeps every shaped chunk
  (grouped as written, with the gap before each write, ms). Only a completed run is stored:
  every choice finished, no error frame, not cancelled.

Per request: ``cache: {"mode": "exact"|"semantic"|"off", "ttl": s, "threshold": x, "pace":
bool}`` in the body (never sent upstream), and ``Cache-Control: no-cache`` (do not read, do
store) / ``no-store`` (do not store). Response headers: ``X-Sluicegate-Cache: hit |
semantic-hit | miss`` and, on a semantic hit, ``X-Sluicegate-Cache-Similarity``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson
from aiohttp import web

from ..chunks import Chunk
from ..config import CacheSettings, GatewayConfig
from ..errors import InvalidRequestError
from ..failover import Opened
from ..metrics import Metrics
from ..policy import Policy
from ..providers.base import ChunkStream, Provider, Target
from ..relay import Chain, Run
from ..resume.log import auth_digest
from ..schemas import ChatRequest, CompletionRequest
from ..state import StateBackend, StateUnavailable
from ..watchdog import Watchdog
from .keys import RequestKeys, is_deterministic, request_keys
from .store import CacheStore, MemoryStore, SharedStore

if TYPE_CHECKING:
    from .embed import Embedder, Vector

__all__ = ["CachedRun", "Recorder", "StreamCache", "open_cache"]

log = logging.getLogger("sluicegate.cache")

MODES = ("exact", "semantic", "off")
MAX_TTL_S = 30 * 24 * 3600.0
ENTRY_VERSION = 1

Track = Callable[[Run], contextlib.AbstractContextManager[None]]


@dataclass(slots=True)
class Decision:
    """How the cache treats one request."""

    mode: str  # "exact" or "semantic"
    ttl_s: float
    threshold: float
    pace: bool
    read: bool  # look up (not ``Cache-Control: no-cache``)
    store: bool  # record (not ``no-store``)
    keys: RequestKeys


def _request_options(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The request's ``cache`` object, validated; raises ``InvalidRequestError``."""
    options = raw.get("cache")
    if options is None:
        return None
    if not isinstance(options, dict):
        raise InvalidRequestError("'cache' must be an object.", param="cache")
    mode = options.get("mode")
    if mode is not None and mode not in MODES:
        raise InvalidRequestError("'cache.mode' must be exact, semantic or off.",
                                  param="cache.mode")
    ttl = options.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)
                            or not 0 < ttl <= MAX_TTL_S):
        raise InvalidRequestError(f"'cache.ttl' must be a number of seconds in (0, {MAX_TTL_S:g}].",
                                  param="cache.ttl")
    threshold = options.get("threshold")
    if threshold is not None and (isinstance(threshold, bool)
                                  or not isinstance(threshold, int | float)
                                  or not 0 < threshold <= 1):
        raise InvalidRequestError("'cache.threshold' must be in (0, 1].", param="cache.threshold")
    if not isinstance(options.get("pace", False), bool):
        raise InvalidRequestError("'cache.pace' must be a boolean.", param="cache.pace")
    return options


class StreamCache:
    """The gateway's cache (see the module doc). ``store`` holds the entries; ``embedder`` is
    loaded on the first semantic request (or at start-up with ``cache.preload``)."""

    def __init__(self, config: GatewayConfig, store: CacheStore, metrics: Metrics | None,
                 embedder: Embedder | None = None) -> None:
        self.config = config
        self.settings: CacheSettings = config.cache
        self.store = store
        self.metrics = metrics
        self._embedder = embedder
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = {"hit": 0, "semantic-hit": 0, "miss": 0, "stored": 0}
        self._warned = False

    # -- set-up ----------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from .embed import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    def semantic_configured(self) -> bool:
        settings = self.settings
        return (settings.enabled and settings.mode == "semantic") or any(
            d.cache is not None and d.cache.mode == "semantic" for d in self.config.models)

    async def start(self) -> None:
        """Load the embedding model now when semantic caching is configured and preloaded."""
        if self.settings.preload and self.semantic_configured():
            await asyncio.to_thread(self.embedder.load)

    async def drain(self) -> None:
        """Wait for the stores under way (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- deciding --------------------------------------------------------------------------

    def decide(self, request: web.Request, req: ChatRequest | CompletionRequest,
               chain: Chain) -> Decision | None:
        raw = req.raw
        options = _request_options(raw)
        settings = self.settings
        primary = chain[0]
        deployment = primary.deployment if isinstance(primary, Target) else None
        own = deployment.cache if deployment is not None else None
        mode = settings.mode if settings.enabled else "off"
        ttl_s, threshold = settings.ttl_s, settings.threshold
        deterministic_only = settings.deterministic_only
        if own is not None:
            mode = own.mode or mode
            ttl_s = own.ttl_s or ttl_s
            threshold = own.threshold or threshold
            if own.deterministic_only is not None:
                deterministic_only = own.deterministic_only
        opted_in = False
        if options is not None:
            if options.get("mode") is not None:
                mode = options["mode"]
                opted_in = True
            ttl_s = float(options.get("ttl") or ttl_s)
            threshold = float(options.get("threshold") or threshold)
        if mode == "off":
            return None
        if deterministic_only and not opted_in and not is_deterministic(raw):
            return None
        directives = {d.strip().lower() for d in
                      request.headers.get("Cache-Control", "").split(",")}
        keys = request_keys(raw, chat=isinstance(req, ChatRequest),
                            scope=auth_digest(request.headers.get("Authorization")
                                              or request.headers.get("x-api-key")))
        return Decision(mode=mode, ttl_s=ttl_s, threshold=threshold,
                        pace=bool(options and options.get("pace")),
                        read="no-cache" not in directives, store="no-store" not in directives,
                        keys=keys)

    # -- serving ---------------------------------------------------------------------------

    async def serve(self, request: web.Request, req: ChatRequest | CompletionRequest,
                    policy: Policy, chain: Chain, *, stream: bool,
                    track: Track) -> web.StreamResponse | None:
        """Serve ``req`` from the cache, or run it recording; None: the cache does not apply."""
        if stream and policy.resumable:
            return None
        decision = self.decide(request, req, chain)
        if decision is None:
            return None
        vector: Vector | None = None
        semantic = decision.mode == "semantic" and decision.keys.context is not None
        if decision.read:
            try:
                found = await self._lookup(decision, semantic)
            except StateUnavailable as exc:
                log.warning("cache lookup skipped: %s", exc)
                found = None
            if isinstance(found, tuple):
                entry, similarity = found
                return await self._replay(request, req, policy, chain, entry, similarity,
                                          decision, stream=stream, track=track)
            vector = found
        self.stats["miss"] += 1
        run = Run(request, req, policy, chain, self.metrics)
        run.recorder = Recorder(self, decision, vector if semantic else None)
        with track(run):
            return await run.serve(stream=stream)

    async def _lookup(self, decision: Decision, semantic: bool
                      ) -> tuple[dict[str, Any], float | None] | Vector | None:
        """The entry and (semantic) similarity of a hit; on a semantic miss, the query's
        vector (reused to store the answer); else None."""
        keys = decision.keys
        blob = await self.store.get(keys.exact)
        if blob is not None:
            return orjson.loads(blob), None
        if not semantic:
            return None
        assert keys.text is not None and keys.context is not None
        try:
            vector = await asyncio.to_thread(self.embedder.embed, keys.text)
        except ImportError as exc:  # the cache extra is not installed: exact matches only
            if not self._warned:
                log.warning("semantic cache unavailable, exact matches only: %s", exc)
                self._warned = True
            return None
        nearest = await self.store.nearest(vector, keys.context, decision.threshold)
        if nearest is None or nearest[1] < decision.threshold:
            return vector
        blob = await self.store.get(nearest[0])
        if blob is None:
            self.store.forget(nearest[0])
            return vector
        return orjson.loads(blob), nearest[1]

    async def _replay(self, request: web.Request, req: ChatRequest | CompletionRequest,
                      policy: Policy, chain: Chain, entry: dict[str, Any],
                      similarity: float | None, decision: Decision, *, stream: bool,
                      track: Track) -> web.StreamResponse:
        label = "hit" if similarity is None else "semantic-hit"
        self.stats[label] += 1
        headers = {"X-Sluicegate-Cache": label}
        if similarity is not None:
            headers["X-Sluicegate-Cache-Similarity"] = f"{similarity:.4f}"
        run = CachedRun(request, req, policy, chain, self.metrics, entry=entry,
                        pace=decision.pace, cache_headers=headers)
        run.usage_extra["cached"] = True
        if similarity is not None:
            run.usage_extra["cache_similarity"] = round(similarity, 4)
        with track(run):
            return await run.serve(stream=stream)

    # -- storing ---------------------------------------------------------------------------

    def completed(self, recorder: Recorder, run: Run) -> None:
        """A recorded run ended: store it if it completed cleanly (in the background)."""
        shaper = run.shaper
        if (run.outcome != "completed" or not recorder.decision.store or not recorder.batches
                or shaper.unfinished or any(r == "error" for r in shaper.finished.values())):
            return
        target = run.target
        entry = {
            "v": ENTRY_VERSION,
            "kind": shaper.kind,
            "upstream_model": target.upstream_model if target is not None else "",
            "batches": recorder.batches,
            "usage": {k: v for k, v in shaper.final_usage().items() if k != "cached"},
            "stored_at": time.time(),
        }
        try:
            blob = orjson.dumps(entry)
        except TypeError:
            return
        task = asyncio.get_running_loop().create_task(self._store(recorder, blob))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _store(self, recorder: Recorder, blob: bytes) -> None:
        decision = recorder.decision
        keys = decision.keys
        try:
            await self.store.put(keys.exact, blob, decision.ttl_s)
            if decision.mode == "semantic" and keys.context is not None:
                vector = recorder.vector
                if vector is None:
                    assert keys.text is not None
                    vector = await asyncio.to_thread(self.embedder.embed, keys.text)
                await self.store.add_vector(vector, keys.context, keys.exact, decision.ttl_s)
            self.stats["stored"] += 1
        except StateUnavailable as exc:
            log.warning("cache store skipped: %s", exc)
        except ImportError:
            pass  # no embedding model: stored for exact matches only (warned at lookup)
        except Exception:
            log.exception("cache store failed")


class Recorder:
    """Records a miss's shaped chunks for ``StreamCache.completed`` (see ``Run.recorder``)."""

    __slots__ = ("_last", "batches", "cache", "decision", "headers", "vector")

    def __init__(self, cache: StreamCache, decision: Decision, vector: Vector | None) -> None:
        self.cache = cache
        self.decision = decision
        self.vector = vector
        self.headers = {"X-Sluicegate-Cache": "miss"}
        self.batches: list[tuple[float, list[Chunk]]] = []
        self._last: float | None = None

    def _gap_ms(self) -> float:
        now = time.perf_counter()
        gap = 0.0 if self._last is None else (now - self._last) * 1000
        self._last = now
        return round(gap, 1)

    async def relay(self, run: Run, opened: Opened, response: web.StreamResponse,
                    watch: Watchdog) -> None:
        """``Run._relay``'s streaming loop, keeping what it writes (the same writes)."""
        shape = run.shaper.shape
        dumps = orjson.dumps
        write = response.write
        batches = self.batches
        for batch in opened.pending:
            shaped = [s for c in batch if (s := shape(c)) is not None]
            if shaped:
                batches.append((self._gap_ms(), shaped))
                await write(b"".join([b"data: " + dumps(s) + b"\n\n" for s in shaped]))
        if opened.ended:
            return
        async for batch in opened.iterator:
            watch.reads += 1
            shaped = [s for c in batch if (s := shape(c)) is not None]
            if shaped:
                batches.append((self._gap_ms(), shaped))
                watch.writing = True
                await write(b"".join([b"data: " + dumps(s) + b"\n\n" for s in shaped]))
                watch.writing = False

    def tee(self, add: Callable[[Chunk], None]) -> Callable[[Chunk], None]:
        """``add`` (the accumulator's), also recording each chunk (non-stream requests)."""
        def both(chunk: Chunk) -> None:
            self.batches.append((self._gap_ms(), [chunk]))
            add(chunk)
        return both

    def finish(self, run: Run) -> None:
        self.cache.completed(self, run)


class _CacheProvider:
    name = "cache"
    dialect = None


class ReplayStream(ChunkStream):
    """The recorded batches (fresh dicts each time), then the usage: ``"cached": true``."""

    usage_source = "upstream"

    def __init__(self, entry: dict[str, Any], pace: bool) -> None:
        self.entry = entry
        self.pace = pace

    def _iterate(self) -> AsyncIterator[list[Chunk]]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[list[Chunk]]:
        first = True
        for gap_ms, batch in self.entry["batches"]:
            if self.pace and not first and gap_ms > 0:
                await asyncio.sleep(gap_ms / 1000)
            first = False
            yield batch
        usage = dict(self.entry.get("usage") or {})
        usage["cached"] = True
        yield [{"choices": [], "usage": usage}]


class CachedRun(Run):
    """A ``Run`` whose stream is a cache entry (see the module doc)."""

    def __init__(self, request: web.Request, req: ChatRequest | CompletionRequest,
                 policy: Policy, chain: Chain, metrics: Metrics | None, *,
                 entry: dict[str, Any], pace: bool, cache_headers: dict[str, str]) -> None:
        super().__init__(request, req, policy, chain, metrics)
        self.entry = entry
        self.pace = pace
        self.cache_headers = cache_headers

    async def _open(self, chain: Chain, req: ChatRequest | CompletionRequest) -> Opened:
        primary = chain[0]
        stream = ReplayStream(self.entry, self.pace)
        target = Target(requested=req.model,
                        upstream_model=str(self.entry.get("upstream_model") or req.model),
                        provider=cast(Provider, _CacheProvider()),
                        deployment=primary.deployment if isinstance(primary, Target) else None)
        self.streams.append(stream)
        self.target = target
        return Opened(stream=stream, iterator=aiter(stream), pending=[], target=target,
                      attempts=0)

    def _route_headers(self) -> dict[str, str]:
        headers = super()._route_headers()
        headers.update(self.cache_headers)
        return headers


def open_cache(config: GatewayConfig, state: StateBackend, metrics: Metrics | None
               ) -> StreamCache | None:
    """The gateway's cache, or None when no cache is configured (the default): enabled
    server-wide (``cache.enabled``) or by a deployment's ``cache.mode``. Entries go to the
    shared state when it is shared (Redis), else to the process's memory."""
    settings = config.cache
    if not settings.enabled and not any(
            d.cache is not None and d.cache.mode not in (None, "off") for d in config.models):
        return None
    store: CacheStore
    if state.shared:
        store = SharedStore(state, settings.max_entries, settings.max_bytes, settings.ttl_s)
    else:
        store = MemoryStore(settings.max_entries, settings.max_bytes)
    return StreamCache(config, store, metrics)
