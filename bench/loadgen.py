"""Streaming load generator for OpenAI-dialect ``/chat/completions`` endpoints (asyncio + uvloop).

    python bench/loadgen.py --url URL --model M [--api-key K] (--concurrency C | --rate R)
                            --streams N [--max-seconds S] [--include-usage] [--hold]
                            [--out result.json]

``--url`` is the full endpoint, e.g. ``http://127.0.0.1:8000/v1/chat/completions``.

- ``--concurrency C``: C streams in flight until N have been started (closed loop).
- ``--rate R``: open loop, R stream starts per second (``--arrivals uniform|poisson``).
- ``--max-seconds S`` (default 120) bounds the whole run; streams still open then are cancelled
  and counted as ``incomplete``.
- ``--hold``: memory-test mode. Opens N streams, waits until every one has received its first
  data event, prints ``holding <n_open>`` on stdout, keeps reading (and discarding) until stdin
  gets a line or closes (or ``--max-seconds`` passes), then closes them all and prints the JSON
  summary.
- Stream (worker) starts are ramped at most ``--ramp`` per second: default 200/s, so C=200
  workers start over 1 s (cold-connection bursts on a shared core otherwise inflate the first
  wave's TTFT to ~200 ms, and staggered starts avoid synchronised waves), and 2000/s with
  ``--hold``; and while ramping, no more than 256 started streams may still be waiting for
  their first event, so a slow target's accept queue is never flooded.

Every stream's outcome is exactly one of ``completed`` (got ``data: [DONE]``), ``errors``
(non-200 status or an exception), ``no_done`` (200 but the body ended without ``[DONE]``) and
``incomplete`` (cancelled by ``--max-seconds`` or the end of ``--hold``).

TTFT runs from just before the request is sent to the first *content* event (non-empty
``choices[0].delta.content``); gaps are between consecutive content events of one stream.
Times are taken once per socket read, so events arriving in the same read share a timestamp.
Content detection is a byte search for ``"content":"`` (or ``"content": "``) followed by a
byte other than ``"``; a JSON string value cannot contain an unescaped ``"``, so a hit is
always a real ``content`` key with a non-empty string value. The first hit of each stream is
confirmed with orjson; if it is not ``choices[0].delta.content``, that stream falls back to
parsing every event.

JSON goes to ``--out``, or to stdout (one line, after ``holding N`` in ``--hold`` mode) when
there is no ``--out``; a one-line human summary goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import resource
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import uvloop
import yarl

perf = time.perf_counter
GAP_SAMPLE_CAP = 200_000
MAX_PENDING = 256  # while ramping, at most this many started streams without a first event
_DONE = b"[DONE]"
_PAT = b'"content":"'
_PAT_SP = b'"content": "'
_DIALECT_MARKERS = {  # (content event, end of stream), as sluicegate's egresses write them
    "messages": (b'"type":"text_delta"', b"event: message_stop"),
    "responses": (b"event: response.output_text.delta", b"event: response.completed"),
}


def _content_slow(payload: bytes) -> bool:
    """Exact check: does this event carry a non-empty ``choices[0].delta.content``?"""
    try:
        obj = orjson.loads(payload)
        content = obj["choices"][0]["delta"].get("content")
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return False
    return isinstance(content, str) and content != ""


def _content_fast(ev: bytes) -> bool:
    """Byte search for a ``"content"`` key whose value is a non-empty string."""
    for pat in (_PAT, _PAT_SP):
        i = ev.find(pat)
        while i >= 0:
            j = i + len(pat)
            if j < len(ev) and ev[j] != 0x22:
                return True
            i = ev.find(pat, j)
    return False


def _data_payload(ev: bytes) -> bytes | None:
    """Data of an SSE event (multi-line ``data:`` fields joined); None if it has no data."""
    lines = [ln[5:] for ln in ev.split(b"\n") if ln.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(ln[1:] if ln.startswith(b" ") else ln for ln in lines)


def _pct(vals: list[float], q: float) -> float | None:
    if not vals:
        return None
    pos = q * (len(vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url = yarl.URL(args.url)  # parsed once, not per request
        body: dict[str, Any] = {
            "model": args.model,
            "messages": [{"role": "user", "content": "bench"}],
            "stream": True,
        }
        self.dialect = args.dialect
        if args.dialect == "messages":  # Anthropic Messages (sluicegate's /v1/messages)
            body["max_tokens"] = 4096
        elif args.dialect == "responses":  # OpenAI Responses (sluicegate's /v1/responses)
            body = {"model": args.model, "input": "bench", "stream": True}
        options: dict[str, bool] = {}
        if args.include_usage:
            options["include_usage"] = True
        if args.resumable:
            options["resumable"] = True  # sluicegate's resumable streams
        if options:
            body["stream_options"] = options
        self.body = orjson.dumps(body)
        self.headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if args.api_key:
            self.headers["Authorization"] = f"Bearer {args.api_key}"
        self.session: aiohttp.ClientSession | None = None
        # counters
        self.started = 0
        self.completed = 0
        self.errors = 0
        self.no_done = 0
        self.incomplete = 0
        self.chunks_total = 0
        self.content_total = 0
        self.n_open = 0  # got a first event and not finished yet
        self.max_open = 0
        self.ev_min = 1 << 62  # data events per completed stream
        self.ev_max = 0
        self.n_settled = 0  # opened at least once, or finished without opening
        self.error_samples: dict[str, int] = {}
        self.ttft = array("d")  # seconds
        self.gaps = array("d")  # seconds
        self.all_open = asyncio.Event()
        self.target_open = 0
        self.stopping = False
        self.tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ one stream
    async def stream(self) -> None:
        if self.dialect != "chat":
            return await self._stream_dialect(*_DIALECT_MARKERS[self.dialect])
        self.started += 1
        assert self.session is not None
        status = 0
        events = 0
        content = 0
        done = False
        opened = False
        cancelled = False
        err: str | None = None
        verified = False
        slow = False
        first = last = 0.0
        gap_append = self.gaps.append
        buf = b""
        t0 = perf()
        try:
            async with self.session.post(self.url, data=self.body, headers=self.headers) as resp:
                status = resp.status
                if status != 200:
                    text = await resp.read()
                    err = f"HTTP {status}: {text[:160].decode('utf-8', 'replace')}"
                    return
                readany = resp.content.readany
                while True:
                    data = await readany()
                    if not data:
                        break
                    now = perf()
                    if buf:
                        data = buf + data
                    if b"\r" in data:
                        data = data.replace(b"\r\n", b"\n")
                    parts = data.split(b"\n\n")
                    buf = parts.pop()
                    for ev in parts:
                        if ev.startswith(b"data:") and b"\n" not in ev:
                            if ev.endswith(_DONE) and ev[5:].strip() == _DONE:
                                done = True
                                continue
                            payload: bytes | None = None
                        else:
                            payload = _data_payload(ev)
                            if payload is None:
                                continue  # comment / event-name only / blank
                            if payload.strip() == _DONE:
                                done = True
                                continue
                        events += 1
                        if slow:
                            if payload is None:
                                payload = ev[5:]
                            hit = _content_slow(payload)
                        else:
                            hit = _content_fast(ev)
                            if hit and not verified:
                                verified = True
                                if payload is None:
                                    payload = ev[5:]
                                if not _content_slow(payload):
                                    slow = True
                                    hit = False
                        if hit:
                            content += 1
                            if first:
                                gap_append(now - last)
                            else:
                                first = now
                            last = now
                    if events and not opened:
                        opened = True
                        self._opened()
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            self._ended(opened, events, content, first - t0 if first else None, err, done,
                        cancelled or status == 0)

    async def _stream_dialect(self, content_marker: bytes, done_marker: bytes) -> None:
        """One stream of another dialect's named events: an event holding ``content_marker``
        is a content event; the one holding ``done_marker`` ends the stream."""
        self.started += 1
        assert self.session is not None
        events = content = 0
        done = opened = cancelled = False
        status = 0
        err: str | None = None
        first = last = 0.0
        buf = b""
        t0 = perf()
        try:
            async with self.session.post(self.url, data=self.body, headers=self.headers) as resp:
                status = resp.status
                if status != 200:
                    err = f"HTTP {status}: {(await resp.read())[:160].decode('utf-8', 'replace')}"
                    return
                while data := await resp.content.readany():
                    now = perf()
                    parts = (buf + data).split(b"\n\n")
                    buf = parts.pop()
                    for ev in parts:
                        if not ev or ev.startswith(b":"):
                            continue
                        events += 1
                        if content_marker in ev:
                            content += 1
                            if first:
                                self.gaps.append(now - last)
                            else:
                                first = now
                            last = now
                        elif done_marker in ev:
                            done = True
                    if events and not opened:
                        opened = True
                        self._opened()
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            self._ended(opened, events, content, first - t0 if first else None, err, done,
                        cancelled or status == 0)

    def _ended(self, opened: bool, events: int, content: int, ttft: float | None,
               err: str | None, done: bool, incomplete: bool) -> None:
        """Count one finished stream (``ttft`` in s; None without content)."""
        if opened:
            self.n_open -= 1
        else:
            self._settled()
        self.chunks_total += events
        self.content_total += content
        if ttft is not None:
            self.ttft.append(ttft)
        if err is not None:
            self.errors += 1
            if len(self.error_samples) < 20 or err in self.error_samples:
                self.error_samples[err] = self.error_samples.get(err, 0) + 1
        elif done:
            self.completed += 1
            self.ev_min = min(self.ev_min, events)
            self.ev_max = max(self.ev_max, events)
        elif incomplete:
            self.incomplete += 1
        else:
            self.no_done += 1

    def _opened(self) -> None:
        self.n_open += 1
        self.max_open = max(self.max_open, self.n_open)
        self._settled()

    def _settled(self) -> None:
        self.n_settled += 1
        if self.target_open and self.n_settled >= self.target_open:
            self.all_open.set()

    # ------------------------------------------------------------------ drivers
    def _spawn(self) -> None:
        task = asyncio.get_running_loop().create_task(self.stream())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _worker(self) -> None:
        while self.started < self.args.streams and not self.stopping:
            await self.stream()

    async def _ramped(self, count: int, start_one: Callable[[], None]) -> None:
        """Call ``start_one()`` count times, at most --ramp per second (10 ms batches)."""
        per_tick = max(1, int(self.args.ramp / 100))
        t = perf()
        for i in range(count):
            while self.started - self.n_settled >= MAX_PENDING and not self.stopping:
                await asyncio.sleep(0.005)  # target (or this core) is behind: let it catch up
                t = perf()
            if self.stopping:
                return
            start_one()
            if (i + 1) % per_tick == 0 and i + 1 < count:
                t += 0.01
                delay = t - perf()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def closed_loop(self) -> None:
        n = min(self.args.concurrency, self.args.streams)
        workers: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()

        def start_worker() -> None:
            workers.append(loop.create_task(self._worker()))

        await self._ramped(n, start_worker)
        await asyncio.gather(*workers)

    async def open_loop(self) -> None:
        rate = self.args.rate
        rng = random.Random(self.args.seed)
        t_start = perf()
        due = t_start
        for k in range(self.args.streams):
            if self.stopping:
                break
            due = t_start + k / rate if self.args.arrivals == "uniform" else due
            delay = due - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            self._spawn()
            if self.args.arrivals == "poisson":
                due += rng.expovariate(rate)
        while self.tasks:
            await asyncio.gather(*list(self.tasks))

    async def hold(self, deadline: float) -> None:
        n = self.args.streams
        self.target_open = n
        await self._ramped(n, self._spawn)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_open.wait(), max(0.0, deadline - perf()))
        print(f"holding {self.n_open}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_stdin_line_or_eof(), max(0.0, deadline - perf()))

    # ------------------------------------------------------------------ main
    async def run(self) -> float:
        a = self.args
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=30, sock_read=None)
        t_start = perf()
        deadline = t_start + a.max_seconds
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self.session = session
            if a.hold:
                driver = self.hold(deadline)
            elif a.rate:
                driver = self.open_loop()
            else:
                driver = self.closed_loop()
            main = asyncio.get_running_loop().create_task(driver)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(main), a.max_seconds)
            self.stopping = True
            main.cancel()
            for t in list(self.tasks):
                t.cancel()
            await asyncio.gather(main, *list(self.tasks), return_exceptions=True)
            duration = perf() - t_start
        return duration

    def summary(self, duration: float) -> dict[str, Any]:
        a = self.args
        ttft = sorted(x * 1000.0 for x in self.ttft)
        gaps = sorted(x * 1000.0 for x in self.gaps)
        if len(self.gaps) > GAP_SAMPLE_CAP:
            step = len(self.gaps) / GAP_SAMPLE_CAP
            sample = [self.gaps[int(i * step)] * 1000.0 for i in range(GAP_SAMPLE_CAP)]
        else:
            sample = [x * 1000.0 for x in self.gaps]
        return {
            "url": str(a.url),
            "model": a.model,
            "mode": "hold" if a.hold else ("rate" if a.rate else "concurrency"),
            "concurrency": a.concurrency,
            "rate": a.rate,
            "streams": a.streams,
            "streams_started": self.started,
            "completed": self.completed,
            "errors": self.errors,
            "no_done": self.no_done,
            "incomplete": self.incomplete,
            "max_open": self.max_open,
            "chunks_total": self.chunks_total,
            "content_chunks_total": self.content_total,
            "events_per_completed_stream": {
                "min": self.ev_min if self.completed else None,
                "max": self.ev_max if self.completed else None,
            },
            "duration_s": round(duration, 4),
            "chunks_per_s": round(self.chunks_total / duration, 2) if duration > 0 else 0.0,
            "ttft_ms": {
                "p50": _r(_pct(ttft, 0.5)),
                "p90": _r(_pct(ttft, 0.9)),
                "p99": _r(_pct(ttft, 0.99)),
                "max": _r(ttft[-1] if ttft else None),
                "mean": _r(sum(ttft) / len(ttft) if ttft else None),
            },
            "gap_ms": {
                "p50": _r(_pct(gaps, 0.5)),
                "p90": _r(_pct(gaps, 0.9)),
                "p99": _r(_pct(gaps, 0.99)),
                "max": _r(gaps[-1] if gaps else None),
                "mean": _r(sum(gaps) / len(gaps) if gaps else None),
                "n": len(gaps),
            },
            "error_samples": self.error_samples,
            "ttft_samples_ms": [round(x * 1000.0, 3) for x in self.ttft],
            "gap_samples_ms": [round(x, 3) for x in sample],
        }


async def _stdin_line_or_eof() -> None:
    """Wait for a line on stdin or its end, without touching the fd's blocking flag."""
    loop = asyncio.get_running_loop()
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return  # no stdin at all: treat as closed
    fut: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if (not data or b"\n" in data) and not fut.done():
            fut.set_result(None)

    try:
        loop.add_reader(fd, on_readable)
    except (OSError, ValueError):
        return  # a regular file or /dev/null cannot be polled: it is at EOF or has its line
    try:
        await fut
    finally:
        loop.remove_reader(fd)


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Streaming load generator for chat/completions.")
    p.add_argument("--url", required=True, help="full endpoint URL, e.g. .../v1/chat/completions")
    p.add_argument("--model", required=True)
    p.add_argument("--api-key", default=None)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--concurrency", type=int, help="streams kept in flight (closed loop)")
    g.add_argument("--rate", type=float, help="stream starts per second (open loop)")
    p.add_argument("--streams", type=int, required=True, help="number of streams to start")
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.add_argument("--include-usage", action="store_true")
    p.add_argument("--dialect", choices=("chat", "messages", "responses"), default="chat",
                   help="the API spoken at --url (messages: Anthropic, responses: OpenAI)")
    p.add_argument("--resumable", action="store_true",
                   help="ask sluicegate for resumable streams (stream_options.resumable)")
    p.add_argument("--hold", action="store_true", help="open N streams, hold until stdin")
    p.add_argument("--out", default=None, help="write the JSON result here")
    p.add_argument(
        "--arrivals",
        choices=("uniform", "poisson"),
        default="uniform",
        help="arrival process for --rate (default uniform)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed for poisson arrivals")
    p.add_argument(
        "--ramp",
        type=float,
        default=None,
        help="max stream (or worker) starts per second while ramping up "
        "(default 200, or 2000 with --hold)",
    )
    a = p.parse_args(argv)
    if a.streams < 1:
        p.error("--streams must be >= 1")
    if a.concurrency is not None and a.concurrency < 1:
        p.error("--concurrency must be >= 1")
    if a.rate is not None and a.rate <= 0:
        p.error("--rate must be > 0")
    if a.hold and a.rate is not None:
        p.error("--hold needs --concurrency (it opens --streams streams at once)")
    if a.ramp is None:
        a.ramp = 2000.0 if a.hold else 200.0
    if a.ramp <= 0:
        p.error("--ramp must be > 0")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _raise_nofile((args.concurrency or 0) + 256 if not args.rate else args.streams + 256)
    gen_box: list[LoadGen] = []

    async def amain() -> float:
        gen = LoadGen(args)
        gen_box.append(gen)
        return await gen.run()

    duration = uvloop.run(amain())
    res = gen_box[0].summary(duration)
    blob = orjson.dumps(res)
    if args.out:
        with open(args.out, "wb") as f:
            f.write(blob)
    if not args.out:
        sys.stdout.buffer.write(blob + b"\n")
        sys.stdout.flush()
    t, g = res["ttft_ms"], res["gap_ms"]
    print(
        f"loadgen: started={res['streams_started']} completed={res['completed']} "
        f"errors={res['errors']} no_done={res['no_done']} incomplete={res['incomplete']} "
        f"chunks={res['chunks_total']} ({res['chunks_per_s']}/s) in {res['duration_s']}s | "
        f"ttft ms p50={t['p50']} p99={t['p99']} max={t['max']} | "
        f"gap ms p50={g['p50']} p99={g['p99']} max={g['max']}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
