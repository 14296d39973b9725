"""The flush policy of ``buffered_text()``: hold text until ``flush_chars`` characters or
``flush_ms`` ms have gathered since the last flush, whichever comes first. The first text is
never held back. With neither set, every piece is flushed at once.
"""

from __future__ import annotations

import time

__all__ = ["FlushPolicy"]


class FlushPolicy:
    """``add(text)`` returns what to flush now (or None); ``due_in()`` says how long (s) until
    held text must be flushed (None: nothing held or no time limit); ``flush()`` returns and
    clears what is held."""

    __slots__ = ("_buf", "_chars", "_first", "_held", "_since", "ms")

    def __init__(self, flush_chars: int | None = None, flush_ms: float | None = None) -> None:
        if flush_chars is not None and flush_chars < 1:
            raise ValueError("flush_chars must be at least 1")
        if flush_ms is not None and flush_ms < 0:
            raise ValueError("flush_ms must not be negative")
        self._chars = flush_chars
        self.ms = flush_ms
        self._buf: list[str] = []
        self._held = 0
        self._first = True
        self._since = time.monotonic()

    def add(self, text: str, now: float | None = None) -> str | None:
        """Take one piece of text (characters); the text to flush now, if any."""
        if not text:
            return None
        now = time.monotonic() if now is None else now
        self._buf.append(text)
        self._held += len(text)
        if self._first or (self._chars is None and self.ms is None):
            self._first = False
            return self.flush(now)
        if self._chars is not None and self._held >= self._chars:
            return self.flush(now)
        if self.ms is not None and (now - self._since) * 1000.0 >= self.ms:
            return self.flush(now)
        return None

    def due_in(self, now: float | None = None) -> float | None:
        """Seconds until the held text is due (≥ 0), or None."""
        if not self._buf or self.ms is None:
            return None
        now = time.monotonic() if now is None else now
        return max(0.0, self.ms / 1000.0 - (now - self._since))

    def flush(self, now: float | None = None) -> str:
        """Everything held (possibly ""), and restart the clock."""
        out = "".join(self._buf)
        self._buf.clear()
        self._held = 0
        self._since = time.monotonic() if now is None else now
        return out
