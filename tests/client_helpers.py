"""Shared helpers for the client SDK tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

MESSAGES = [{"role": "user", "content": "hello there"}]

TOOL_CHUNKS: list[dict[str, Any]] = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None},
                  "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_a", "type": "function",
         "function": {"name": "get_weather", "arguments": ""}}]}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 1, "id": "call_b", "type": "function",
         "function": {"name": "get_time", "arguments": ""}}]}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": '{"city": '}}]}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 1, "function": {"arguments": '{"tz": "UTC"}'}}]}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": '"Paris"}'}}]}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 12,
                              "total_tokens": 32}},
]
"""Two parallel tool calls, their arguments interleaved, then usage (OpenAI's chunk shapes)."""


def wait_until(predicate: Callable[[], object], timeout_s: float = 5.0) -> bool:
    """Poll ``predicate`` every 20 ms until it is truthy or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def check_tool_calls(completion: Any) -> None:
    """The two tool calls of ``TOOL_CHUNKS``, rebuilt."""
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert message.tool_calls is not None and len(message.tool_calls) == 2
    first, second = message.tool_calls
    assert (first.id, first.function.name, first.function.arguments) == (
        "call_a", "get_weather", '{"city": "Paris"}')
    assert (second.id, second.function.name, second.function.arguments) == (
        "call_b", "get_time", '{"tz": "UTC"}')
    assert completion.usage is not None and completion.usage.total_tokens == 32
