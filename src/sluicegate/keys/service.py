"""``KeyService``: virtual keys on the request path (authenticate, admit, settle) and the admin API.

Request path of a virtual key (``sk-sg-…``):

1. ``authenticate`` (the auth middleware): the secret's SHA-256 is looked up, cached in the
   process for ``limits.key_cache_s`` (≤ 1 s), so a key revoked on one instance is refused on
   every instance within that time. Unknown, revoked and expired keys get the same 401.
2. ``admit`` (before the ``Run``): the model must be allowed; the request's worst case
   (prompt tokens + ``max_tokens`` or ``limits.default_max_tokens``, and its cost at the
   dearest deployment of its chain) is reserved by the ``Limiter``; refused → 429. The
   ``Admission`` goes on the request (``request["sg_admission"]``) for the ``Run``.
3. When the ``Run`` has accounted the request (any ending, client disconnects included), the
   admission settles to the real usage and writes the ledger record, in a task of its own.

The state unreachable (Redis down): ``limits.on_state_error`` ``open`` admits the request
unlimited (a key already seen by this process stays valid from its cache), ``closed`` answers
503 ``state_unavailable``. Either way a warning is logged (at most every 10 s).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import GatewayError, RateLimitError, StateUnavailableError
from ..providers.base import Target, first_dialect
from ..schemas import ChatRequest, CompletionRequest
from ..state import StateUnavailable
from ..tokens import counter_for
from .limits import Ask, Decision, Limiter, limit_headers
from .model import KeyRecord, hash_secret, model_allowed, period_end, period_id, period_start
from .prices import cost_usd, prices_for
from .store import KeyStore, Ledger, UsageRecord

if TYPE_CHECKING:
    from ..accounting import Accounted
    from ..config import LimitsSettings
    from ..policy import Policy

__all__ = ["ADMISSION", "KEY", "Admission", "KeyService", "LimitExceededError",
           "PermissionDeniedError"]

log = logging.getLogger("sluicegate.keys")

INVALID_KEY = "Incorrect API key provided."
_PERIOD_TTL_S = {"daily": 2 * 86_400, "monthly": 40 * 86_400, "total": 10 * 365 * 86_400}


class LimitExceededError(RateLimitError):
    """A virtual key's limit: code ``rate_limit_exceeded`` (rpm, tpm, parallel) or
    ``budget_exceeded``; carries the ``x-ratelimit-*`` headers."""

    def __init__(self, message: str, *, code: str, retry_after: float | None,
                 headers: dict[str, str]) -> None:
        super().__init__(message, retry_after=retry_after or 1.0)
        self.code = code
        self.type = "insufficient_quota" if code == "budget_exceeded" else "rate_limit_error"
        self._extra = headers
        self._retry = retry_after is not None

    def headers(self) -> dict[str, str]:
        return {**(super().headers() if self._retry else {}), **self._extra}


class PermissionDeniedError(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


@dataclass
class Admission:
    """One keyed request's reservation, settled once when the request has been accounted."""

    service: KeyService
    key: KeyRecord
    ask: Ask | None  # None: admitted without a reservation (the state was unreachable)
    headers: dict[str, str]
    started: float = field(default_factory=time.time)
    settled: bool = False

    def settle(self, record: Accounted, target: Target | None) -> None:
        """Called by the ``Run`` (synchronously, possibly while its task is being
        cancelled) with the deployment that served it: the settling runs in a task of its
        own."""
        if self.settled:
            return
        self.settled = True
        self.service.spawn(self.service.settle(self, record, target))


