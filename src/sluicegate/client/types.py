"""Typed responses (pydantic v2 models, ``extra="allow"``: unknown fields are kept).

Streaming: ``ChatCompletionChunk`` (``object == "chat.completion.chunk"``) and
``CompletionChunk`` (``object == "text_completion"``); the final usage chunk has
``choices == []`` and ``usage`` set. Non-streaming / ``final()``: ``ChatCompletion`` and
``Completion``. Token counts are in tokens.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = [
    "AssistantMessage",
    "ChatCompletion",
    "ChatCompletionChunk",
    "Choice",
    "ChoiceDelta",
    "ChunkChoice",
    "Completion",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionUsage",
    "Function",
    "FunctionDelta",
    "StreamCancellation",
    "ToolCall",
    "ToolCallDelta",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class CompletionUsage(_Model):
    """Token counts; ``estimated`` is true when the gateway counted them itself."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False


class FunctionDelta(_Model):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Model):
    """A fragment of a tool call; fragments with the same ``index`` make one call."""

    index: int = 0
    id: str | None = None
    type: str | None = None
    function: FunctionDelta | None = None


class ChoiceDelta(_Model):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(_Model):
    index: int = 0
    delta: ChoiceDelta = ChoiceDelta()
    finish_reason: str | None = None
    logprobs: object = None


class ChatCompletionChunk(_Model):
    """One ``chat.completion.chunk`` event."""

    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChunkChoice] = []
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


class Function(_Model):
    name: str = ""
    arguments: str = ""


class ToolCall(_Model):
    id: str = ""
    type: str = "function"
    function: Function = Function()


class AssistantMessage(_Model):
    role: str = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(_Model):
    index: int = 0
    message: AssistantMessage = AssistantMessage()
    finish_reason: str | None = None
    logprobs: object = None


class ChatCompletion(_Model):
    """A whole chat completion (``object == "chat.completion"``)."""

    id: str = ""
    object: str = "chat.completion"
    created: int = 0
    model: str = ""
    choices: list[Choice] = []
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


class StreamCancellation(_Model):
    """The answer to ``chat.cancel(stream_id)`` (``DELETE /v1/chat/completions/{stream_id}``):
    ``id`` is the stream id, ``object == "chat.completion.stream"``, ``cancelled`` is true."""

    id: str = ""
    object: str = "chat.completion.stream"
    cancelled: bool = False


class CompletionChoice(_Model):
    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    logprobs: object = None


class CompletionChunk(_Model):
    """One ``text_completion`` stream event (legacy completions)."""

    id: str = ""
    object: str = "text_completion"
    created: int = 0
    model: str = ""
    choices: list[CompletionChoice] = []
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


class Completion(_Model):
    """A whole text completion (``object == "text_completion"``)."""

    id: str = ""
    object: str = "text_completion"
    created: int = 0
    model: str = ""
    choices: list[CompletionChoice] = []
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
