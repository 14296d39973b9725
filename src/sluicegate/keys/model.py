"""Virtual keys: the record, the admin request bodies, secrets and model patterns.

A secret is ``sk-sg-`` + 32 URL-safe characters (192 random bits). Only its SHA-256 is stored:
a fast hash is enough for a secret that random (no dictionary or brute force gets near 2**192
guesses; slow password hashes protect low-entropy human passwords), and it lets every request
find its key with one indexed lookup instead of a per-key comparison.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InvalidRequestError

__all__ = ["SECRET_PREFIX", "KeyCreate", "KeyRecord", "KeyUpdate", "bad_body", "hash_secret",
           "model_allowed", "new_id", "new_secret", "period_end", "period_id"]

SECRET_PREFIX = "sk-sg-"
Period = Literal["total", "daily", "monthly"]

_PATTERN = re.compile(r"^[A-Za-z0-9._:@+-]+(/[A-Za-z0-9._:@+-]+)*(/\*)?$")
"""An exact model name (``openai/gpt-4o``) or a prefix pattern ending in ``/*``."""

MAX_RPM = 1_000_000
MAX_TPM = 1_000_000_000
MAX_PARALLEL = 100_000
MAX_BUDGET_USD = 1_000_000.0


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(24)  # 24 bytes → 32 characters


def new_id() -> str:
    return "key_" + secrets.token_hex(8)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def model_allowed(patterns: list[str], model: str) -> bool:
    """Whether ``model`` matches one of ``patterns`` (exact, or ``prefix/*``); [] allows all."""
    if not patterns:
        return True
    for pattern in patterns:
        if pattern.endswith("/*"):
            if model.startswith(pattern[:-1]):
                return True
        elif model == pattern:
            return True
    return False


def period_id(period: str, now: float | None = None) -> str:
    """The budget period a moment falls in: ``total``, ``2026-12-01`` (daily, UTC) or
    ``2026-12`` (monthly, UTC)."""
    if period == "total":
        return "total"
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return moment.strftime("%Y-%m-%d" if period == "daily" else "%Y-%m")


def period_start(period: str, now: float | None = None) -> float:
    """When the current budget period began (epoch s); 0 for ``total``."""
    if period == "total":
        return 0.0
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "monthly":
        start = start.replace(day=1)
    return start.timestamp()


def period_end(period: str, now: float | None = None) -> float:
    """When the current daily or monthly budget period ends: the next UTC midnight, or the
    first of the next month (epoch s). Raises ``ValueError`` for ``total`` (it never ends)."""
    if period == "total":
        raise ValueError("a total budget has no period end")
    start = datetime.fromtimestamp(period_start(period, now), UTC)
    if period == "daily":
        return (start + timedelta(days=1)).timestamp()
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.replace(year=year, month=month).timestamp()


class _Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("models", check_fields=False)
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            if not _PATTERN.match(pattern):
                raise ValueError(f"{pattern!r} is not a model name or a 'prefix/*' pattern")
        return value


class KeyCreate(_Limits):
    """``POST /admin/keys``. Limits of 0 or null mean none; ``expires_at`` is epoch s."""

    name: str = Field(min_length=1, max_length=200)
    models: list[str] = Field(default_factory=list, max_length=1000)
    expires_at: float | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, ge=0, le=MAX_RPM)
    tpm: int | None = Field(default=None, ge=0, le=MAX_TPM)
    max_parallel: int | None = Field(default=None, ge=0, le=MAX_PARALLEL)
    budget_usd: float | None = Field(default=None, ge=0, le=MAX_BUDGET_USD)
    budget_period: Period = "total"


class KeyUpdate(_Limits):
    """``PATCH /admin/keys/{id}``: the fields given replace the key's."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    models: list[str] | None = Field(default=None, max_length=1000)
    expires_at: float | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, ge=0, le=MAX_RPM)
    tpm: int | None = Field(default=None, ge=0, le=MAX_TPM)
    max_parallel: int | None = Field(default=None, ge=0, le=MAX_PARALLEL)
    budget_usd: float | None = Field(default=None, ge=0, le=MAX_BUDGET_USD)
    budget_period: Period | None = None


class KeyRecord(BaseModel):
    """A stored key (never its secret). ``hash`` is the secret's SHA-256 (hex)."""

    id: str
    name: str
    hash: str
    prefix: str  # the secret's first characters, to tell keys apart in a list
    models: list[str] = Field(default_factory=list)
    expires_at: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_period: Period = "total"
    created_at: float
    revoked_at: float | None = None

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def public(self) -> dict[str, Any]:
        """The admin API's view: everything but the hash."""
        return self.model_dump(exclude={"hash"})


def bad_body(exc: ValidationError) -> InvalidRequestError:
    """A 400 naming the first invalid field of an admin body."""
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    message = str(first["msg"]).removeprefix("Value error, ")
    return InvalidRequestError(f"Invalid '{param}': {message}." if param else message,
                               param=param)
