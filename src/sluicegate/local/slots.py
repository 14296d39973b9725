"""The batched engine's sequence ids ("slots"): which are free, which one a new job gets, and
what the cache of a free one still holds.

- With a cache per sequence, llama.cpp runs a batch in one pass over the weights only while
  the batch's sequence ids are consecutive and increasing (``llama_batch_allocr::split_equal``,
  sequential); every other run of consecutive ids is one more pass. So a job decoded beside
  others takes the lowest free id, a seeded one (decoded in batches of its own) the highest,
  and the engine closes a gap that a finished sequence leaves between running ones
  (``BatchedEngine._close_gaps``).
- A slot keeps its cache when its job ends. A job whose prompt begins with at least
  ``MIN_SHARED_PREFIX`` of the tokens a free slot holds takes that slot and reads only the rest
  (a conversation's next turn, a repeated system prompt), as the single-sequence engine reuses
  its one cache (``Llama.generate``). Otherwise a job takes a slot that holds nothing, if there
  is one, so that held caches last.
"""

from __future__ import annotations

__all__ = ["MIN_SHARED_PREFIX", "Slots", "common_prefix"]

MIN_SHARED_PREFIX = 8
"""Shorter common prefixes (tokens) are read again rather than reused or copied."""


class Slots:
    """The free sequence ids of a context with ``n`` sequences, and their held tokens."""

    def __init__(self, n: int) -> None:
        self.free: list[int] = list(range(n))
        self.held: dict[int, list[int]] = {}
        """The tokens in the cache of a free slot, from position 0 on."""

    def take(self, prompt: list[int], *, alone: bool, reuse: bool) -> tuple[int, int]:
        """A free slot for a job (one must be free), and how many of the first tokens of its
        ``prompt`` that slot holds already (0: none to reuse). Never the whole prompt: its last
        token is read again, for its logits. ``alone``: the job is decoded in batches of its
        own; ``reuse``: it may start from a held prefix."""
        slot, kept = -1, 0
        if reuse:
            for free in self.free:
                k = common_prefix(prompt, self.held.get(free, []), len(prompt) - 1)
                if k > kept:
                    slot, kept = free, k
        if kept < MIN_SHARED_PREFIX:
            empty = [i for i in self.free if i not in self.held] or self.free
            slot, kept = (max if alone else min)(empty), 0
        self.claim(slot)
        return slot, kept

    def claim(self, slot: int) -> None:
        """Take the free ``slot``; what it held is gone."""
        self.free.remove(slot)
        self.held.pop(slot, None)

    def release(self, slot: int, held: list[int] | None = None) -> None:
        """``slot`` is free again, its cache holding ``held`` (None: nothing)."""
        self.free.append(slot)
        if held:
            self.held[slot] = held


def common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """How many first tokens ``a`` and ``b`` share, at most ``limit``."""
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
