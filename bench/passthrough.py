"""Minimal reference proxy: aiohttp in, aiohttp out, every SSE event parsed and re-serialised.

    python bench/passthrough.py --port P --upstream http://127.0.0.1:U/v1

``POST /v1/chat/completions`` forwards the body to ``<upstream>/chat/completions`` over one
pooled ClientSession and streams the answer back; each ``data: {...}`` event goes through
``orjson.loads`` + ``orjson.dumps``, ``[DONE]`` passes through. Prints ``ready <port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal

import aiohttp
import orjson
import uvloop
from aiohttp import web

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def chat(request: web.Request) -> web.StreamResponse:
    session: aiohttp.ClientSession = request.app["session"]
    headers = {"Content-Type": "application/json"}
    if auth := request.headers.get("Authorization"):
        headers["Authorization"] = auth
    async with session.post(request.app["url"], data=await request.read(), headers=headers) as up:
        if up.status != 200 or not up.content_type.startswith("text/event-stream"):
            return web.Response(
                body=await up.read(), status=up.status, content_type=up.content_type
            )
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        buf = b""
        try:
            async for data in up.content.iter_any():
                events = (buf + data).split(b"\n\n")
                buf = events.pop()
                out = [
                    ev + b"\n\n"
                    if ev == b"data: [DONE]"
                    else b"data: " + orjson.dumps(orjson.loads(ev[5:])) + b"\n\n"
                    for ev in events
                    if ev.startswith(b"data:")
                ]
                if out:
                    await resp.write(b"".join(out))
            await resp.write_eof()
        except ConnectionResetError:
            up.close()  # client went away mid-write: drop the upstream stream too
        except BaseException:
            up.close()  # handler cancelled (client gone) or a bad upstream event
            raise
        return resp


async def main(port: int, upstream: str) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:  # two fds per stream: ask for 64k (root may raise the hard limit), else soft = hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 65536),) * 2)
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    app = web.Application()
    app["url"] = upstream.rstrip("/") + "/chat/completions"
    app["session"] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
    )
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    print(f"ready {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    with contextlib.suppress(Exception):
        await runner.cleanup()
    await app["session"].close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="upstream base URL, e.g. http://h:p/v1")
    args = ap.parse_args()
    uvloop.run(main(args.port, args.upstream))
