"""Accumulates shaped stream chunks into one non-stream response.

Non-stream requests go through the same streaming path and are folded here, so both paths
share routing, shaping and usage accounting. Output shapes (OpenAI API reference):

- chat: ``{"id","object":"chat.completion","created","model","choices":[{"index",
  "message":{"role","content","refusal"[,"reasoning_content"][,"tool_calls"]},"logprobs",
  "finish_reason"}],"usage"}`` (``reasoning_content``: the thinking text of providers that
  stream it, as the stream's ``delta.reasoning_content``);
- text: ``{"id","object":"text_completion","created","model","choices":[{"text","index",
  "logprobs","finish_reason"}],"usage"}``.

Tool calls are rebuilt from their deltas by ``tool_calls[].index`` (docs/wire.md §2): the first
fragment carries ``id``, ``type`` and ``function.name``; later ones append ``arguments``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chunks import Chunk
    from .shaping import StreamShaper

__all__ = ["Accumulator"]


class _Choice:
    __slots__ = ("content", "finish_reason", "reasoning", "refusal", "tool_calls")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None


class Accumulator:
    """Feed shaped chunks with ``add``; ``result(shaper)`` returns the completion object."""

    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}

    def add(self, chunk: Chunk) -> None:
        for raw in chunk.get("choices") or ():
            choice = self._choices.setdefault(raw.get("index", 0), _Choice())
            if raw.get("finish_reason") is not None:
                choice.finish_reason = raw["finish_reason"]
            if "delta" not in raw:
                if raw.get("text"):
                    choice.content.append(raw["text"])
                continue
            delta = raw["delta"] or {}
            if delta.get("content"):
                choice.content.append(delta["content"])
            if delta.get("refusal"):
                choice.refusal.append(delta["refusal"])
            if delta.get("reasoning_content"):
                choice.reasoning.append(delta["reasoning_content"])
            for call in delta.get("tool_calls") or ():
                self._add_tool_call(choice, call)

    @staticmethod
    def _add_tool_call(choice: _Choice, call: dict[str, Any]) -> None:
        slot = choice.tool_calls.get(call.get("index", 0))
        fn = call.get("function") or {}
        if slot is None:
            slot = {
                "id": call.get("id", ""),
                "type": call.get("type", "function"),
                "function": {"name": fn.get("name", ""), "arguments": ""},
            }
            choice.tool_calls[call.get("index", 0)] = slot
        elif call.get("id"):
            slot["id"] = call["id"]
        if fn.get("name") and not slot["function"]["name"]:
            slot["function"]["name"] = fn["name"]
        if fn.get("arguments"):
            slot["function"]["arguments"] += fn["arguments"]

    def result(self, shaper: StreamShaper) -> dict[str, Any]:
        """The completion object, with usage from the shaper (estimated if none was reported)."""
        return self.build(shaper.kind, shaper.id, shaper.created, shaper.model,
                          shaper.final_usage())

    def build(self, kind: str, id: str, created: int, model: str,
              usage: dict[str, Any] | None) -> dict[str, Any]:
        """The completion object (``kind`` ``"chat"`` or ``"text"``) from the chunks added."""
        choices: list[dict[str, Any]] = []
        for index in sorted(self._choices) or [0]:
            c = self._choices.get(index, _Choice())
            text = "".join(c.content)
            if kind == "chat":
                message: dict[str, Any] = {
                    "role": "assistant",
                    "content": text if text or not c.tool_calls else None,
                    "refusal": "".join(c.refusal) or None,
                }
                if c.reasoning:
                    message["reasoning_content"] = "".join(c.reasoning)
                if c.tool_calls:
                    message["tool_calls"] = [c.tool_calls[i] for i in sorted(c.tool_calls)]
                choices.append({"index": index, "message": message, "logprobs": None,
                                "finish_reason": c.finish_reason or "stop"})
            else:
                choices.append({"text": text, "index": index, "logprobs": None,
                                "finish_reason": c.finish_reason or "stop"})
        return {
            "id": id,
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage,
        }
