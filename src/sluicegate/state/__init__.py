"""State shared by gateway processes: values, counters, leases and event logs with TTLs.

``open_state(settings)`` is the one place that knows which backends exist: ``memory`` (one
process, no set-up) and ``redis`` (every process sharing one Redis). The rest of the gateway
sees a ``StateBackend`` (see ``base`` for the contract and the key layout).
"""

from __future__ import annotations

from ..config import StateSettings
from .base import LogInfo, StateBackend, StateUnavailable, key
from .memory import MemoryBackend

__all__ = ["LogInfo", "MemoryBackend", "StateBackend", "StateUnavailable", "is_shared", "key",
           "open_state"]


def open_state(settings: StateSettings) -> StateBackend:
    """The backend ``settings`` names. No I/O: a Redis client connects on its first command.
    Raises ``ValueError`` if ``settings`` are unusable (redis without a url)."""
    if settings.backend == "redis":
        from .redis_backend import RedisBackend  # imports redis only when it is used

        return RedisBackend(settings)
    return MemoryBackend()


def is_shared(settings: StateSettings) -> bool:
    """Whether several processes see the state of the backend ``settings`` name (without
    opening it)."""
    if settings.backend == "redis":
        from .redis_backend import RedisBackend

        return RedisBackend.shared
    return MemoryBackend.shared
