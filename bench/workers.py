"""``serve --workers N`` against one worker: chunks/s and TTFT at saturation, alternated.

Short streams (``--chunks`` chunks, no gap) from the Node mock upstream, ``--concurrency``
streams in flight, ``--streams`` measured after 500 of warm-up, for each worker count in turn
(default 1, 2, 1, 2). Workers share state in a throwaway ``redis-server`` (``procs.start_redis``;
every run uses it, one worker too). Nothing is pinned: the gateway's workers, the mock, Redis and
the load generator share the machine's cores, as on a small server. Prints one line per run.

Usage: ``python bench/workers.py [--workers 1,2,1,2] [--chunks 8] [--concurrency 100]``.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time

import httpx
import procs
from procs import BENCH, VENV_BIN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,1,2")
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--streams", type=int, default=6000)
    args = parser.parse_args()
    work = BENCH / ".work"
    work.mkdir(exist_ok=True)
    mock_port = procs.free_port()
    mock = subprocess.Popen(["node", str(BENCH / "mock_upstream.js"), "--port", str(mock_port),
                             "--chunks", str(args.chunks), "--gap-ms", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=procs.die_with_parent)
    redis_proc, redis_url = procs.start_redis(work / "redis")
    config = work / "workers.yaml"
    config.write_text("embedded_model: false\nmodels:\n  - name: mock\n    provider: openai\n"
                      f"    base_url: http://127.0.0.1:{mock_port}/v1\n"
                      f"state:\n  backend: redis\n  url: {redis_url}\n", encoding="utf-8")
    out = work / "workers.json"
    try:
        for workers in (int(n) for n in args.workers.split(",")):
            port = procs.free_port()
            gateway = subprocess.Popen(
                [str(VENV_BIN / "sluicegate"), "serve", "--workers", str(workers), "--port",
                 str(port), "--config", str(config)], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, preexec_fn=procs.die_with_parent)
            url = f"http://127.0.0.1:{port}"

            def load(streams: int, url: str = url) -> dict[str, object]:
                subprocess.run(
                    [sys.executable, str(BENCH / "loadgen.py"), "--url",
                     url + "/v1/chat/completions", "--model", "mock", "--concurrency",
                     str(args.concurrency), "--streams", str(streams), "--max-seconds", "120",
                     "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    check=True, timeout=180, preexec_fn=procs.die_with_parent)
                result: dict[str, object] = json.loads(out.read_text())
                return result

            try:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        httpx.get(url + "/healthz", timeout=1)
                        break
                    except httpx.HTTPError:
                        if time.monotonic() > deadline:
                            raise SystemExit("the gateway did not start") from None
                        time.sleep(0.2)
                load(500)
                r = load(args.streams)
                ttft = r["ttft_ms"]
                assert isinstance(ttft, dict)
                print(f"workers={workers}: {r['completed']} ok, {r['errors']} errors, "
                      f"{r['chunks_per_s']:,.0f} chunks/s, TTFT p50 {ttft['p50']:.1f} ms, "
                      f"p99 {ttft['p99']:.1f} ms", flush=True)
            finally:
                gateway.send_signal(signal.SIGTERM)
                gateway.wait(30)
    finally:
        mock.terminate()
        mock.wait(10)
        procs.stop_redis(redis_proc)


if __name__ == "__main__":
    main()
