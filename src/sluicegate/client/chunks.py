"""Chunk helpers: what one streamed chunk says, whatever its dialect, and a running total.

``process_stream_chunk(chunk)`` takes a chunk as a dict or a typed object (this SDK's
``ChatCompletionChunk``, the openai or anthropic SDK's event types: anything with
``model_dump()``), in any dialect the gateway speaks:

- OpenAI chat chunks (``choices[].delta``) and legacy completion chunks (``choices[].text``);
- Anthropic Messages events (``message_start``, ``content_block_start`` / ``_delta``,
  ``message_delta``);
- OpenAI Responses events (``response.output_text.delta``, ``response.reasoning_text.delta``,
  ``response.function_call_arguments.delta``, ``response.completed``);
- Gemini ``GenerateContentResponse`` chunks (``candidates[].content.parts``, ``usageMetadata``);
- transcription events (``transcript.text.delta`` / ``transcript.text.done``).

It returns a ``ChunkInfo``: ``content``, ``role``, ``finish_reason``, ``usage`` (normalised to
``prompt_tokens`` / ``completion_tokens`` / ``total_tokens``), ``tool_calls`` (fragments: index,
id, name, arguments piece) and ``reasoning``. ``StreamProcessor`` adds chunks up.

    processor = StreamProcessor()
    for chunk in stream:
        info = processor.process(chunk)
        print(info.content, end="")
    processor.content, processor.finish_reason, processor.usage, processor.tool_calls
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["ChunkInfo", "StreamProcessor", "TaskType", "ToolCallFragment",
           "process_stream_chunk"]


class TaskType(StrEnum):
    """The gateway's task names (``task_type=`` on ``stream``, ``create`` and the decorators).
    A task the gateway's config defines beyond these is passed as a plain string."""

    TEXT = "text"
    CODE = "code"
    VISION = "vision"
    AUDIO = "audio"
    AUDIO_TRANSCRIPTION = "audio_transcription"
    REASONING = "reasoning"
    LONG_CONTEXT = "long_context"
    AUTO = "auto"


@dataclass(frozen=True, slots=True)
class ToolCallFragment:
    """A piece of a streamed tool call; ``arguments`` is the next piece of its JSON."""

    index: int = 0
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    content: str = ""
    role: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    tool_calls: tuple[ToolCallFragment, ...] = ()
    reasoning: str = ""


_ANTHROPIC_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                   "tool_use": "tool_calls", "refusal": "content_filter"}
_GEMINI_STOP = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
                "RECITATION": "content_filter"}


def _as_dict(chunk: object) -> Mapping[str, Any]:
    if isinstance(chunk, Mapping):
        return chunk
    dump = getattr(chunk, "model_dump", None)
    if callable(dump):
        result = dump()
        if isinstance(result, Mapping):
            return result
    raise TypeError(f"not a stream chunk: {type(chunk).__name__}")


def _usage(raw: Any) -> dict[str, int] | None:
    if not isinstance(raw, Mapping):
        return None
    prompt = raw.get("prompt_tokens", raw.get("input_tokens", raw.get("promptTokenCount")))
    completion = raw.get("completion_tokens",
                         raw.get("output_tokens", raw.get("candidatesTokenCount")))
    if prompt is None and completion is None:
        return None
    p, c = int(prompt or 0), int(completion or 0)
    total = raw.get("total_tokens", raw.get("totalTokenCount"))
    return {"prompt_tokens": p, "completion_tokens": c,
            "total_tokens": int(total) if total is not None else p + c}


def _openai(d: Mapping[str, Any]) -> ChunkInfo:
    content, reasoning, role, finish = "", "", None, None
    calls: list[ToolCallFragment] = []
    for choice in d.get("choices") or ():
        delta = choice.get("delta")
        if delta:
            content += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or delta.get("reasoning") or ""
            role = delta.get("role") or role
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                calls.append(ToolCallFragment(int(call.get("index") or 0), call.get("id"),
                                              function.get("name"),
                                              function.get("arguments") or ""))
        else:
            content += choice.get("text") or ""
        finish = choice.get("finish_reason") or finish
    return ChunkInfo(content, role, finish, _usage(d.get("usage")), tuple(calls), reasoning)


