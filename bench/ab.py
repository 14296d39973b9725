"""Quick A/B of the streaming scenario: targets alternated in one run, CPU µs per chunk and TTFT.

    python bench/ab.py passthrough sluicegate passthrough sluicegate
    GAP=0 python bench/ab.py passthrough sluicegate            # the saturation scenario
    CHUNKS=8 GAP=0 CONC=100 python bench/ab.py passthrough sluicegate   # short streams
    OLD_SRC=/tmp/old/src python bench/ab.py sluicegate-old sluicegate   # another revision

``sluicegate-old`` runs the gateway with ``PYTHONPATH=$OLD_SRC`` (e.g. the ``src`` of a
``git worktree`` of an older commit), so two revisions are compared side by side on one
noisy machine. ``CONC`` concurrent streams (default 200) of ``CHUNKS`` chunks (default 64),
``GAP`` ms apart (default 20), ``STREAMS`` measured streams (default 1,500) after ``CONC`` of
warm-up. Prints CPU µs per chunk and per request (the target's CPU time over the run) and TTFT;
the full suite is ``bench/run.py``.
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

    for kind in kinds:
        target = "sluicegate" if kind.startswith("sluicegate") else kind
        procs.spawn = spawn_old if kind == "sluicegate-old" else spawn
        with bench.served(target, chunks, gap) as (proc, base, model, key):
            bench.load(base, model, key, concurrency=conc, streams=conc, tag="ab-warm")
            r = bench.measured_load(proc, base, model, key, concurrency=conc, streams=streams,
                                    tag="ab")
        per_request = r["target_cpu_s"] * 1e6 / max(1, r["completed"])
        print(f"{kind}: {r['cpu_us_per_chunk']:.1f} µs/chunk, {per_request:.0f} µs/request, "
              f"TTFT p50 {r['ttft_ms']['p50']:.1f} ms, p99 {r['ttft_ms']['p99']:.1f} ms",
              flush=True)
    procs.spawn = spawn


if __name__ == "__main__":
    main(sys.argv[1:] or ["passthrough", "sluicegate"])
