"""Shared set-up of the Redis-backed benchmarks (``keys.py``, ``resumable.py``): the Node mock
on the load core, a throwaway ``redis-server``, and one gateway pinned to the target core with
``state.backend: redis``; and a measured load (warm-up first) with the gateway's and Redis's
CPU time (s) over it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import procs
from procs import BENCH, LOAD_CORE, ROOT, TARGET_CORE, VENV_BIN, Proc


@dataclass
class Setup:
    port: int
    gateway: Proc
    redis: subprocess.Popen[bytes]


@dataclass
class Measured:
    result: dict[str, Any]  # the load generator's JSON
    gateway_cpu_s: float
    redis_cpu_s: float

    @property
    def chunks(self) -> int:
        return max(1, int(self.result["chunks_total"]))

    @property
    def completed(self) -> int:
        return max(1, int(self.result["completed"]))


@contextlib.contextmanager
def redis_gateway(name: str, chunks: int, gap_ms: int, config: str = "") -> Iterator[Setup]:
    """Mock, Redis and gateway (``config``: more YAML lines, e.g. a ``server:`` section),
    stopped on exit."""
    work = BENCH / ".work"
    work.mkdir(exist_ok=True)
    mock_port = procs.free_port()
    mock = procs.spawn("mock", ["node", str(BENCH / "mock_upstream.js"), "--port",
                                str(mock_port), "--chunks", str(chunks), "--gap-ms",
                                str(gap_ms)], mock_port, LOAD_CORE, work)
    redis_proc = None
    gateway = None
    try:
        procs.wait_http(f"http://127.0.0.1:{mock_port}/v1/models", mock, 30)
        redis_proc, redis_url = procs.start_redis(work / "redis")
        path = work / f"{name}.yaml"
        path.write_text("embedded_model: false\nmodels:\n  - name: mock\n    provider: openai\n"
                        f"    base_url: http://127.0.0.1:{mock_port}/v1\n{config}"
                        f"state:\n  backend: redis\n  url: {redis_url}\n", encoding="utf-8")
        port = procs.free_port()
        gateway = procs.spawn("sluicegate", [str(VENV_BIN / "sluicegate"), "serve", "--config",
                                             str(path), "--port", str(port)], port,
                              TARGET_CORE, work)
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", gateway, 60)
        yield Setup(port, gateway, redis_proc)
    finally:
        if gateway is not None:
            gateway.stop()
        mock.stop()
        if redis_proc is not None:
            procs.stop_redis(redis_proc)


def measured_load(setup: Setup, concurrency: int, streams: int, *loadgen_args: str) -> Measured:
    """A warm-up of ``concurrency`` streams, then ``streams`` measured (``loadgen.py`` on the
    load core, with ``loadgen_args`` such as ``--api-key K`` or ``--resumable``)."""
    out = BENCH / ".work" / "redis-gateway-load.json"

    def load(n: int) -> dict[str, Any]:
        argv = ["taskset", "-c", LOAD_CORE, sys.executable, str(BENCH / "loadgen.py"),
                "--url", f"http://127.0.0.1:{setup.port}/v1/chat/completions",
                "--model", "mock", "--concurrency", str(concurrency), "--streams", str(n),
                "--max-seconds", "300", "--include-usage", "--out", str(out), *loadgen_args]
        subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, timeout=400,
                       preexec_fn=procs.die_with_parent)
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    load(concurrency)
    gateway_before = procs.cpu_seconds(setup.gateway.pid)
    redis_before = procs.cpu_seconds(setup.redis.pid)
    result = load(streams)
    return Measured(result, procs.cpu_seconds(setup.gateway.pid) - gateway_before,
                    procs.cpu_seconds(setup.redis.pid) - redis_before)
