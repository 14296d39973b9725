"""The shared-state interface: key/value with TTLs, counters, leases and event logs.

Every key is a full key built with ``key(scope_id, part)``: ``{sg:<scope_id>}:<part>``. The
braces are a Redis Cluster hash tag, so every key of one scope (a stream, a request) lands on
one slot and a Lua script may touch them together. Every write takes a TTL (s); no key is ever
written without one.

Event logs are append-only lists of ``(seq, payload)`` entries with strictly increasing positive
``seq``, capped by entry count and payload bytes; the oldest entries are trimmed first and the
highest trimmed ``seq`` is remembered (``LogInfo.trimmed_through``). On Redis a log is a stream
(``XADD`` with the explicit ID ``<seq>-0``) plus a companion hash ``<key>:meta``.

Errors: ``StateUnavailable`` when the backend cannot be reached (raised within about twice the
configured socket timeout, never a hang); ``ValueError`` on invalid arguments (a bad scope id, a
TTL that is not positive, a ``seq`` that does not increase).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["MAX_SEQ", "LogInfo", "StateBackend", "StateUnavailable", "check_caps",
           "check_entries", "key", "ttl_ms"]

MAX_SCOPE_CHARS = 128
MAX_SEQ = 2**53 - 1
"""The highest ``seq`` a log accepts (exact in a Lua number, which is a double)."""


class StateUnavailable(Exception):
    """The state backend cannot be reached (Redis down, a timeout, no free connection)."""


@dataclass(frozen=True, slots=True)
class LogInfo:
    """One event log: its highest ``seq`` ever appended (0: none yet), the highest ``seq``
    trimmed away (0: none), and the entries and payload bytes it holds now."""

    last_seq: int
    trimmed_through: int
    entries: int
    bytes: int


def key(scope_id: str, part: str) -> str:
    """The full key ``{sg:<scope_id>}:<part>``. ``scope_id`` is 1-128 printable ASCII
    characters without braces; raises ``ValueError`` otherwise."""
    if not 0 < len(scope_id) <= MAX_SCOPE_CHARS or not all(
        " " <= c <= "~" and c not in "{}" for c in scope_id
    ):
        raise ValueError(f"invalid state scope id {scope_id!r}: 1-{MAX_SCOPE_CHARS} printable "
                         "ASCII characters, no braces")
    if not part:
        raise ValueError("a state key needs a non-empty part")
    return f"{{sg:{scope_id}}}:{part}"


def ttl_ms(ttl_s: float) -> int:
    """``ttl_s`` (s, > 0) in whole milliseconds, at least 1; raises ``ValueError``."""
    if not ttl_s > 0:
        raise ValueError(f"a TTL must be positive, got {ttl_s!r} s")
    return max(1, round(ttl_s * 1000))


def check_entries(entries: Sequence[tuple[int, bytes]], last_seq: int = 0) -> None:
    """Raise ``ValueError`` unless every ``seq`` is an int in 1..``MAX_SEQ``, above
    ``last_seq`` and above the one before it."""
    previous = last_seq
    for seq, payload in entries:
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 < seq <= MAX_SEQ:
            raise ValueError(f"a log seq must be an int in 1..{MAX_SEQ}, got {seq!r}")
        if seq <= previous:
            raise ValueError(f"log seq {seq} does not increase (last is {previous})")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise ValueError(f"a log payload must be bytes, got {type(payload).__name__}")
        previous = seq


def check_caps(max_entries: int, max_bytes: int) -> None:
    """Raise ``ValueError`` unless both log caps are at least 1."""
    if max_entries < 1 or max_bytes < 1:
        raise ValueError(f"log caps must be at least 1 (max_entries={max_entries}, "
                         f"max_bytes={max_bytes})")


class StateBackend(abc.ABC):
    """State that outlives one request, shared by every gateway process when ``shared``.

    ``name`` is ``"memory"`` or ``"redis"``. Keys come from ``key()``; TTLs are in seconds
    (> 0), rounded to milliseconds. Every method may raise ``StateUnavailable``.
    """

    name: ClassVar[str]
    shared: ClassVar[bool]
    """True when several processes see the same state."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return once the backend answers; raises ``StateUnavailable``."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections. The backend is not used afterwards."""

    # -- key/value -------------------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value at ``key``, or None if absent or expired."""

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, *, ttl_s: float,
                  only_if_absent: bool = False) -> bool:
        """Store ``value`` for ``ttl_s`` (s). False (nothing written) when ``only_if_absent``
        and the key exists."""

    @abc.abstractmethod
    async def delete(self, *keys: str) -> int:
        """Delete ``keys`` (a log's companion key included); returns how many existed."""

    @abc.abstractmethod
    async def expire(self, key: str, ttl_s: float) -> bool:
        """Set the TTL of an existing key to ``ttl_s`` (s); False if it does not exist."""

    @abc.abstractmethod
    async def incr(self, key: str, amount: int = 1, *, ttl_s: float) -> int:
        """Add ``amount`` to the integer at ``key`` (0 if absent) and return the new value.
        A key created by this call gets ``ttl_s`` (s); an existing key keeps its TTL."""

    # -- leases ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def acquire_lease(self, key: str, owner: str, *, ttl_s: float) -> bool:
        """Take the lease at ``key`` for ``owner`` for ``ttl_s`` (s), atomically: True if it
        was free or expired (or already ``owner``'s, whose TTL is then reset), else False."""

    @abc.abstractmethod
    async def renew_lease(self, key: str, owner: str, *, ttl_s: float) -> bool:
        """Reset the lease's TTL to ``ttl_s`` (s) if ``owner`` holds it; False if someone else
        holds it or it expired."""

    @abc.abstractmethod
    async def release_lease(self, key: str, owner: str) -> bool:
        """Free the lease if ``owner`` holds it; False otherwise (nothing changed)."""

    @abc.abstractmethod
    async def lease_owner(self, key: str) -> str | None:
        """Who holds the lease at ``key``, or None."""

    # -- event logs ------------------------------------------------------------------------

    @abc.abstractmethod
    async def log_append(self, key: str, entries: Sequence[tuple[int, bytes]], *,
                         ttl_s: float, max_entries: int, max_bytes: int) -> None:
        """Append ``(seq, payload)`` entries in one round trip, then trim the oldest entries
        while the log holds more than ``max_entries`` entries or ``max_bytes`` payload bytes
        (an entry larger than ``max_bytes`` is itself trimmed). The log and its companion keys
        get ``ttl_s`` (s). Raises ``ValueError`` (nothing appended) unless every ``seq`` is
        above the log's ``last_seq`` and the one before it."""

    @abc.abstractmethod
    async def log_read(self, key: str, after_seq: int, *, limit: int = 512,
                       block_s: float | None = None) -> list[tuple[int, bytes]]:
        """Up to ``limit`` entries with ``seq > after_seq``, oldest first. If there are none
        and ``block_s`` (s) is given, wait that long for an append; [] if none comes. (Redis:
        a waiting read holds one pooled connection.)"""

    @abc.abstractmethod
    async def log_info(self, key: str) -> LogInfo | None:
        """The log's counters, or None if it does not exist (never created, deleted or
        expired)."""

    @abc.abstractmethod
    async def log_expire(self, key: str, ttl_s: float) -> None:
        """Set the TTL (s) of the log and its companion keys (retention after a stream ends);
        nothing happens if the log does not exist."""
