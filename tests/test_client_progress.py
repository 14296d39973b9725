"""ProgressTracker and RichProgress, standalone (fed the way a stream feeds them)."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from sluicegate.client.progress import ProgressSink, ProgressTracker, RichProgress


def feed(tracker: ProgressTracker | RichProgress, texts: list[str], gap_s: float = 0.0) -> None:
    for text in texts:
        tracker.update(text, 1)
        if gap_s:
            time.sleep(gap_s)


def test_nothing_known_gives_no_percent() -> None:
    tracker = ProgressTracker()
    assert tracker.percent is None
    assert tracker.tokens_per_s is None
    assert tracker.elapsed_s == 0.0
    assert not tracker.done
    tracker.start()
    feed(tracker, ["ab", "cd"])
    assert tracker.percent is None
    assert (tracker.tokens, tracker.chunks, tracker.characters) == (2, 2, 4)
    assert tracker.text == "abcd"
    tracker.finish()
    assert tracker.done
    assert tracker.percent is None


def test_percent_against_expected_tokens() -> None:
    tracker = ProgressTracker(expected_tokens=8, expected_chars=1000)
    tracker.set_default_expected(100)  # expected_tokens wins over the request's max_tokens
    tracker.start()
    feed(tracker, ["a", "b"])
    assert tracker.percent == pytest.approx(25.0)
    assert tracker.expected == (8, "tokens")
    feed(tracker, ["x"] * 20)  # more than expected: capped
    assert tracker.percent == 100.0


def test_percent_against_max_tokens() -> None:
    tracker = ProgressTracker()
    tracker.set_default_expected(16)
    tracker.start()
    feed(tracker, ["a"] * 4)
    assert tracker.percent == pytest.approx(25.0)
    tracker.set_default_expected(None)
    assert tracker.percent is None


def test_percent_against_expected_chars() -> None:
    tracker = ProgressTracker(expected_chars=20)
    tracker.start()
    feed(tracker, ["hello", "world"])
    assert tracker.expected == (20, "characters")
    assert tracker.percent == pytest.approx(50.0)
    tracker.finish()
    assert tracker.percent == 100.0


def test_tokens_counted_per_update_and_replaced_at_finish() -> None:
    tracker = ProgressTracker(expected_tokens=10)
    tracker.start()
    tracker.update("two tokens", 2)
    tracker.update("", 0)
    assert tracker.tokens == 2
    assert tracker.chunks == 2
    tracker.finish(total_tokens=5)
    assert tracker.tokens == 5


def test_tokens_per_s_and_elapsed() -> None:
    tracker = ProgressTracker()
    tracker.start()
    time.sleep(0.05)  # time to first token does not count in the rate
    feed(tracker, ["a"] * 5, gap_s=0.02)
    tracker.finish()
    rate = tracker.tokens_per_s
    assert rate is not None
    # 5 tokens over ~0.1 s (4 gaps of 20 ms after the first, plus the last gap)
    assert 15 < rate < 300
    assert tracker.elapsed_s >= 0.15
    frozen = tracker.elapsed_s
    time.sleep(0.02)
    assert tracker.elapsed_s == frozen  # stops at finish()


def test_start_resets_for_reuse() -> None:
    tracker = ProgressTracker(expected_tokens=4)
    tracker.start()
    feed(tracker, ["a", "b"])
    tracker.finish()
    tracker.start()
    assert (tracker.tokens, tracker.characters, tracker.done) == (0, 0, False)
    assert tracker.percent == 0.0


def test_update_without_start_starts_timing() -> None:
    tracker = ProgressTracker()
    tracker.update("a", 1)
    assert tracker.elapsed_s >= 0.0
    assert tracker.tokens_per_s is None or tracker.tokens_per_s > 0


@pytest.mark.parametrize("kwargs", [{"expected_tokens": 0}, {"expected_chars": -1}])
def test_bad_expectation(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ProgressTracker(**kwargs)


def test_both_are_progress_sinks() -> None:
    assert isinstance(ProgressTracker(), ProgressSink)
    assert isinstance(RichProgress(console=Console(file=io.StringIO())), ProgressSink)


def render_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=120), out


def test_rich_progress_renders_final_state() -> None:
    console, out = render_console()
    bar = RichProgress(ProgressTracker(expected_tokens=4), console=console,
                       description="Answering")
    bar.start()  # a stream's start(): shows the bar itself
    feed(bar, ["one ", "two "])
    assert bar.percent == pytest.approx(50.0)
    bar.finish()  # ...and its finish() stops it, printing the final state to a non-terminal
    text = out.getvalue()
    assert "Answering" in text
    assert "100%" in text
    assert "2 tok" in text
    assert "8 chars" in text
    assert "tok/s" in text
    assert not bar.progress.live.is_started


def test_rich_progress_as_context_manager_keeps_bar_across_calls() -> None:
    console, out = render_console()
    tracker = ProgressTracker()
    with RichProgress(tracker, console) as bar:
        for texts in (["a"], ["b", "c"]):
            bar.set_default_expected(3)
            bar.start()
            feed(bar, texts)
            assert bar.progress.live.is_started
            bar.finish()
            assert bar.progress.live.is_started  # still on screen inside ``with``
    assert not bar.progress.live.is_started
    assert tracker.tokens == 2
    assert "100%" in out.getvalue()


def test_rich_progress_without_expectation_pulses() -> None:
    console, out = render_console()
    bar = RichProgress(console=console)
    bar.start()
    feed(bar, ["x"] * 3)
    assert bar.percent is None
    task = bar.progress.tasks[0]
    assert task.total is None
    bar.finish()
    assert "3 tok" in out.getvalue()


def test_rich_progress_transient_leaves_nothing() -> None:
    console, out = render_console()
    bar = RichProgress(ProgressTracker(expected_tokens=2), console, transient=True)
    bar.start()
    feed(bar, ["a", "b"])
    bar.finish()
    assert "tok" not in out.getvalue()
