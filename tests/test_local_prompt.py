"""The transcript prompt format and the stop-sequence hold-back (no model needed)."""

from __future__ import annotations

from sluicegate.local.engine import _partial_stop
from sluicegate.local.prompt import PREAMBLE, TURN_STOPS, render_chat_prompt
from sluicegate.schemas import ChatMessage


def test_transcript_format() -> None:
    prompt = render_chat_prompt([
        ChatMessage(role="system", content="Answer in French."),
        ChatMessage(role="user", content="Hello"),
        ChatMessage(role="assistant", content="Bonjour !"),
        ChatMessage(role="user", content=[{"type": "text", "text": "How are "},
                                          {"type": "text", "text": "you?"}]),
    ])
    assert prompt == (PREAMBLE + "Answer in French.\n\n" + "User: Hello\n"
                      + "Assistant: Bonjour !\n" + "User: How are you?\n" + "Assistant:")


def test_turn_stops_cover_both_speakers() -> None:
    assert "\nUser:" in TURN_STOPS and "\nAssistant:" in TURN_STOPS


def test_partial_stop_holds_only_a_possible_stop_prefix() -> None:
    stops = ("\nUser:",)
    assert _partial_stop("Paris.", stops) == 0
    assert _partial_stop("Paris.\n", stops) == 1
    assert _partial_stop("Paris.\nUs", stops) == 3
    assert _partial_stop("Paris.\nUser", stops) == 5
    assert _partial_stop("Paris.\nUsed", stops) == 0
    assert _partial_stop("ab", ("abc", "b")) == 2
    assert _partial_stop("", stops) == 0
