"""The admin API (master key only; a virtual key gets 403):

- ``POST /admin/keys`` (body ``KeyCreate``) → the key and its ``secret``, shown this once;
- ``GET /admin/keys``, ``GET /admin/keys/{id}`` (with ``spent_usd`` in the current period);
- ``PATCH /admin/keys/{id}`` (body ``KeyUpdate``); ``DELETE /admin/keys/{id}`` revokes;
- ``GET /admin/usage?key=&model=&since=&until=&group_by=key|model|provider|day``: the ledger,
  aggregated (without ``group_by``: the latest 1000 records). ``since``/``until``: epoch
  seconds or ISO 8601 (``2026-12-01``, ``2026-12-01T10:00:00Z``; UTC when no zone).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from ..errors import InvalidRequestError, RouteNotFoundError
from .model import (
    KeyCreate,
    KeyRecord,
    KeyUpdate,
    bad_body,
    hash_secret,
    new_id,
    new_secret,
    period_start,
)
from .service import KEY, KeyService, PermissionDeniedError
from .store import aggregate

__all__ = ["add_admin_routes"]

GROUPS = ("key", "model", "provider", "day")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _master_only(request: web.Request) -> None:
    if request.get(KEY) is not None:
        raise PermissionDeniedError("The admin API needs the master key, not a virtual key.")


async def _body(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None


def _when(value: str | None, param: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(f"Invalid '{param}': epoch seconds or an ISO 8601 date.",
                                  param=param) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class _Admin:
    def __init__(self, keys: KeyService) -> None:
        self.keys = keys

    async def _record(self, request: web.Request) -> KeyRecord:
        _master_only(request)
        key_id = request.match_info["key_id"]
        record = await self.keys.store.get(key_id)
        if record is None:
            raise RouteNotFoundError(f"No key '{key_id}'.")
        return record

    async def create(self, request: web.Request) -> web.Response:
        _master_only(request)
        try:
            body = KeyCreate.model_validate(await _body(request))
        except ValidationError as exc:
            raise bad_body(exc) from None
        secret = new_secret()
        record = KeyRecord(id=new_id(), hash=hash_secret(secret), prefix=secret[:10],
                           created_at=time.time(), **body.model_dump())
        await self.keys.store.put(record)
        return _json({**record.public(), "secret": secret}, status=201)

    async def list(self, request: web.Request) -> web.Response:
        _master_only(request)
        return _json({"object": "list",
                      "data": [r.public() for r in await self.keys.store.all()]})

    async def show(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        spent = await self.keys.ledger.spent_since(record.id,
                                                   period_start(record.budget_period))
        return _json({**record.public(), "spent_usd": round(spent, 9)})

    async def update(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        try:
            body = KeyUpdate.model_validate(await _body(request))
        except ValidationError as exc:
            raise bad_body(exc) from None
        updates = {k: v for k, v in body.model_dump(exclude_unset=True).items()
                   if v is not None or k not in ("name", "models", "budget_period")}
        changed = record.model_copy(update=updates)
        await self.keys.store.put(changed)
        self.keys.forget()
        return _json(changed.public())

    async def revoke(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        if record.revoked_at is None:
            record = record.model_copy(update={"revoked_at": time.time()})
            await self.keys.store.put(record)
        self.keys.forget()
        return _json(record.public())

    async def usage(self, request: web.Request) -> web.Response:
        _master_only(request)
        q = request.query
        group_by = q.get("group_by") or None
        if group_by is not None and group_by not in GROUPS:
            raise InvalidRequestError(f"Invalid 'group_by': one of {', '.join(GROUPS)}.",
                                      param="group_by")
        records = await self.keys.ledger.query(
            key=q.get("key") or None, model=q.get("model") or None,
            since=_when(q.get("since"), "since"), until=_when(q.get("until"), "until"))
        if group_by is None:
            return _json({"object": "list", "data": [r.to_dict() for r in records[-1000:]]})
        return _json({"object": "list", "group_by": group_by,
                      "data": aggregate(records, group_by)})  # type: ignore[arg-type]


def add_admin_routes(router: web.UrlDispatcher, keys: KeyService) -> None:
    admin = _Admin(keys)
    router.add_post("/admin/keys", admin.create)
    router.add_get("/admin/keys", admin.list)
    router.add_get("/admin/keys/{key_id}", admin.show)
    router.add_patch("/admin/keys/{key_id}", admin.update)
    router.add_delete("/admin/keys/{key_id}", admin.revoke)
    router.add_get("/admin/usage", admin.usage)
