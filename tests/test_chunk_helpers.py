"""``process_stream_chunk`` and ``StreamProcessor`` on the chunks of every dialect, as dicts and
as typed objects (this SDK's, the openai and anthropic SDKs')."""

from __future__ import annotations

from typing import Any

import anthropic.types as at
import openai.types.chat as oc
import pytest

from sluicegate.client import (
    ChatCompletionChunk,
    ChunkInfo,
    StreamProcessor,
    ToolCallFragment,
    process_stream_chunk,
)

OPENAI = [
    {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                  "finish_reason": None}]},
    {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
     "choices": [{"index": 0, "delta": {"reasoning_content": "Think."}, "finish_reason": None}]},
    {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
     "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
    {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
     "choices": [{"index": 0, "delta": {"tool_calls": [
         {"index": 0, "id": "call_1", "type": "function",
          "function": {"name": "get", "arguments": "{\"a\""}}]}, "finish_reason": None}]},
    {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
     "choices": [{"index": 0, "delta": {"tool_calls": [
         {"index": 0, "function": {"arguments": ": 1}"}}]}, "finish_reason": None}]},
    {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
     "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
     "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}},
]

ANTHROPIC = [
    {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking",
                                                                  "thinking": "",
                                                                  "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta",
                                                          "thinking": "Think."}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "call_1", "name": "get", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta",
                                                          "partial_json": "{\"a\""}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta",
                                                          "partial_json": ": 1}"}},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 3}},
    {"type": "message_stop"},
]

RESPONSES = [
    {"type": "response.created", "response": {"id": "resp_1"}},
    {"type": "response.output_item.added", "output_index": 0,
     "item": {"type": "message", "role": "assistant", "id": "m1"}},
    {"type": "response.reasoning_text.delta", "item_id": "r", "output_index": 0,
     "delta": "Think."},
    {"type": "response.output_text.delta", "item_id": "m1", "output_index": 0, "delta": "Hi"},
    {"type": "response.output_item.added", "output_index": 1,
     "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get",
              "arguments": ""}},
    {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1,
     "delta": "{\"a\""},
    {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1,
     "delta": ": 1}"},
    {"type": "response.completed", "response": {
        "id": "resp_1", "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}}},
]

GEMINI = [
    {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Think.", "thought": True}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get", "args": {"a": 1}}}]}, "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3,
                       "totalTokenCount": 8}},
]


def run(chunks: list[Any]) -> StreamProcessor:
    processor = StreamProcessor()
    for chunk in chunks:
        processor.process(chunk)
    return processor


@pytest.mark.parametrize(("chunks", "finish"), [
    (OPENAI, "tool_calls"), (ANTHROPIC, "tool_calls"), (RESPONSES, "stop"), (GEMINI, "stop"),
], ids=["openai", "anthropic", "responses", "gemini"])
def test_every_dialect_adds_up(chunks: list[Any], finish: str) -> None:
    p = run(chunks)
    assert (p.content, p.reasoning, p.role, p.finish_reason) == ("Hi", "Think.", "assistant",
                                                                 finish)
    assert p.usage == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    [call] = p.tool_calls
    assert call["function"]["name"] == "get"
    assert call["function"]["arguments"].replace(" ", "") == '{"a":1}'


def test_typed_chunks_give_the_same() -> None:
    ours = run([ChatCompletionChunk.model_validate(c) for c in OPENAI])
    sdk = run([oc.ChatCompletionChunk.model_validate(c) for c in OPENAI])
    plain = run(OPENAI)
    for p in (ours, sdk):
        assert (p.content, p.reasoning, p.finish_reason, p.usage, p.tool_calls) == (
            plain.content, plain.reasoning, plain.finish_reason, plain.usage, plain.tool_calls)
    typed = run([_anthropic_typed(e) for e in ANTHROPIC])
    assert (typed.content, typed.usage, typed.finish_reason) == ("Hi", run(ANTHROPIC).usage,
                                                                 "tool_calls")


def _anthropic_typed(event: dict[str, Any]) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(at.RawMessageStreamEvent).validate_python(event)


def test_single_chunks() -> None:
    assert process_stream_chunk(OPENAI[2]) == ChunkInfo(content="Hi")
    assert process_stream_chunk(OPENAI[3]).tool_calls == (
        ToolCallFragment(0, "call_1", "get", '{"a"'),)
    legacy = {"object": "text_completion", "choices": [{"index": 0, "text": "Hey",
                                                         "finish_reason": "length"}]}
    assert process_stream_chunk(legacy) == ChunkInfo(content="Hey", finish_reason="length")
    assert process_stream_chunk({"type": "transcript.text.delta", "delta": "one"}).content == "one"
    done = process_stream_chunk({"type": "transcript.text.done", "text": "one",
                                 "usage": {"type": "tokens", "input_tokens": 7,
                                           "output_tokens": 2, "total_tokens": 9}})
    assert done.usage == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert process_stream_chunk({"type": "ping"}) == ChunkInfo()
    with pytest.raises(TypeError):
        process_stream_chunk(42)
