"""The stream cache's numbers: TTFT of a hit vs a miss, embedding time, search at 10k entries,
memory per entry, and a threshold sweep (precision/recall) over the labelled FAQ pairs.

    PYTHONPATH=src python bench/cache.py            # N=300 requests per side by default

The gateway runs in process (one event loop thread) in front of the tests' fake OpenAI upstream
on loopback, with the cache on (exact); TTFT is measured by the client (an ``httpx`` stream:
request sent → first content chunk). Prints plain lines.
"""

from __future__ import annotations

import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import MOCK_KEY, MOCK_KEY_ENV, mock_config  # noqa: E402
from tests.fakes import FakeOpenAIUpstream, Script, start_gateway  # noqa: E402

from sluicegate.cache.embed import Embedder  # noqa: E402
from sluicegate.cache.index import VectorIndex  # noqa: E402
from sluicegate.cache.store import MemoryStore  # noqa: E402

N = int(os.environ.get("N", "300"))
PAIRS = ROOT / "tests" / "data" / "cache_pairs.jsonl"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ttft(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, str]:
    """Request sent → first content chunk (ms), reading the stream to its end (a stream left
    early is cancelled, and never stored)."""
    t0 = time.perf_counter()
    first = None
    with client.stream("POST", url, json=body) as response:
        for line in response.iter_lines():
            if (first is None and line.startswith("data: {") and '"content":"' in line
                    and '"content":""' not in line):
                first = (time.perf_counter() - t0) * 1000
    if first is None:
        raise RuntimeError("no content")
    return first, response.headers.get("X-Sluicegate-Cache", "")


def bench_ttft_off() -> None:
    """The same requests through a gateway without a cache (the default)."""
    os.environ[MOCK_KEY_ENV] = MOCK_KEY
    upstream = FakeOpenAIUpstream().start()
    upstream.script = Script(texts=[f"word{i} " for i in range(8)])
    server, _ = start_gateway(mock_config(upstream.base_url))
    url = server.url + "/v1/chat/completions"
    try:
        with httpx.Client(timeout=30) as client:
            times = []
            for i in range(N + 20):
                ms, _ = ttft(client, url, {
                    "model": "mock/m", "temperature": 0, "stream": True,
                    "messages": [{"role": "user", "content": f"question number {i}"}]})
                times.append(ms)
        times = times[20:]
        print(f"TTFT without a cache (default config): p50 {pct(times, 50):.2f} ms, "
              f"p99 {pct(times, 99):.2f} ms (n={N})")
    finally:
        server.stop()
        upstream.stop()


def bench_ttft() -> None:
    os.environ[MOCK_KEY_ENV] = MOCK_KEY
    upstream = FakeOpenAIUpstream().start()
    upstream.script = Script(texts=[f"word{i} " for i in range(8)])
    config = mock_config(upstream.base_url)
    config.cache.enabled = True
    server, _ = start_gateway(config)
    url = server.url + "/v1/chat/completions"
    try:
        with httpx.Client(timeout=30) as client:
            def body(i: int) -> dict[str, Any]:
                return {"model": "mock/m", "temperature": 0, "stream": True,
                        "messages": [{"role": "user", "content": f"question number {i}"}]}

            for i in range(20):  # warm-up
                ttft(client, url, body(-i - 1))
            misses = []
            for i in range(N):
                ms, label = ttft(client, url, body(i))
                assert label == "miss", label
                misses.append(ms)
            time.sleep(0.5)
            hits = []
            for i in range(N):
                ms, label = ttft(client, url, body(i))
                assert label == "hit", label
                hits.append(ms)
        print(f"TTFT miss (fake upstream on loopback, no model delay): p50 "
              f"{pct(misses, 50):.2f} ms, p99 {pct(misses, 99):.2f} ms (n={N})")
        print(f"TTFT hit: p50 {pct(hits, 50):.2f} ms, p99 {pct(hits, 99):.2f} ms (n={N})")
        print(f"upstream requests: {len(upstream.received)} for {2 * N + 20} client requests")
    finally:
        server.stop()
        upstream.stop()


def pairs() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in PAIRS.read_bytes().splitlines() if line.strip()]


