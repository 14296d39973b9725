"""Helpers for the virtual-key tests: the admin API and keyed requests over httpx."""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import CREATED_SECRETS, MASTER_KEY

MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def create_key(url: str, **fields: Any) -> dict[str, Any]:
    """``POST /admin/keys``; the secret is remembered for the no-secret-in-logs check."""
    body = {"name": "test", **fields}
    response = httpx.post(f"{url}/admin/keys", json=body, headers=MASTER, timeout=10)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    CREATED_SECRETS.append(created["secret"])
    return created


def chat(url: str, secret: str, *, model: str = "mock/gpt-4o-mini", max_tokens: int = 10,
         stream: bool = False, client: httpx.Client | None = None,
         **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens, "stream": stream, **extra}
    if client is not None:
        return client.post(f"{url}/v1/chat/completions", json=body, headers=bearer(secret))
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=bearer(secret),
                      timeout=30)


def usage(url: str, **query: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/admin/usage", params=query, headers=MASTER, timeout=10)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data
