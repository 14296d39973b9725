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

from redis_gateway import measured_load, redis_gateway


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--gap-ms", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--streams", type=int, default=1500)
    parser.add_argument("--order", default="plain,resumable,plain,resumable")
    args = parser.parse_args()
    with redis_gateway("resumable", args.chunks, args.gap_ms) as setup:
        for kind in args.order.split(","):
            extra = ["--resumable"] if kind == "resumable" else []
            m = measured_load(setup, args.concurrency, args.streams, *extra)
            r, ttft = m.result, m.result["ttft_ms"]
            print(f"{kind}: {m.gateway_cpu_s * 1e6 / m.chunks:.1f} µs/chunk, "
                  f"{m.gateway_cpu_s * 1e6 / m.completed:.0f} µs/request (redis "
                  f"{m.redis_cpu_s * 1e6 / m.chunks:.1f} µs/chunk), TTFT p50 "
                  f"{ttft['p50']:.2f} ms, p99 {ttft['p99']:.2f} ms, "
                  f"{r['chunks_per_s']:.0f} chunks/s, errors {r['errors']}", flush=True)


if __name__ == "__main__":
    main()
