"""The ``sluicegate`` command line: ``serve``, ``chat``, ``models``, ``keys`` and ``usage``."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

from .config import ConfigError, load_config
from .sse import SSEDecoder

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="sluicegate: a streaming LLM gateway with an OpenAI-compatible API.")
console = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)

DEFAULT_URL = "http://127.0.0.1:8400"


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key or os.environ.get("SLUICEGATE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (0: any free port).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config file.")] = None,
    lazy: Annotated[bool, typer.Option(help="Load local models on first use.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Processes serving one port.")] = 1,
    reuse_port: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Start the gateway (blocking). With no config it serves the embedded local model.

    ``--workers N`` runs N processes on one port (``SO_REUSEPORT``; see ``sluicegate.workers``).
    """
    from .app import run_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The logging HOWTO's "Optimization" knobs: no record carries fields the format does not
    # print (a usage line per request is on the hot path; ~3 µs a record saved).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # no caller lookup (file, line) per record
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if host is not None:
        cfg.server.host = host
    if port is not None:
        cfg.server.port = port
    if lazy:
        cfg.local.preload = False
    if workers > 1:
        from .state import is_shared
        from .workers import free_port, supervise

        if not is_shared(cfg.state):
            console.print(f"[red]error:[/red] --workers {workers} needs shared state: set "
                          "state.backend: redis and state.url in the config (or "
                          "SLUICEGATE_REDIS_URL=redis://host:6379/0); the memory backend is "
                          "per process")
            raise typer.Exit(2)

        bound = cfg.server.port or free_port(cfg.server.host)
        argv = [sys.executable, "-m", "sluicegate.cli", "serve", "--workers", "1",
                "--reuse-port", "--host", cfg.server.host, "--port", str(bound)]
        argv += ["--config", str(config)] if config is not None else []
        argv += ["--lazy"] if lazy else []
        console.print(f"[bold green]sluicegate[/bold green] starting {workers} workers on "
                      f"http://{cfg.server.host}:{bound}")
        raise typer.Exit(supervise(argv, workers, cfg.server.shutdown_grace_s))
    if cfg.local.preload and cfg.embedded_model:
        console.print("[dim]loading the embedded model…[/dim]")

    def ready(bound: int) -> None:
        console.print(
            f"[bold green]sluicegate[/bold green] listening on "
            f"http://{cfg.server.host}:{bound}  (POST /v1/chat/completions)"
        )

    run_server(cfg, on_ready=ready, reuse_port=reuse_port)
    console.print("[dim]stopped[/dim]")


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    model: Annotated[str, typer.Option(help="Model name on the gateway.")] = "default",
    url: Annotated[str, typer.Option(help="Gateway base URL.")] = DEFAULT_URL,
    max_tokens: Annotated[int, typer.Option(help="Completion limit (tokens).")] = 128,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    system: Annotated[str | None, typer.Option(help="A system message.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Bearer key (or SLUICEGATE_API_KEY).")] = None,
) -> None:
    """Stream a chat completion to the terminal, then print TTFT (ms), tokens and tokens/s."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True,
                            "max_tokens": max_tokens, "stream_options": {"include_usage": True}}
    if temperature is not None:
        body["temperature"] = temperature
    decoder = SSEDecoder()
    start = time.perf_counter()
    first: float | None = None
    usage: dict[str, Any] | None = None
    try:
        with httpx.stream("POST", url.rstrip("/") + "/v1/chat/completions", json=body,
                          headers=_headers(api_key), timeout=httpx.Timeout(10.0, read=300.0)) as r:
            if r.status_code != 200:
                r.read()
                console.print(f"[red]HTTP {r.status_code}[/red] {r.text}")
                raise typer.Exit(1)
            for data in r.iter_raw():
                for event in decoder.feed(data):
                    if event.data.startswith(b"[DONE]"):
                        break
                    chunk = orjson.loads(event.data)
                    if chunk.get("error"):
                        console.print(f"\n[red]stream error:[/red] {chunk['error'].get('message')}")
                        raise typer.Exit(1)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            if first is None:
                                first = time.perf_counter()
                            sys.stdout.write(text)
                            sys.stdout.flush()
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the gateway at {url}:[/red] {exc}")
        raise typer.Exit(1) from None
    end = time.perf_counter()
    sys.stdout.write("\n")
    tokens = int(usage["completion_tokens"]) if usage else 0
    ttft_ms = (first - start) * 1000 if first is not None else float("nan")
    gen_s = end - (first if first is not None else start)
    rate = tokens / gen_s if gen_s > 0 else 0.0
    console.print(f"[dim]TTFT {ttft_ms:.0f} ms · {tokens} tokens · {rate:.1f} tokens/s · "
                  f"{end - start:.2f} s total[/dim]")


@app.command()
def models(
    url: Annotated[str, typer.Option(help="Gateway base URL.")] = DEFAULT_URL,
    api_key: Annotated[str | None, typer.Option(help="Bearer key (or SLUICEGATE_API_KEY).")] = None,
) -> None:
    """List the models the gateway serves."""
    try:
        r = httpx.get(url.rstrip("/") + "/v1/models", headers=_headers(api_key), timeout=10.0)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the gateway at {url}:[/red] {exc}")
        raise typer.Exit(1) from None
    if r.status_code != 200:
        console.print(f"[red]HTTP {r.status_code}[/red] {r.text}")
        raise typer.Exit(1)
    table = Table("model", "owned by")
    for entry in r.json()["data"]:
        table.add_row(entry["id"], entry.get("owned_by", ""))
    out.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()


def _admin_commands() -> None:
    from .keys.cli import keys_app, usage

    app.add_typer(keys_app, name="keys")
    app.command("usage")(usage)


_admin_commands()
