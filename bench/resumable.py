"""What a resumable stream costs: plain against resumable streams on Redis, alternated in one run.

One gateway (pinned to the target core, as in ``run.py``) with ``state.backend: redis`` (a
throwaway ``redis-server``, unpinned) in front of the Node mock; the load generator on its own
core sends ``--concurrency`` streams of ``--chunks`` chunks ``--gap-ms`` apart, plain and then
with ``stream_options.resumable``, in turn (default plain, resumable, plain, resumable). Prints
the gateway's CPU µs per chunk and per request, TTFT p50/p99 and chunks/s; Redis's own CPU is
printed apart (it is the price of the log, paid on another core).

Usage: ``python bench/resumable.py [--chunks 64] [--gap-ms 20] [--concurrency 100]
[--streams 1500] [--order plain,resumable,plain,resumable]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import procs
from procs import BENCH, LOAD_CORE, ROOT, TARGET_CORE, VENV_BIN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--gap-ms", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--streams", type=int, default=1500)
    parser.add_argument("--order", default="plain,resumable,plain,resumable")
    args = parser.parse_args()
    work = BENCH / ".work"
    work.mkdir(exist_ok=True)
    mock_port = procs.free_port()
    mock = procs.spawn("mock", ["node", str(BENCH / "mock_upstream.js"), "--port",
                                str(mock_port), "--chunks", str(args.chunks), "--gap-ms",
                                str(args.gap_ms)], mock_port, LOAD_CORE, work)
    procs.wait_http(f"http://127.0.0.1:{mock_port}/v1/models", mock, 30)
    redis_proc, redis_url = procs.start_redis(work / "redis")
    config = work / "resumable.yaml"
    config.write_text("embedded_model: false\nmodels:\n  - name: mock\n    provider: openai\n"
                      f"    base_url: http://127.0.0.1:{mock_port}/v1\n"
                      f"state:\n  backend: redis\n  url: {redis_url}\n", encoding="utf-8")
    port = procs.free_port()
    gateway = procs.spawn("sluicegate", [str(VENV_BIN / "sluicegate"), "serve", "--config",
                                         str(config), "--port", str(port)], port, TARGET_CORE,
                          work)
    procs.wait_http(f"http://127.0.0.1:{port}/healthz", gateway, 60)
    out = work / "resumable.json"

    def load(streams: int, resumable: bool) -> dict[str, object]:
        argv = ["taskset", "-c", LOAD_CORE, sys.executable, str(BENCH / "loadgen.py"),
                "--url", f"http://127.0.0.1:{port}/v1/chat/completions", "--model", "mock",
                "--concurrency", str(args.concurrency), "--streams", str(streams),
                "--max-seconds", "300", "--include-usage", "--out", str(out)]
        if resumable:
            argv.append("--resumable")
        subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, timeout=400,
                       preexec_fn=procs.die_with_parent)
        result: dict[str, object] = json.loads(out.read_text())
        return result

    try:
        for kind in args.order.split(","):
            resumable = kind == "resumable"
            load(args.concurrency, resumable)  # warm-up
            gw_before = procs.cpu_seconds(gateway.pid)
            redis_before = procs.cpu_seconds(redis_proc.pid)
            r = load(args.streams, resumable)
            gw_cpu = procs.cpu_seconds(gateway.pid) - gw_before
            redis_cpu = procs.cpu_seconds(redis_proc.pid) - redis_before
            chunks = max(1, int(r["chunks_total"]))  # type: ignore[call-overload]
            done = max(1, int(r["completed"]))  # type: ignore[call-overload]
            ttft = r["ttft_ms"]
            assert isinstance(ttft, dict)
            print(f"{kind}: {gw_cpu * 1e6 / chunks:.1f} µs/chunk, "
                  f"{gw_cpu * 1e6 / done:.0f} µs/request (redis {redis_cpu * 1e6 / chunks:.1f} "
                  f"µs/chunk), TTFT p50 {ttft['p50']:.2f} ms, p99 {ttft['p99']:.2f} ms, "
                  f"{r['chunks_per_s']:.0f} chunks/s, errors {r['errors']}", flush=True)
    finally:
        gateway.stop()
        mock.stop()
        procs.stop_redis(redis_proc)


if __name__ == "__main__":
    main()
