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

import httpx
from redis_gateway import measured_load, redis_gateway

MASTER = "sk-bench-master-key"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--gap-ms", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--streams", type=int, default=3000)
    parser.add_argument("--order", default="master,keyed,master,keyed")
    args = parser.parse_args()
    price = "    price: {input_per_mtok: 1, output_per_mtok: 2}\n"
    with redis_gateway("keys", args.chunks, args.gap_ms,
                       f"{price}server:\n  api_key: {MASTER}\n") as setup:
        created = httpx.post(f"http://127.0.0.1:{setup.port}/admin/keys",
                             headers={"Authorization": f"Bearer {MASTER}"},
                             json={"name": "bench", "rpm": 1_000_000, "tpm": 1_000_000_000,
                                   "budget_usd": 1_000_000, "budget_period": "daily"}).json()
        secrets = {"master": MASTER, "keyed": created["secret"]}
        for kind in args.order.split(","):
            m = measured_load(setup, args.concurrency, args.streams, "--api-key", secrets[kind])
            ttft = m.result["ttft_ms"]
            print(f"{kind}: {m.gateway_cpu_s * 1e6 / m.completed:.0f} µs/request (redis "
                  f"{m.redis_cpu_s * 1e6 / m.completed:.0f} µs/request), TTFT p50 "
                  f"{ttft['p50']:.2f} ms, p99 {ttft['p99']:.2f} ms, errors {m.result['errors']}",
                  flush=True)


if __name__ == "__main__":
    main()
