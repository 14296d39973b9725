"""``sluicegate keys create|list|show|revoke`` and ``sluicegate usage``: the admin API of a running
gateway (``--url``), with the master key from ``--master-key`` or ``SLUICEGATE_MASTER_KEY``."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

__all__ = ["keys_app", "usage"]

DEFAULT_URL = "http://127.0.0.1:8400"

keys_app = typer.Typer(no_args_is_help=True, help="Virtual keys (needs the master key).")
console = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)

Url = Annotated[str, typer.Option(help="Gateway base URL.")]
Master = Annotated[str | None, typer.Option(
    "--master-key", help="The gateway's master key (default: $SLUICEGATE_MASTER_KEY).",
    show_default=False)]


def _call(method: str, url: str, path: str, master_key: str | None, *,
          json: Any = None, params: dict[str, str] | None = None) -> Any:
    key = master_key or os.environ.get("SLUICEGATE_MASTER_KEY")
    if not key:
        console.print("[red]error:[/red] give --master-key or set SLUICEGATE_MASTER_KEY")
        raise typer.Exit(2)
    try:
        response = httpx.request(method, url.rstrip("/") + path, json=json, params=params,
                                 headers={"Authorization": f"Bearer {key}"}, timeout=30)
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] cannot reach {url}: {exc}")
        raise typer.Exit(1) from None
    body = response.json() if response.content else {}
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        console.print(f"[red]error {response.status_code}:[/red] "
                      f"{error.get('message') or response.text}")
        raise typer.Exit(1)
    return body


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _opt(value: Any) -> str:
    return "-" if value in (None, 0, []) else str(value)


def _keys_table(records: list[dict[str, Any]]) -> Table:
    table = Table("id", "name", "prefix", "models", "rpm", "tpm", "parallel", "budget",
                  "expires", "status")
    now = datetime.now(UTC).timestamp()
    for r in records:
        status = ("revoked" if r.get("revoked_at") else
                  "expired" if r.get("expires_at") and r["expires_at"] <= now else "active")
        budget = (f"${r['budget_usd']:g}/{r['budget_period']}" if r.get("budget_usd")
                  else "-")
        table.add_row(r["id"], r["name"], r["prefix"] + "…", ", ".join(r["models"]) or "all",
                      _opt(r.get("rpm")), _opt(r.get("tpm")), _opt(r.get("max_parallel")),
                      budget, _when(r.get("expires_at")), status)
    return table


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for the key.")],
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Allowed model or 'prefix/*' (repeat; none: all).")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute.")] = None,
    parallel: Annotated[int | None, typer.Option(help="Parallel requests.")] = None,
    budget: Annotated[float | None, typer.Option(help="Budget in USD.")] = None,
    period: Annotated[str, typer.Option(help="Budget period: total, daily, monthly.")] = "total",
    expires_in_days: Annotated[float | None, typer.Option(help="Expiry (days).")] = None,
    url: Url = DEFAULT_URL,
    master_key: Master = None,
) -> None:
    """Create a key and print its secret (shown this once)."""
    body: dict[str, Any] = {"name": name, "models": model or [], "rpm": rpm, "tpm": tpm,
                            "max_parallel": parallel, "budget_usd": budget,
                            "budget_period": period}
    if expires_in_days is not None:
        body["expires_at"] = datetime.now(UTC).timestamp() + expires_in_days * 86_400
    created = _call("POST", url, "/admin/keys", master_key, json=body)
    out.print(_keys_table([created]))
    out.print(f"secret (shown once, store it now): {created['secret']}")


@keys_app.command("list")
def list_keys(url: Url = DEFAULT_URL, master_key: Master = None) -> None:
    """Every key (revoked ones included)."""
    out.print(_keys_table(_call("GET", url, "/admin/keys", master_key)["data"]))


@keys_app.command("show")
def show(key_id: str, url: Url = DEFAULT_URL, master_key: Master = None) -> None:
    """One key, with its spend in the current budget period."""
    record = _call("GET", url, f"/admin/keys/{key_id}", master_key)
    out.print(_keys_table([record]))
    out.print(f"spent this period: ${record['spent_usd']:.6f}")


@keys_app.command("revoke")
def revoke(key_id: str, url: Url = DEFAULT_URL, master_key: Master = None) -> None:
    """Revoke a key: every gateway instance refuses it within a second."""
    out.print(_keys_table([_call("DELETE", url, f"/admin/keys/{key_id}", master_key)]))


def usage(
    key: Annotated[str | None, typer.Option(help="Only this key id.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    since: Annotated[str | None, typer.Option(help="From (ISO date or epoch s).")] = None,
    until: Annotated[str | None, typer.Option(help="Until (ISO date or epoch s).")] = None,
    group_by: Annotated[str, typer.Option(help="key, model, provider or day.")] = "key",
    url: Url = DEFAULT_URL,
    master_key: Master = None,
) -> None:
    """The usage ledger, aggregated."""
    params = {k: v for k, v in {"key": key, "model": model, "since": since, "until": until,
                                "group_by": group_by}.items() if v}
    rows = _call("GET", url, "/admin/usage", master_key, params=params)["data"]
    table = Table(group_by, "requests", "prompt", "completion", "cached", "cost (USD)",
                  "outcomes")
    for r in rows:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
        table.add_row(r["group"], str(r["requests"]), str(r["prompt_tokens"]),
                      str(r["completion_tokens"]), str(r["cached_tokens"]),
                      f"{r['cost_usd']:.6f}", outcomes)
    out.print(table)
