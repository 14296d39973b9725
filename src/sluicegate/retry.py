"""The retry rule shared by the gateway (``failover``, the providers) and the client SDK.

Dependency-free, so the SDK can use it without importing any server code:

- ``retryable_status(status)``: True for 408 (request timeout), 409 (conflict), 429 (too many
  requests) and every 5xx status: the failures worth another try before the first token;
- ``retry_after(headers)``: the wait (s) the server asks for, from ``retry-after-ms`` (ms) or
  ``Retry-After`` (s, the delta-seconds form; an HTTP date is ignored); None if absent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["RETRYABLE_STATUSES", "retry_after", "retryable_status"]

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""The retryable statuses below 500 (every status ≥ 500 is retryable too)."""


def retryable_status(status: int) -> bool:
    """Whether an HTTP ``status`` may be retried: 408, 409, 429 or ≥ 500."""
    return status in RETRYABLE_STATUSES or status >= 500


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (ms) or ``retry-after`` (s); None if absent or
    unreadable. ``headers`` is looked up with lower-case names (a case-insensitive mapping, or
    a dict of lower-cased names). A value that is not a finite number ≥ 0 (``inf``, ``nan``,
    ``-1``: upstream text is untrusted) is ignored."""
    ms = _seconds(headers.get("retry-after-ms"), 1000.0)
    if ms is not None:
        return ms
    return _seconds(headers.get("retry-after"), 1.0)


def _seconds(value: str | None, per_second: float) -> float | None:
    if not value:
        return None
    try:
        number = float(value) / per_second
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
