"""Where keys and the usage ledger live: one interface, two backends (``sqlite``, ``redis_store``),
chosen by ``sluicegate.keys.open_keys``."""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from .model import KeyRecord

__all__ = ["GroupBy", "KeyStore", "Ledger", "UsageRecord", "aggregate"]

GroupBy = Literal["key", "model", "provider", "day"]


class KeyStore(abc.ABC):
    @abc.abstractmethod
    async def put(self, record: KeyRecord) -> None:
        """Create or replace ``record``."""

    @abc.abstractmethod
    async def get(self, key_id: str) -> KeyRecord | None: ...

    @abc.abstractmethod
    async def by_hash(self, secret_hash: str) -> KeyRecord | None: ...

    @abc.abstractmethod
    async def all(self) -> list[KeyRecord]: ...

    async def aclose(self) -> None:  # noqa: B027 - optional
        pass


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One request in the ledger. Times in epoch s; durations in ms; cost in USD."""

    time: float
    request_id: str
    key_id: str
    model: str
    provider: str
    outcome: str
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float
    ttft_ms: float | None
    duration_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ledger(abc.ABC):
    @abc.abstractmethod
    async def add(self, record: UsageRecord) -> None: ...

    @abc.abstractmethod
    async def query(self, *, key: str | None = None, model: str | None = None,
                    since: float | None = None,
                    until: float | None = None) -> list[UsageRecord]:
        """Records with ``since <= time < until``, filtered, oldest first."""

    async def spent_since(self, key_id: str, since: float) -> float:
        """USD spent by ``key_id`` since ``since`` (epoch s)."""
        return sum(r.cost_usd for r in await self.query(key=key_id, since=since))

    async def aclose(self) -> None:  # noqa: B027 - optional
        pass


def aggregate(records: Iterable[UsageRecord], group_by: GroupBy) -> list[dict[str, Any]]:
    """Rows of ``group`` (the key id, model, provider or UTC day), ``requests``, token sums,
    ``cost_usd`` and outcomes, sorted by group."""
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        if group_by == "day":
            group = datetime.fromtimestamp(r.time, UTC).strftime("%Y-%m-%d")
        else:
            group = {"key": r.key_id, "model": r.model, "provider": r.provider}[group_by]
        row = rows.get(group)
        if row is None:
            row = rows[group] = {"group": group, "requests": 0, "prompt_tokens": 0,
                                 "completion_tokens": 0, "cached_tokens": 0,
                                 "reasoning_tokens": 0, "cost_usd": 0.0, "outcomes": {}}
        row["requests"] += 1
        row["prompt_tokens"] += r.prompt_tokens
        row["completion_tokens"] += r.completion_tokens
        row["cached_tokens"] += r.cached_tokens
        row["reasoning_tokens"] += r.reasoning_tokens
        row["cost_usd"] += r.cost_usd
        row["outcomes"][r.outcome] = row["outcomes"].get(r.outcome, 0) + 1
    for row in rows.values():
        row["cost_usd"] = round(row["cost_usd"], 9)
    return [rows[g] for g in sorted(rows)]
