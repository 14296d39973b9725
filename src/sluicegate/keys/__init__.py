"""Virtual keys, per-key rate limits and budgets, and the usage ledger.

``open_keys(config)`` is the one place that chooses the backends, following ``state.backend``:

- ``memory`` (one process): keys and ledger in a SQLite file (``limits.db_path``), limits in
  the process (``MemoryLimiter``; a budget period's spend is re-read from the ledger after a
  restart);
- ``redis`` (many processes): keys, ledger and limits on the shared Redis (``redis_store``).

Virtual keys need the master key (``server.api_key``): without it the gateway has no auth and
no admin API.
"""

from __future__ import annotations

from ..config import GatewayConfig
from .limits import MemoryLimiter
from .service import ADMISSION, KEY, Admission, KeyService, LimitExceededError

__all__ = ["ADMISSION", "KEY", "Admission", "KeyService", "LimitExceededError", "open_keys"]


def open_keys(config: GatewayConfig) -> KeyService:
    """The key service for ``config``. No I/O here: stores connect on first use."""
    settings = config.limits
    if config.state.backend == "redis":
        from .redis_store import RedisKeyStore, RedisLedger, RedisLimiter, redis_client

        url = config.state.url or ""
        client = redis_client(config.state)
        return KeyService(settings, RedisKeyStore(client, url),
                          RedisLedger(client, url, settings.ledger_retention_days),
                          RedisLimiter(client, url))
    from .sqlite import SqliteDb, SqliteKeyStore, SqliteLedger

    db = SqliteDb(settings.db_path)
    ledger = SqliteLedger(db)
    return KeyService(settings, SqliteKeyStore(db), ledger, MemoryLimiter(ledger.spent_since))
