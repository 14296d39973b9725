"""Quick A/B of the streaming scenario: targets alternated in one run, CPU µs per chunk and TTFT.

    python bench/ab.py passthrough sluicegate passthrough sluicegate
    GAP=0 python bench/ab.py passthrough sluicegate            # the saturation scenario
    CHUNKS=8 GAP=0 CONC=100 python bench/ab.py passthrough sluicegate   # short streams
    OLD_SRC=/tmp/old/src python bench/ab.py sluicegate-old sluicegate   # another revision
    python bench/ab.py sluicegate sluicegate-otel   # OpenTelemetry off / on (OTLP to a sink)

``sluicegate-old`` runs the gateway with ``PYTHONPATH=$OLD_SRC`` (e.g. the ``src`` of a
``git worktree`` of an older commit), so two revisions are compared side by side on one
noisy machine. ``CONC`` concurrent streams (default 200) of ``CHUNKS`` chunks (default 64),
``GAP`` ms apart (default 20), ``STREAMS`` measured streams (default 1,500) after ``CONC`` of
warm-up. ``sluicegate-otel`` turns telemetry on (``SLUICEGATE_TELEMETRY=true``) and exports
spans and metrics over OTLP/HTTP to ``otlp_sink.py`` (batched, every 1 s). Prints CPU µs per
chunk and per request (the target's CPU time over the run) and TTFT; the full suite is
``bench/run.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import procs
import run


def main(kinds: list[str]) -> None:
    work = Path(__file__).parent / ".work"
    work.mkdir(exist_ok=True)
    bench = run.Bench(work, False, True)
    spawn = procs.spawn
    gap = int(os.environ.get("GAP", "20"))
    chunks = int(os.environ.get("CHUNKS", "64"))
    conc = int(os.environ.get("CONC", "200"))
    streams = int(os.environ.get("STREAMS", "1500"))
    old_env = {"PYTHONPATH": os.environ.get("OLD_SRC", "")}

    def spawn_old(*args: Any, **kwargs: Any) -> procs.Proc:
        return spawn(*args, **{**kwargs, "env": old_env})

    sink: procs.Proc | None = None
    otel_env: dict[str, str] = {}
    if "sluicegate-otel" in kinds:
        port = procs.free_port()
        sink = spawn("otlp-sink", [sys.executable, str(Path(__file__).parent / "otlp_sink.py"),
                                   "--port", str(port)], port, run.LOAD_CORE, work)
        otel_env = {"SLUICEGATE_TELEMETRY": "true",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                    "OTEL_BSP_SCHEDULE_DELAY": "1000", "OTEL_METRIC_EXPORT_INTERVAL": "1000"}

    def spawn_otel(*args: Any, **kwargs: Any) -> procs.Proc:
        return spawn(*args, **{**kwargs, "env": otel_env})

    for kind in kinds:
        target = "sluicegate" if kind.startswith("sluicegate") else kind
        procs.spawn = {"sluicegate-old": spawn_old, "sluicegate-otel": spawn_otel}.get(kind, spawn)
        with bench.served(target, chunks, gap) as (proc, base, model, key):
            bench.load(base, model, key, concurrency=conc, streams=conc, tag="ab-warm")
            r = bench.measured_load(proc, base, model, key, concurrency=conc, streams=streams,
                                    tag="ab")
        per_request = r["target_cpu_s"] * 1e6 / max(1, r["completed"])
        print(f"{kind}: {r['cpu_us_per_chunk']:.1f} µs/chunk, {per_request:.0f} µs/request, "
              f"TTFT p50 {r['ttft_ms']['p50']:.1f} ms, p99 {r['ttft_ms']['p99']:.1f} ms",
              flush=True)
    procs.spawn = spawn
    if sink is not None:
        import httpx

        got = httpx.get(f"http://127.0.0.1:{sink.port}/", timeout=5).text
        print(f"OTLP sink received {got} bytes", flush=True)
        sink.stop()


if __name__ == "__main__":
    main(sys.argv[1:] or ["passthrough", "sluicegate"])
