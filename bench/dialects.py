"""CPU per chunk of each ingress dialect's stream rewriting, beside the chat stream's own framing.

    PYTHONPATH=src python bench/dialects.py [--chunks 200000]

The chat path serialises each shaped chunk once (``data: <json>``); ``/v1/messages`` and
``/v1/responses`` render the same chunk as their own events instead (``sluicegate.egress``,
``ingress.common``). This feeds the same stream of text chunks (a role chunk, N content chunks
of one token each, the finish and usage chunks, the end) through each egress, in one process,
one batch per chunk as the relay does, and prints the CPU µs per chunk. It measures the
rendering only, not a whole request (``bench/run.py --scenario dialects`` measures requests).
"""

from __future__ import annotations

import argparse
import time

from sluicegate.chunks import Chunk, chat_chunk, make_usage, usage_chunk
from sluicegate.egress import Egress
from sluicegate.ingress.anthropic_messages import MessagesEgress
from sluicegate.ingress.responses import ResponsesEgress


def _chunks(n: int) -> list[Chunk]:
    chunks = [chat_chunk(0, {"role": "assistant", "content": ""})]
    chunks += [chat_chunk(0, {"content": f" tok{i % 97}"}) for i in range(n)]
    return [*chunks, chat_chunk(0, {}, "stop"), usage_chunk("chat", make_usage(20, n))]


def _cpu_per_chunk(n: int, egress: Egress, chunks: list[Chunk]) -> float:
    started = time.process_time()
    render = egress.chunks
    for chunk in chunks:
        render([chunk])
    egress.done()
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.chunks
    chunks = _chunks(n)
    results: dict[str, list[float]] = {"chat": [], "messages": [], "responses": []}
    for _ in range(args.rounds):
        results["chat"].append(_cpu_per_chunk(n, Egress(), chunks))
        results["messages"].append(_cpu_per_chunk(n, MessagesEgress("m"), chunks))
        results["responses"].append(
            _cpu_per_chunk(n, ResponsesEgress({"model": "m"}, "m"), chunks))
    for name, values in results.items():
        print(f"{name:10s} {min(values):6.2f} µs CPU per chunk (best of {args.rounds})")


if __name__ == "__main__":
    main()
