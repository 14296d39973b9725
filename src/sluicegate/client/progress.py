"""Progress of a streamed generation: a plain tracker, and a rich progress bar around one.

A stream given ``progress=`` calls ``start()``, then ``update(text, tokens)`` per content chunk
(``text``: the chunk's content delta; ``tokens``: the tokens it carries, usually 1), then
``finish()``. Both classes here accept those calls; ``RichProgress`` also draws a bar::

    with RichProgress(ProgressTracker(expected_tokens=200)) as bar:
        for text in client.chat.stream(..., progress=bar).text_stream: ...
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

__all__ = ["ProgressSink", "ProgressTracker", "RichProgress"]


@runtime_checkable
class ProgressSink(Protocol):
    """What a stream needs from its ``progress=`` object."""

    def start(self) -> None: ...

    def update(self, text: str, tokens: int = 1) -> None: ...

    def finish(self) -> None: ...


class ProgressTracker:
    """Counts what a stream has produced and estimates how far along it is.

    ``expected_tokens`` (tokens) and ``expected_chars`` (characters) are the expected output
    size; ``percent`` uses ``expected_tokens``, else the request's ``max_tokens`` (given by the
    stream through ``set_default_expected``), else ``expected_chars``. Thread-safe. Raises
    ``ValueError`` for an expectation below 1.
    """

    def __init__(self, expected_tokens: int | None = None,
                 expected_chars: int | None = None) -> None:
        for name, value in (("expected_tokens", expected_tokens),
                            ("expected_chars", expected_chars)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.expected_tokens = expected_tokens
        self.expected_chars = expected_chars
        self.default_expected_tokens: int | None = None
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._characters = 0
        self._chunks = 0
        self._tokens = 0
        self._text: list[str] = []
        self._started: float | None = None
        self._first: float | None = None
        self._last: float | None = None
        self._ended: float | None = None

    def set_default_expected(self, max_tokens: int | None) -> None:
        """The request's ``max_tokens`` (tokens): used by ``percent`` when ``expected_tokens``
        is not set. None or a value below 1 is ignored."""
        self.default_expected_tokens = max_tokens if max_tokens and max_tokens >= 1 else None

    def start(self) -> None:
        """Start (or restart) timing; clears the counts, so one tracker can serve many calls."""
        with self._lock:
            self._reset()
            self._started = time.monotonic()

    def update(self, text: str, tokens: int = 1) -> None:
        """Record one content chunk: ``text`` (its characters) and ``tokens`` (its token count).
        Starts timing if ``start()`` was not called."""
        now = time.monotonic()
        with self._lock:
            if self._started is None:
                self._started = now
            if self._first is None:
                self._first = now
            self._last = now
            self._chunks += 1
            self._tokens += max(0, tokens)
            self._characters += len(text)
            self._text.append(text)

    def finish(self, total_tokens: int | None = None) -> None:
        """Stop timing. ``total_tokens`` (e.g. the usage's completion tokens) replaces the
        counted tokens when given."""
        with self._lock:
            now = time.monotonic()
            if self._started is None:
                self._started = now
            self._ended = now
            if total_tokens is not None and total_tokens >= 0:
                self._tokens = total_tokens

    @property
    def characters(self) -> int:
        """Characters received so far."""
        return self._characters

    @property
    def chunks(self) -> int:
        """Content chunks received so far."""
        return self._chunks

    @property
    def tokens(self) -> int:
        """Tokens received so far."""
        return self._tokens

    @property
    def text(self) -> str:
        """The text received so far."""
        with self._lock:
            return "".join(self._text)

    @property
    def done(self) -> bool:
        """True once ``finish()`` was called."""
        return self._ended is not None

    @property
    def expected(self) -> tuple[int, str] | None:
        """The expectation ``percent`` measures against: ``(amount, "tokens" | "characters")``."""
        tokens = self.expected_tokens or self.default_expected_tokens
        if tokens:
            return tokens, "tokens"
        if self.expected_chars:
            return self.expected_chars, "characters"
        return None

    @property
    def percent(self) -> float | None:
        """0..100, or None when no expectation is known. 100 once done."""
        expected = self.expected
        if expected is None:
            return None
        if self.done:
            return 100.0
        amount, unit = expected
        produced = self._tokens if unit == "tokens" else self._characters
        return min(100.0, 100.0 * produced / amount)

    @property
    def elapsed_s(self) -> float:
        """Seconds since ``start()`` (until ``finish()`` once done); 0.0 before the start."""
        if self._started is None:
            return 0.0
        end = self._ended if self._ended is not None else time.monotonic()
        return max(0.0, end - self._started)

    @property
    def tokens_per_s(self) -> float | None:
        """Tokens per second from the first chunk to now (to the finish once done), like
        ``StreamStats.tokens_per_s``; None before the first chunk."""
        if self._first is None:
            return None
        end = self._ended if self._ended is not None else time.monotonic()
        span = end - self._first
        if span <= 0:
            return None
        return self._tokens / span


class RichProgress:
    """A rich progress bar fed by a stream. Pass it as ``progress=``; use it as a context manager
    to keep the bar on screen across calls, or let the stream's ``start()`` / ``finish()`` show
    and remove it (``transient=True`` erases it when it stops).

    ``tracker`` defaults to a fresh ``ProgressTracker()``; without an expectation the bar pulses.
    ``console`` defaults to rich's console (standard output). rich is imported here, on first
    use, not with the SDK.
    """

    def __init__(self, tracker: ProgressTracker | None = None, console: Console | None = None,
                 *, description: str = "Generating", transient: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.tracker = tracker if tracker is not None else ProgressTracker()
        self.description = description
        self.progress: Progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[tokens]} tok"),
            TextColumn("{task.fields[chars]} chars"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            transient=transient,
            auto_refresh=False,
        )
        self._task: TaskID | None = None
        self._entered = False
        self._live = False

    def __enter__(self) -> Self:
        self._entered = True
        self._show()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._entered = False
        self._hide()

    def _show(self) -> None:
        if not self._live:
            self.progress.start()
            self._live = True

    def _hide(self) -> None:
        if self._live:
            self._refresh()
            self.progress.stop()
            self._live = False

    def _refresh(self) -> None:
        if self._task is None:
            return
        tracker = self.tracker
        percent = tracker.percent
        rate = tracker.tokens_per_s
        self.progress.update(
            self._task,
            total=None if percent is None else 100.0,
            completed=percent or 0.0,
            tokens=tracker.tokens,
            chars=tracker.characters,
            rate="" if rate is None else f"{rate:.1f} tok/s",
        )
        self.progress.refresh()

    def set_default_expected(self, max_tokens: int | None) -> None:
        """Forwarded to the tracker (the request's ``max_tokens``, tokens)."""
        self.tracker.set_default_expected(max_tokens)

    def start(self) -> None:
        """Start the tracker and add a bar (showing the display unless already shown)."""
        self.tracker.start()
        self._show()
        if self._task is not None:
            self.progress.remove_task(self._task)
        self._task = self.progress.add_task(self.description, total=None, tokens=0, chars=0,
                                            rate="")
        self._refresh()

    def update(self, text: str, tokens: int = 1) -> None:
        """Record one content chunk and redraw."""
        self.tracker.update(text, tokens)
        self._refresh()

    def finish(self, total_tokens: int | None = None) -> None:
        """Finish the tracker, complete the bar, and stop the display unless inside ``with``."""
        self.tracker.finish(total_tokens)
        self._refresh()
        if not self._entered:
            self._hide()

    @property
    def percent(self) -> float | None:
        """The tracker's ``percent`` (0..100 or None)."""
        return self.tracker.percent
