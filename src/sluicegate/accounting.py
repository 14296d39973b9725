"""Accounting of one finished request: Prometheus metrics and one structured usage log line.

A request is accounted exactly once, whatever its ending (completed, failed, cancelled), by the
``Run`` that served it (``sluicegate.relay``). The log line goes to the ``sluicegate.usage``
logger as ``usage {json}`` with ``id``, ``model``, ``deployment``, ``provider``, ``upstream_model``,
``outcome``, ``attempts``, ``duration_ms``, ``malformed_events`` and ``usage`` (the OpenAI usage
object: ``prompt_tokens``, ``completion_tokens``, ``total_tokens``, and ``"estimated": true``
when counted by the gateway rather than reported by the upstream); a resumable stream adds
``stream_id``, and ``continued_at_seq`` when another instance continued it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from .metrics import Metrics

__all__ = ["Accounted", "Recent", "account", "recent"]

usage_log = logging.getLogger("sluicegate.usage")

Recent = tuple[float, float | None, float, int, str]
"""A finished request, compact: end (``time.time()``), TTFT (s, None without content), duration
(s), completion tokens, outcome. Atomic values only, so the garbage collector stops tracking the
tuple: thousands kept cost no collection time."""

recent: deque[Recent] = deque(maxlen=20_000)
"""This process's last finished requests, newest last: ``/v1/stats``'s source
(``sluicegate.web.stats``)."""


@dataclass(frozen=True, slots=True)
class Accounted:
    """What one request cost. Durations in s; ``ttft_s`` is None when no content was sent."""

    id: str
    model: str  # the client's name for it (logged, never a metric label)
    deployment: str  # the configured deployment's name (the metric label)
    provider: str
    upstream_model: str
    outcome: str
    attempts: int
    duration_s: float
    ttft_s: float | None
    malformed_events: int
    usage: dict[str, Any]
    extra: dict[str, Any] | None = None  # more fields for the log line (a resumable stream's)


def account(record: Accounted, metrics: Metrics | None) -> None:
    """Record ``record`` in ``metrics`` (closing its in-flight stream) and log it."""
    usage = record.usage
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    completion_tokens = int(usage.get("completion_tokens") or 0)
    recent.append((time.time(), record.ttft_s, record.duration_s, completion_tokens,
                   record.outcome))
    if metrics is not None:
        metrics.in_flight.dec()
        metrics.observe(
            deployment=record.deployment, provider=record.provider, outcome=record.outcome,
            ttft_s=record.ttft_s, duration_s=record.duration_s,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        )
        if record.malformed_events:
            metrics.malformed.labels(record.provider).inc(record.malformed_events)
    usage_log.info(
        "usage %s",
        orjson.dumps({
            "id": record.id,
            "model": record.model,
            "deployment": record.deployment,
            "provider": record.provider,
            "upstream_model": record.upstream_model,
            "outcome": record.outcome,
            "attempts": record.attempts,
            "duration_ms": round(record.duration_s * 1000, 1),
            "malformed_events": record.malformed_events,
            "usage": usage,
            **(record.extra or {}),
        }).decode(),
    )
