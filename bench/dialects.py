"""CPU per chunk of each ingress dialect's stream rewriting, beside the chat stream's own framing.

    PYTHONPATH=src python bench/dialects.py [--chunks 200000]

The chat path serialises each shaped chunk once (``data: <json>``); ``/v1/messages`` and
``/v1/responses`` then decode that frame and write their own event (``ingress.common``). This
feeds the same stream of text chunks (a role chunk, N content chunks of one token each, the
finish and usage chunks, ``[DONE]``) through each, in one process, one write per chunk as the
relay does, and prints the CPU µs per chunk: the chat framing alone, and each dialect's
framing + rewriting. It measures the added translation cost only, not a whole request.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from sluicegate.chunks import chat_chunk, make_usage, usage_chunk
from sluicegate.ingress.anthropic_messages import MessagesSink
from sluicegate.ingress.responses import ResponsesSink


def _frames(n: int) -> list[bytes]:
    chunks = [chat_chunk(0, {"role": "assistant", "content": ""})]
    chunks += [chat_chunk(0, {"content": f" tok{i % 97}"}) for i in range(n)]
    chunks += [chat_chunk(0, {}, "stop"), usage_chunk("chat", make_usage(20, n))]
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


def _cpu_per_chunk(n: int, write: Callable[[bytes], object], frames: list[bytes]) -> float:
    started = time.process_time()
    for frame in frames:
        write(frame)
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.chunks
    chunks = [chat_chunk(0, {"content": f" tok{i % 97}"}) for i in range(n)]
    results: dict[str, list[float]] = {"chat": [], "messages": [], "responses": []}
    for _ in range(args.rounds):
        started = time.process_time()
        for chunk in chunks:  # what the relay does per chunk for chat completions
            b"data: " + orjson.dumps(chunk) + b"\n\n"
        chat = (time.process_time() - started) / n * 1e6
        results["chat"].append(chat)
        frames = _frames(n)
        messages = MessagesSink("m")
        results["messages"].append(chat + _cpu_per_chunk(n, messages.translate, frames))
        responses = ResponsesSink({"model": "m"}, "m")
        results["responses"].append(chat + _cpu_per_chunk(n, responses.translate, frames))
    for name, values in results.items():
        print(f"{name:10s} {min(values):6.2f} µs CPU per chunk (best of {args.rounds})")


if __name__ == "__main__":
    main()
