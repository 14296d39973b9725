"""Quick A/B of the streaming scenario: targets alternated in one run, CPU µs per chunk and TTFT.

    python bench/ab.py passthrough sluicegate passthrough sluicegate
    GAP=0 python bench/ab.py passthrough sluicegate            # the saturation scenario
    OLD_SRC=/tmp/old/src python bench/ab.py sluicegate-old sluicegate   # another revision

``sluicegate-old`` runs the gateway with ``PYTHONPATH=$OLD_SRC`` (e.g. the ``src`` of a
``git worktree`` of an older commit), so two revisions are compared side by side on one
noisy machine. 200 concurrent streams of 64 chunks, ``GAP`` ms apart (default 20), 1,500
measured streams after 200 of warm-up; the full suite is ``bench/run.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import procs
import run


def main(kinds: list[str]) -> None:
    bench = run.Bench(Path(__file__).parent / ".work", False, True)
    spawn = procs.spawn
    gap = int(os.environ.get("GAP", "20"))
    old_env = {"PYTHONPATH": os.environ.get("OLD_SRC", "")}

    def spawn_old(*args: Any, **kwargs: Any) -> procs.Proc:
        return spawn(*args, **{**kwargs, "env": old_env})

    for kind in kinds:
        target = "sluicegate" if kind.startswith("sluicegate") else kind
        procs.spawn = spawn_old if kind == "sluicegate-old" else spawn
        with bench.served(target, 64, gap) as (proc, base, model, key):
            bench.load(base, model, key, concurrency=200, streams=200, tag="ab-warm")
            r = bench.measured_load(proc, base, model, key, concurrency=200, streams=1500,
                                    tag="ab")
        print(f"{kind}: {r['cpu_us_per_chunk']:.1f} µs/chunk, TTFT p50 "
              f"{r['ttft_ms']['p50']:.1f} ms, p99 {r['ttft_ms']['p99']:.1f} ms", flush=True)
    procs.spawn = spawn


if __name__ == "__main__":
    main(sys.argv[1:] or ["passthrough", "sluicegate"])
