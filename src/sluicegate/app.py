"""Running the gateway: an aiohttp server on uvloop with handler cancellation on disconnect."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .config import GatewayConfig
from .server import Gateway

__all__ = ["run_server", "start_server"]

log = logging.getLogger("sluicegate")


class _NoRawRequests(logging.Filter):
    """aiohttp logs a request it cannot parse with the raw bytes in the exception (headers,
    ``Authorization`` and body included). Keep the fact, drop the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "refused a malformed HTTP request (%s, status %s)"
            record.args = (type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


http_log = logging.getLogger("sluicegate.http")
"""The HTTP server's own log (aiohttp's ``server_logger`` otherwise), without raw requests."""
http_log.addFilter(_NoRawRequests())


async def start_server(
    config: GatewayConfig, gateway: Gateway | None = None, *, reuse_port: bool = False
) -> tuple[web.AppRunner, int]:
    """Start serving in the running loop; returns the runner and the bound port.

    ``handler_cancellation=True`` makes aiohttp cancel a handler when its client disconnects,
    which is what stops upstream work at once. Port 0 binds a free port.
    """
    gateway = gateway or Gateway(config)
    # aiohttp's keep-alive timer runs from the connection's start and from each response's end,
    # and closes a connection that has not delivered a whole request head by then: with a
    # short limit it is the header-read timeout that stops slowloris connections.
    runner = web.AppRunner(gateway.build_app(), handler_cancellation=True, access_log=None,
                           logger=http_log, keepalive_timeout=config.server.header_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port, backlog=2048,
                       reuse_port=reuse_port or None)
    await site.start()
    port = config.server.port
    for address in runner.addresses:
        port = int(address[1])
        break
    return runner, port


def run_server(config: GatewayConfig, on_ready: Callable[[int], None] | None = None, *,
               reuse_port: bool = False) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly (blocking). Uses uvloop.
    ``reuse_port``: bind with ``SO_REUSEPORT``, so worker processes share the port."""

    async def main() -> None:
        gateway = Gateway(config)
        runner, port = await start_server(config, gateway, reuse_port=reuse_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if on_ready is not None:
            on_ready(port)
        try:
            await stop.wait()
            # No new connections; live streams get the grace period, then the error frame.
            for site in list(runner.sites):
                await site.stop()
            await gateway.shutdown(config.server.shutdown_grace_s)
        finally:
            # Closes what is left (upstream connections, local jobs) and the providers.
            await runner.cleanup()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(main())
    else:
        uvloop.run(main())
