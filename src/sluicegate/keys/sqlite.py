"""Keys and the ledger in one SQLite file (stdlib ``sqlite3``), for a single gateway process
(``state.backend: memory``). Path: ``limits.db_path``, relative to the working directory.

One connection, used from one worker thread (``asyncio.to_thread`` under a lock), WAL mode.
Key lookups are cached by ``KeyService``, so the event loop rarely waits for the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .model import KeyRecord
from .store import KeyStore, Ledger, UsageRecord

__all__ = ["SqliteDb", "SqliteKeyStore", "SqliteLedger"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, hash TEXT UNIQUE NOT NULL,
                                 record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS usage (time REAL NOT NULL, request_id TEXT, key_id TEXT, model TEXT,
    provider TEXT, outcome TEXT, attempts INTEGER, prompt_tokens INTEGER,
    completion_tokens INTEGER, cached_tokens INTEGER, reasoning_tokens INTEGER, cost_usd REAL,
    ttft_ms REAL, duration_ms REAL);
CREATE INDEX IF NOT EXISTS usage_key_time ON usage (key_id, time);
CREATE INDEX IF NOT EXISTS usage_time ON usage (time);
"""

_FIELDS = ("time", "request_id", "key_id", "model", "provider", "outcome", "attempts",
           "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
           "cost_usd", "ttft_ms", "duration_ms")


class SqliteDb:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                return fn(self._connect())
        return await asyncio.to_thread(call)

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
        await asyncio.to_thread(close)


class SqliteKeyStore(KeyStore):
    def __init__(self, db: SqliteDb) -> None:
        self.db = db

    async def put(self, record: KeyRecord) -> None:
        row = (record.id, record.hash, record.model_dump_json())
        await self.db.run(lambda c: c.execute(
            "INSERT OR REPLACE INTO keys (id, hash, record) VALUES (?, ?, ?)", row))

    async def _one(self, sql: str, arg: str) -> KeyRecord | None:
        row = await self.db.run(lambda c: c.execute(sql, (arg,)).fetchone())
        return None if row is None else KeyRecord.model_validate_json(row[0])

    async def get(self, key_id: str) -> KeyRecord | None:
        return await self._one("SELECT record FROM keys WHERE id = ?", key_id)

    async def by_hash(self, secret_hash: str) -> KeyRecord | None:
        return await self._one("SELECT record FROM keys WHERE hash = ?", secret_hash)

    async def all(self) -> list[KeyRecord]:
        rows = await self.db.run(lambda c: c.execute("SELECT record FROM keys").fetchall())
        records = [KeyRecord.model_validate_json(r[0]) for r in rows]
        return sorted(records, key=lambda r: r.created_at)

    async def aclose(self) -> None:
        await self.db.aclose()


class SqliteLedger(Ledger):
    def __init__(self, db: SqliteDb) -> None:
        self.db = db

    async def add(self, record: UsageRecord) -> None:
        values = tuple(getattr(record, f) for f in _FIELDS)
        sql = f"INSERT INTO usage ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})"
        await self.db.run(lambda c: c.execute(sql, values))

    async def query(self, *, key: str | None = None, model: str | None = None,
                    since: float | None = None,
                    until: float | None = None) -> list[UsageRecord]:
        where: list[str] = []
        args: list[Any] = []
        for column, op, value in (("key_id", "=", key), ("model", "=", model),
                                  ("time", ">=", since), ("time", "<", until)):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        sql = f"SELECT {', '.join(_FIELDS)} FROM usage"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time"
        rows = await self.db.run(lambda c: c.execute(sql, args).fetchall())
        return [UsageRecord(*row) for row in rows]