class KeyService:
    def __init__(self, settings: LimitsSettings, store: KeyStore, ledger: Ledger,
                 limiter: Limiter, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.ledger = ledger
        self.limiter = limiter
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned_at = 0.0
        self._clock = clock

    # -- request path ----------------------------------------------------------------------

    def _state_error(self, what: str, exc: StateUnavailable) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 10:
            self._warned_at = now
            log.warning("virtual keys: the state is unreachable (%s), failing %s: %s", what,
                        self.settings.on_state_error, exc)

    async def authenticate(self, token: str) -> KeyRecord:
        """The usable key whose secret is ``token``; ``AuthenticationError`` otherwise."""
        from ..errors import AuthenticationError

        digest = hash_secret(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self.settings.key_cache_s:
            record = cached[1]
        else:
            try:
                record = await self.store.by_hash(digest)
            except StateUnavailable as exc:
                self._state_error("key lookup", exc)
                if self.settings.on_state_error == "open" and cached is not None:
                    record = cached[1]
                else:
                    raise StateUnavailableError(
                        "The key store cannot be reached now; retry shortly.") from None
            else:
                if len(self._cache) > 100_000:
                    self._cache.clear()
                self._cache[digest] = (now, record)
        if record is None or not record.usable(self._clock()):
            raise AuthenticationError(INVALID_KEY)
        return record

    async def admit(self, key: KeyRecord, req: ChatRequest | CompletionRequest,
                    policy: Policy, chain: list[Target | GatewayError]) -> Admission:
        if not model_allowed(key.models, req.model):
            raise PermissionDeniedError(f"This key may not use the model '{req.model}'.",
                                        param="model")
        limited = bool(key.rpm or key.tpm or key.max_parallel or key.budget_usd)
        if not limited:
            return Admission(self, key, None, {})
        text = (req.prompt_text() if isinstance(req, CompletionRequest)
                else "\n".join(m.text() for m in req.messages))
        n = getattr(req, "n", 1) or 1
        prompt = counter_for(first_dialect(chain))(text) + (
            0 if isinstance(req, CompletionRequest) else 4 * len(req.messages))
        completion = (req.token_limit or self.settings.default_max_tokens) * n
        targets = [t for t in chain if isinstance(t, Target)]
        cost = max((cost_usd(prices_for(t), {"prompt_tokens": prompt,
                                             "completion_tokens": completion})
                    for t in targets), default=0.0)
        now = self._clock()
        total = policy.timeouts.total
        ask = Ask(key_id=key.id, request_id=uuid.uuid4().hex, rpm=key.rpm or 0,
                  tpm=key.tpm or 0, parallel=key.max_parallel or 0,
                  budget_micro=round((key.budget_usd or 0) * 1e6),
                  period=period_id(key.budget_period, now),
                  period_ttl_s=_PERIOD_TTL_S[key.budget_period],
                  period_start=period_start(key.budget_period, now),
                  tokens=prompt + completion, cost_micro=math.ceil(cost * 1e6),
                  lease_s=(total if total else 3600.0) + 60.0)
        try:
            decision = await self.limiter.reserve(ask)
        except StateUnavailable as exc:
            self._state_error("reserve", exc)
            if self.settings.on_state_error == "closed":
                raise StateUnavailableError(
                    "Rate limits cannot be checked now (the shared state is unreachable); "
                    "retry shortly.") from None
            return Admission(self, key, None, {})
        headers = limit_headers(ask, decision)
        if decision.refused is not None:
            raise self._refusal(key, ask, decision, headers)
        return Admission(self, key, ask, headers)

    def _refusal(self, key: KeyRecord, ask: Ask, d: Decision,
                 headers: dict[str, str]) -> LimitExceededError:
        if d.refused == "budget":
            retry: float | None = None
            if key.budget_period != "total":
                now = self._clock()
                retry = period_end(key.budget_period, now) - now
            return LimitExceededError(
                f"This key's {key.budget_period} budget of ${key.budget_usd:g} is spent "
                "(or this request's worst-case cost would exceed it).",
                code="budget_exceeded", retry_after=retry, headers=headers)
        if d.refused == "tpm" and ask.tokens > ask.tpm:
            message = (f"This request's worst case ({ask.tokens} tokens: prompt + max_tokens) "
                       f"exceeds the key's limit of {ask.tpm} tokens per minute (tpm); lower "
                       "max_tokens.")
        elif d.refused == "tpm":
            message = (f"Rate limit reached: {ask.tpm} tokens per minute (tpm); this request "
                       f"reserves {ask.tokens}.")
        elif d.refused == "rpm":
            message = f"Rate limit reached: {ask.rpm} requests per minute (rpm)."
        else:
            message = f"Rate limit reached: {ask.parallel} parallel requests (parallel)."
        return LimitExceededError(message, code="rate_limit_exceeded",
                                  retry_after=max(d.retry_after_s, 0.001), headers=headers)

    async def settle(self, admission: Admission, record: Accounted,
                     target: Target | None) -> None:
        usage = record.usage
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        cached = _detail(usage, "prompt_tokens_details", "cached_tokens")
        reasoning = _detail(usage, "completion_tokens_details", "reasoning_tokens")
        cost = cost_usd(prices_for(target), usage)
        entry = UsageRecord(
            time=self._clock(), request_id=record.id, key_id=admission.key.id,
            model=record.model, provider=record.provider, outcome=record.outcome,
            attempts=record.attempts, prompt_tokens=prompt, completion_tokens=completion,
            cached_tokens=cached, reasoning_tokens=reasoning, cost_usd=round(cost, 9),
            ttft_ms=None if record.ttft_s is None else round(record.ttft_s * 1000, 1),
            duration_ms=round(record.duration_s * 1000, 1))
        try:
            if admission.ask is None:
                await self.ledger.add(entry)
            else:
                await self.limiter.settle_and_record(
                    admission.ask, prompt + completion, math.ceil(cost * 1e6), entry,
                    self.ledger)
        except StateUnavailable as exc:
            self._state_error("settle", exc)

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("virtual keys: settling a request failed: %r", exc)

    async def drain(self) -> None:
        """Wait for pending settlements (shutdown, tests)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def aclose(self) -> None:
        await self.drain()
        await self.limiter.aclose()
        await self.ledger.aclose()
        await self.store.aclose()

    # -- admin -----------------------------------------------------------------------------

    def forget(self) -> None:
        """Drop the key cache (a key changed on this instance takes effect here at once)."""
        self._cache.clear()


ADMISSION = web.RequestKey("sg_admission", Admission)
"""A keyed request's ``Admission`` (set before its ``Run``)."""
KEY = web.RequestKey("sg_key", KeyRecord)
"""The virtual key that authenticated the request (absent for the master key)."""


def _detail(usage: dict[str, Any], group: str, name: str) -> int:
    details = usage.get(group)
    return int(details.get(name) or 0) if isinstance(details, dict) else 0
