"""Prompt format for the embedded base model (Gemma 3 270M, pretrained, no chat template).

A base model has never seen chat control tokens, and llama-cpp-python's default chat format
makes it emit empty text. What it has seen is plenty of written dialogue, so the conversation is
rendered as a plain transcript that the model continues::

    The following is a conversation between a curious User and a helpful, knowledgeable
    Assistant. The Assistant answers clearly and concisely.

    <system messages, one paragraph each>

    User: <user message>
    Assistant: <assistant message>
    User: <user message>
    Assistant:

Generation stops at ``\\nUser:`` or ``\\nAssistant:`` (the model starting another turn), which
are added to the request's own ``stop`` sequences and never shown. Tool messages are rendered as
``Tool:`` lines. Whitespace before and after the answer is trimmed.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..schemas import ChatMessage

__all__ = ["TURN_STOPS", "render_chat_prompt"]

PREAMBLE = (
    "The following is a conversation between a curious User and a helpful, knowledgeable "
    "Assistant. The Assistant answers clearly and concisely.\n\n"
)

TURN_STOPS: tuple[str, ...] = ("\nUser:", "\nAssistant:", "\nUSER:")
"""Stop sequences that end the assistant's turn in the transcript format."""

_SPEAKER = {"user": "User", "assistant": "Assistant", "tool": "Tool", "function": "Tool"}


def render_chat_prompt(messages: Sequence[ChatMessage]) -> str:
    """Render chat messages as a transcript ending in ``Assistant:`` (characters, not tokens)."""
    system = [m.text().strip() for m in messages if m.role in ("system", "developer")]
    parts = [PREAMBLE]
    if any(system):
        parts.append("\n\n".join(s for s in system if s) + "\n\n")
    for message in messages:
        speaker = _SPEAKER.get(message.role)
        if speaker is None:
            continue
        parts.append(f"{speaker}: {message.text().strip()}\n")
    parts.append("Assistant:")
    return "".join(parts)