def _anthropic(d: Mapping[str, Any], kind: str) -> ChunkInfo:
    if kind == "message_start":
        message = d.get("message") or {}
        return ChunkInfo(role=message.get("role"), usage=_usage(message.get("usage")))
    if kind == "content_block_start":
        block = d.get("content_block") or {}
        if block.get("type") == "tool_use":
            return ChunkInfo(tool_calls=(ToolCallFragment(int(d.get("index") or 0),
                                                          block.get("id"), block.get("name")),))
        return ChunkInfo(content=block.get("text") or "")
    if kind == "content_block_delta":
        delta = d.get("delta") or {}
        if delta.get("type") == "input_json_delta":
            return ChunkInfo(tool_calls=(ToolCallFragment(
                int(d.get("index") or 0), arguments=delta.get("partial_json") or ""),))
        return ChunkInfo(content=delta.get("text") or "", reasoning=delta.get("thinking") or "")
    if kind == "message_delta":
        stop = (d.get("delta") or {}).get("stop_reason")
        return ChunkInfo(finish_reason=_ANTHROPIC_STOP.get(stop, stop) if stop else None,
                         usage=_usage(d.get("usage")))
    return ChunkInfo()


def _responses(d: Mapping[str, Any], kind: str) -> ChunkInfo:
    if kind == "response.output_text.delta":
        return ChunkInfo(content=d.get("delta") or "")
    if kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
        return ChunkInfo(reasoning=d.get("delta") or "")
    if kind == "response.function_call_arguments.delta":
        return ChunkInfo(tool_calls=(ToolCallFragment(int(d.get("output_index") or 0),
                                                      d.get("item_id"),
                                                      arguments=d.get("delta") or ""),))
    if kind == "response.output_item.added":
        item = d.get("item") or {}
        if item.get("type") == "function_call":
            return ChunkInfo(tool_calls=(ToolCallFragment(
                int(d.get("output_index") or 0), item.get("call_id") or item.get("id"),
                item.get("name")),))
        return ChunkInfo(role=item.get("role"))
    if kind in ("response.completed", "response.incomplete", "response.failed"):
        response = d.get("response") or {}
        finish = {"response.completed": "stop", "response.failed": "error"}.get(kind, "length")
        return ChunkInfo(finish_reason=finish, usage=_usage(response.get("usage")))
    return ChunkInfo()


def _gemini(d: Mapping[str, Any]) -> ChunkInfo:
    content, reasoning, role, finish = "", "", None, None
    calls: list[ToolCallFragment] = []
    for candidate in d.get("candidates") or ():
        body = candidate.get("content") or {}
        if isinstance(given := body.get("role"), str):
            role = "assistant" if given == "model" else given
        for i, part in enumerate(body.get("parts") or ()):
            if part.get("functionCall"):
                import json

                call = part["functionCall"]
                calls.append(ToolCallFragment(i, None, call.get("name"),
                                              json.dumps(call.get("args") or {})))
            elif part.get("thought"):
                reasoning += part.get("text") or ""
            else:
                content += part.get("text") or ""
        stop = candidate.get("finishReason")
        if stop:
            finish = _GEMINI_STOP.get(stop, stop.lower())
    return ChunkInfo(content, role, finish, _usage(d.get("usageMetadata")), tuple(calls),
                     reasoning)


def process_stream_chunk(chunk: object) -> ChunkInfo:
    """What ``chunk`` (a dict or typed chunk of any dialect above) carries."""
    d = _as_dict(chunk)
    kind = d.get("type")
    if isinstance(kind, str):
        if kind.startswith(("message_", "content_block_")):
            return _anthropic(d, kind)
        if kind.startswith("response."):
            return _responses(d, kind)
        if kind == "transcript.text.delta":
            return ChunkInfo(content=d.get("delta") or "")
        if kind == "transcript.text.done":
            return ChunkInfo(finish_reason="stop", usage=_usage(d.get("usage")))
        return ChunkInfo()
    if "candidates" in d or "usageMetadata" in d:
        return _gemini(d)
    return _openai(d)


@dataclass
class _Call:
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class StreamProcessor:
    """Adds up ``process_stream_chunk`` over a stream: text, reasoning, role, the last finish
    reason, the last usage seen, and whole tool calls (by index)."""

    content: str = ""
    reasoning: str = ""
    role: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    chunks: int = 0
    _calls: dict[int, _Call] = field(default_factory=dict)

    def process(self, chunk: object) -> ChunkInfo:
        info = process_stream_chunk(chunk)
        self.chunks += 1
        self.content += info.content
        self.reasoning += info.reasoning
        self.role = self.role or info.role
        self.finish_reason = info.finish_reason or self.finish_reason
        if info.usage is not None:
            merged = dict(self.usage or {})
            for key, value in info.usage.items():  # Anthropic: input first, output at the end
                merged[key] = value or merged.get(key, 0)
            merged["total_tokens"] = merged["prompt_tokens"] + merged["completion_tokens"]
            self.usage = merged
        for fragment in info.tool_calls:
            call = self._calls.setdefault(fragment.index, _Call())
            call.id = call.id or fragment.id
            call.name = call.name or fragment.name
            call.arguments += fragment.arguments
        return info

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """Whole tool calls so far, OpenAI-shaped (``id``, ``type``, ``function``)."""
        return [{"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for _, c in sorted(self._calls.items())]
