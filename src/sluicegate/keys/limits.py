"""Per-key rate limits and budgets: reserve at admission, settle at the end.

Windows are sliding: a key's window holds the requests admitted in the last 60 s, each with
the tokens charged to it. ``reserve`` drops what has left the window, then admits the request
only if, counting every reservation still in it,

- requests < ``rpm``,
- tokens + this request's worst case (prompt + ``max_tokens``) <= ``tpm``,
- live requests < ``max_parallel``,
- spent + held + this request's worst-case cost <= the budget (micro-USD, for the period),

and records all four at once. ``settle`` replaces the worst case by the real usage (if the
request is still in the window), frees the live slot and the held cost, and adds the real
cost to the period's spend. A live slot (and its held cost) is leased for ``lease_s``: an
instance that dies mid-request frees them when the lease runs out.

``MemoryLimiter`` does this in the process (atomic under the event loop); ``RedisLimiter``
(``redis_store``) in one Lua script per reserve and per settle, using Redis's clock.
"""

from __future__ import annotations

import abc
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .store import Ledger, UsageRecord

__all__ = ["WINDOW_S", "Ask", "Decision", "Limiter", "MemoryLimiter", "duration",
           "limit_headers"]

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Ask:
    """One request's reservation. Limits of 0 mean none; cost in micro-USD."""

    key_id: str
    request_id: str
    rpm: int
    tpm: int
    parallel: int
    budget_micro: int
    period: str  # the budget period's id (``total``, ``2026-12-01``, ``2026-12``)
    period_ttl_s: float  # how long the period's spend is kept
    period_start: float  # epoch s, to seed the spend from the ledger
    tokens: int
    cost_micro: int
    lease_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    """``refused``: None (admitted), ``rpm``, ``tpm``, ``parallel`` or ``budget``."""

    refused: str | None
    retry_after_s: float
    remaining_requests: int
    remaining_tokens: int
    reset_requests_s: float
    reset_tokens_s: float


class Limiter(abc.ABC):
    @abc.abstractmethod
    async def reserve(self, ask: Ask) -> Decision:
        """Admit and record ``ask``, or refuse it (nothing recorded). May raise
        ``StateUnavailable``."""

    @abc.abstractmethod
    async def settle(self, ask: Ask, tokens: int, cost_micro: int) -> None:
        """Replace ``ask``'s worst case by the real ``tokens`` and cost."""

    async def settle_and_record(self, ask: Ask, tokens: int, cost_micro: int,
                                entry: UsageRecord, ledger: Ledger) -> None:
        """``settle``, then ``entry`` to ``ledger`` (a backend may do both in one round
        trip)."""
        await self.settle(ask, tokens, cost_micro)
        await ledger.add(entry)

    async def aclose(self) -> None:  # noqa: B027 - optional
        pass


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``1h2m3s``, ``250ms``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def limit_headers(ask: Ask, decision: Decision) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers (a limit of 0, meaning none, is left out)."""
    headers: dict[str, str] = {}
    if ask.rpm:
        headers["x-ratelimit-limit-requests"] = str(ask.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, decision.remaining_requests))
        headers["x-ratelimit-reset-requests"] = duration(decision.reset_requests_s)
    if ask.tpm:
        headers["x-ratelimit-limit-tokens"] = str(ask.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, decision.remaining_tokens))
        headers["x-ratelimit-reset-tokens"] = duration(decision.reset_tokens_s)
    return headers


@dataclass
class _Window:
    admitted: deque[tuple[float, str]] = field(default_factory=deque)  # (time, request id)
    tokens: dict[str, int] = field(default_factory=dict)
    total: int = 0
    live: dict[str, float] = field(default_factory=dict)  # request id → lease deadline
    held: dict[str, int] = field(default_factory=dict)  # request id → micro-USD
    spent: dict[str, int] = field(default_factory=dict)  # period id → micro-USD


SpentLoader = Callable[[str, float], Awaitable[float]]
"""``(key_id, since)`` → USD spent since (the ledger), to seed a period after a restart."""


class MemoryLimiter(Limiter):
    """One process's limits; a period's spend starts from the ledger's sum after a restart."""

    def __init__(self, spent_since: SpentLoader) -> None:
        self._keys: dict[str, _Window] = {}
        self._spent_since = spent_since

    def _expire(self, w: _Window, now: float) -> None:
        while w.admitted and w.admitted[0][0] <= now - WINDOW_S:
            _, rid = w.admitted.popleft()
            w.total -= w.tokens.pop(rid, 0)
        for rid in [r for r, deadline in w.live.items() if deadline <= now]:
            del w.live[rid]
            w.held.pop(rid, None)

    def _decision(self, ask: Ask, w: _Window, now: float, refused: str | None,
                  retry: float) -> Decision:
        reset = (w.admitted[0][0] + WINDOW_S - now) if w.admitted else 0.0
        return Decision(refused, retry, ask.rpm - len(w.admitted), ask.tpm - w.total,
                        reset, reset)

    async def reserve(self, ask: Ask) -> Decision:
        w = self._keys.get(ask.key_id)
        if w is None:
            w = self._keys[ask.key_id] = _Window()
        if ask.budget_micro and ask.period not in w.spent:
            spent = await self._spent_since(ask.key_id, ask.period_start)
            w.spent.setdefault(ask.period, round(spent * 1e6))
        now = time.monotonic()  # no await from here to the end: atomic under the loop
        self._expire(w, now)
        oldest = (w.admitted[0][0] + WINDOW_S - now) if w.admitted else WINDOW_S
        if ask.rpm and len(w.admitted) >= ask.rpm:
            return self._decision(ask, w, now, "rpm", oldest)
        if ask.tpm and w.total + ask.tokens > ask.tpm:
            return self._decision(ask, w, now, "tpm", oldest)
        if ask.parallel and len(w.live) >= ask.parallel:
            return self._decision(ask, w, now, "parallel", 1.0)
        if ask.budget_micro and (w.spent.get(ask.period, 0) + sum(w.held.values())
                                 + ask.cost_micro > ask.budget_micro):
            return self._decision(ask, w, now, "budget", 0.0)
        w.admitted.append((now, ask.request_id))
        w.tokens[ask.request_id] = ask.tokens
        w.total += ask.tokens
        w.live[ask.request_id] = now + ask.lease_s
        w.held[ask.request_id] = ask.cost_micro
        return self._decision(ask, w, now, None, 0.0)

    async def settle(self, ask: Ask, tokens: int, cost_micro: int) -> None:
        w = self._keys.get(ask.key_id)
        if w is None:
            return
        if ask.request_id in w.tokens:
            w.total += tokens - w.tokens[ask.request_id]
            w.tokens[ask.request_id] = tokens
        w.live.pop(ask.request_id, None)
        w.held.pop(ask.request_id, None)
        w.spent[ask.period] = w.spent.get(ask.period, 0) + cost_micro
