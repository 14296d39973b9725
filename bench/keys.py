"""What a virtual key costs: requests with the master key against requests with a virtual key
(rpm, tpm and budget set, so every limit is reserved and settled, and each request is written
to the ledger), on Redis, alternated in one run.

One gateway (pinned to the target core, as in ``run.py``) with ``state.backend: redis`` (a
throwaway ``redis-server``, unpinned) and a master key, in front of the Node mock; the load
generator on its own core sends ``--concurrency`` streams of ``--chunks`` chunks ``--gap-ms``
apart with the master key and then with the virtual key, in turn (default master, keyed,
master, keyed). Prints the gateway's CPU µs per request, TTFT p50/p99; Redis's own CPU per
request is printed apart (paid on another core).

Usage: ``python bench/keys.py [--chunks 8] [--gap-ms 0] [--concurrency 50] [--streams 3000]
[--order master,keyed,master,keyed]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import httpx
import procs
from procs import BENCH, LOAD_CORE, ROOT, TARGET_CORE, VENV_BIN

MASTER = "sk-bench-master-key"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--gap-ms", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--streams", type=int, default=3000)
    parser.add_argument("--order", default="master,keyed,master,keyed")
    args = parser.parse_args()
    work = BENCH / ".work"
    work.mkdir(exist_ok=True)
    mock_port = procs.free_port()
    mock = procs.spawn("mock", ["node", str(BENCH / "mock_upstream.js"), "--port",
                                str(mock_port), "--chunks", str(args.chunks), "--gap-ms",
                                str(args.gap_ms)], mock_port, LOAD_CORE, work)
    procs.wait_http(f"http://127.0.0.1:{mock_port}/v1/models", mock, 30)
    redis_proc, redis_url = procs.start_redis(work / "redis")
    config = work / "keys.yaml"
    config.write_text("embedded_model: false\nmodels:\n  - name: mock\n    provider: openai\n"
                      f"    base_url: http://127.0.0.1:{mock_port}/v1\n"
                      "    price: {input_per_mtok: 1, output_per_mtok: 2}\n"
                      f"server:\n  api_key: {MASTER}\n"
                      f"state:\n  backend: redis\n  url: {redis_url}\n", encoding="utf-8")
    port = procs.free_port()
    gateway = procs.spawn("sluicegate", [str(VENV_BIN / "sluicegate"), "serve", "--config",
                                         str(config), "--port", str(port)], port, TARGET_CORE,
                          work)
    procs.wait_http(f"http://127.0.0.1:{port}/healthz", gateway, 60)
    created = httpx.post(f"http://127.0.0.1:{port}/admin/keys",
                         headers={"Authorization": f"Bearer {MASTER}"},
                         json={"name": "bench", "rpm": 1_000_000, "tpm": 1_000_000_000,
                               "budget_usd": 1_000_000, "budget_period": "daily"}).json()
    secrets = {"master": MASTER, "keyed": created["secret"]}
    out = work / "keys.json"

    def load(streams: int, kind: str) -> dict[str, object]:
        argv = ["taskset", "-c", LOAD_CORE, sys.executable, str(BENCH / "loadgen.py"),
                "--url", f"http://127.0.0.1:{port}/v1/chat/completions", "--model", "mock",
                "--api-key", secrets[kind],
                "--concurrency", str(args.concurrency), "--streams", str(streams),
                "--max-seconds", "300", "--include-usage", "--out", str(out)]
        subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, timeout=400,
                       preexec_fn=procs.die_with_parent)
        result: dict[str, object] = json.loads(out.read_text())
        return result

    try:
        for kind in args.order.split(","):
            load(args.concurrency, kind)  # warm-up
            gw_before = procs.cpu_seconds(gateway.pid)
            redis_before = procs.cpu_seconds(redis_proc.pid)
            r = load(args.streams, kind)
            gw_cpu = procs.cpu_seconds(gateway.pid) - gw_before
            redis_cpu = procs.cpu_seconds(redis_proc.pid) - redis_before
            done = max(1, int(r["completed"]))  # type: ignore[call-overload]
            ttft = r["ttft_ms"]
            assert isinstance(ttft, dict)
            print(f"{kind}: {gw_cpu * 1e6 / done:.0f} µs/request (redis "
                  f"{redis_cpu * 1e6 / done:.0f} µs/request), TTFT p50 {ttft['p50']:.2f} ms, "
                  f"p99 {ttft['p99']:.2f} ms, errors {r['errors']}", flush=True)
    finally:
        gateway.stop()
        mock.stop()
        procs.stop_redis(redis_proc)


if __name__ == "__main__":
    main()
