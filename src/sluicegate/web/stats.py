"""``GET /v1/stats``: the gateway's in-flight streams and the last minutes' figures, as JSON.

Computed from the gateway's own records, never from ``/metrics``: the live ``Run`` objects
(``Gateway.runs``) and the accounted requests (``sluicegate.accounting.recent``). Figures are
per process (``serve --workers N`` answers from the worker the request reached) and cover the
window's requests among the last 20,000 the process finished.

Shape::

    {"now": <unix s>, "window_s": 300, "bucket_s": 10,
     "in_flight": [{"id", "model", "provider", "age_s", "ttft_s", "chunks", "resumable"}],
     "totals": {"requests", "completed", "failed", "cancelled", "ttft_p50_s", "ttft_p99_s",
                "tokens_per_s_p50", "completion_tokens"},
     "series": [{"t": <bucket start, unix s>, "requests", "ttft_p50_s", "ttft_p99_s",
                 "tokens_per_s"}]}

``tokens_per_s`` is a stream's completion tokens over its time after the first token (the
median over the bucket's streams); figures of a bucket with no stream are null.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Set
from typing import Any

from ..accounting import Recent, recent
from ..relay import Run

__all__ = ["snapshot"]

WINDOW_S = 300
BUCKET_S = 10


def _quantile(values: list[float], q: float) -> float | None:
    """The nearest-rank quantile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _rate(record: Recent) -> float | None:
    _, ttft_s, duration_s, tokens, _ = record
    if ttft_s is None or tokens <= 0:
        return None
    generating = duration_s - ttft_s
    return tokens / generating if generating > 0 else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _figures(records: Iterable[Recent]) -> dict[str, Any]:
    ttfts: list[float] = []
    rates: list[float] = []
    count = 0
    for record in records:
        count += 1
        if record[1] is not None:
            ttfts.append(record[1])
        if (rate := _rate(record)) is not None:
            rates.append(rate)
    return {"requests": count, "ttft_p50_s": _round(_quantile(ttfts, 0.5)),
            "ttft_p99_s": _round(_quantile(ttfts, 0.99)),
            "tokens_per_s": _round(_quantile(rates, 0.5), 2)}


def snapshot(runs: Set[Run], *, window_s: int = WINDOW_S,
             bucket_s: int = BUCKET_S) -> dict[str, Any]:
    now = time.time()
    clock = time.perf_counter()
    in_flight: list[dict[str, Any]] = []
    for run in sorted(runs, key=lambda run: run.started):
        first = run.shaper.first_content_at
        in_flight.append({
            "id": run.shaper.id, "model": run.shaper.model,
            "provider": run.target.provider.name if run.target is not None else None,
            "age_s": round(clock - run.started, 3),
            "ttft_s": None if first is None else round(first - run.started, 4),
            "chunks": len(run.shaper.pieces),
            "resumable": run.sink is not None,
        })
    start = now - window_s
    first_bucket = math.floor(start / bucket_s) * bucket_s
    n = math.floor(now / bucket_s) - math.floor(start / bucket_s) + 1
    buckets: list[list[Recent]] = [[] for _ in range(n)]
    window: list[Recent] = []
    for record in reversed(recent):  # newest first: stop at the window's start
        ended = record[0]
        if ended < start:
            break
        window.append(record)
        index = min(n - 1, int((ended - first_bucket) // bucket_s))
        buckets[index].append(record)
    outcomes: dict[str, int] = {"completed": 0, "failed": 0, "cancelled": 0}
    for record in window:
        outcomes[record[4]] = outcomes.get(record[4], 0) + 1
    overall = _figures(window)
    return {
        "now": round(now, 3), "window_s": window_s, "bucket_s": bucket_s,
        "in_flight": in_flight,
        "totals": {
            "requests": overall["requests"], **outcomes,
            "ttft_p50_s": overall["ttft_p50_s"], "ttft_p99_s": overall["ttft_p99_s"],
            "tokens_per_s_p50": overall["tokens_per_s"],
            "completion_tokens": sum(r[3] for r in window),
        },
        "series": [{"t": first_bucket + i * bucket_s, **_figures(bucket)}
                   for i, bucket in enumerate(buckets)],
    }