def bench_embedding(embedder: Embedder) -> None:
    t0 = time.perf_counter()
    embedder.load()
    print(f"embedding model load: {(time.perf_counter() - t0) * 1000:.0f} ms")
    texts = [p[k] for p in pairs() for k in ("a", "b")]
    for text in texts[:20]:
        embedder.embed(text)
    times = []
    for _ in range(4):
        for text in texts:
            t0 = time.perf_counter()
            embedder.embed(text)
            times.append((time.perf_counter() - t0) * 1000)
    print(f"embedding (short FAQ questions, {embedder.threads} threads): p50 "
          f"{pct(times, 50):.2f} ms, p99 {pct(times, 99):.2f} ms (n={len(times)})")
    long_text = " ".join(texts)[:1500]
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        embedder.embed(long_text)
        times.append((time.perf_counter() - t0) * 1000)
    print(f"embedding (a 1,500-character message, truncated at 256 tokens): p50 "
          f"{pct(times, 50):.2f} ms, p99 {pct(times, 99):.2f} ms")


def bench_search() -> None:
    rng = np.random.default_rng(1)
    for rows, contexts in ((10_000, 1), (10_000, 100)):
        index = VectorIndex(rows)
        vectors = rng.standard_normal((rows, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        expires = time.time() + 3600
        for i in range(rows):
            index.add(vectors[i], f"ctx{i % contexts}", f"key{i}", expires)
        times = []
        for i in range(1000):
            query = vectors[i * 7 % rows]
            t0 = time.perf_counter()
            index.search(query, f"ctx{i % contexts}")
            times.append((time.perf_counter() - t0) * 1e6)
        print(f"search at {rows:,} entries ({contexts} context(s)): p50 {pct(times, 50):.0f} µs, "
              f"p99 {pct(times, 99):.0f} µs; index {index.nbytes / rows:.0f} B/entry "
              f"(+ the key string)")


async def fill(store: MemoryStore, blob: bytes, count: int) -> None:
    for i in range(count):
        await store.put(f"{i:064x}", bytes(bytearray(blob)), 3600)


def bench_memory() -> None:
    import asyncio

    chunk = {"id": "chatcmpl-0123456789abcdef01234567", "object": "chat.completion.chunk",
             "created": 1700000000, "model": "mock/m", "system_fingerprint": "fp_fake",
             "choices": [{"index": 0, "delta": {"content": "word "}, "logprobs": None,
                          "finish_reason": None}]}
    for chunks in (8, 64, 512):
        entry = {"v": 1, "kind": "chat", "upstream_model": "m",
                 "batches": [[0.5, [chunk]] for _ in range(chunks)],
                 "usage": {"prompt_tokens": 11, "completion_tokens": chunks,
                           "total_tokens": 11 + chunks}, "stored_at": time.time()}
        blob = orjson.dumps(entry)
        store = MemoryStore(100_000, 1 << 40)
        count = 2000
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]

        asyncio.run(fill(store, blob, count))
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        print(f"memory per entry ({chunks} chunks, {len(blob):,} B serialized): "
              f"{used / count:,.0f} B in process (+ {384 * 4 + 16} B of vector and row for a "
              f"semantic entry)")


def bench_sweep(embedder: Embedder) -> None:
    rows = pairs()
    scored = [(float(embedder.embed(p["a"]) @ embedder.embed(p["b"])), bool(p["same"]))
              for p in rows]
    same = sum(s for _, s in scored)
    print(f"threshold sweep over {len(rows)} labelled pairs "
          f"({same} paraphrases, {len(scored) - same} near misses):")
    for threshold in (0.85, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98):
        tp = sum(score >= threshold and same for score, same in scored)
        fp = sum(score >= threshold and not same for score, same in scored)
        fn = sum(score < threshold and same for score, same in scored)
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        print(f"  {threshold:.2f}: precision {precision:.3f} recall {recall:.3f} "
              f"(tp {tp} fp {fp} fn {fn})")
    print("  similarity of the highest near miss: "
          f"{max(score for score, same in scored if not same):.4f}")


def main() -> None:
    embedder = Embedder()
    bench_embedding(embedder)
    bench_search()
    bench_memory()
    bench_sweep(embedder)
    bench_ttft_off()
    bench_ttft()
    bench_ttft_off()


if __name__ == "__main__":
    main()
