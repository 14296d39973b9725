"""The sluicegate Python client: streams from the sluicegate gateway, from any
OpenAI-compatible server, or in-process (the gateway's router, no HTTP hop).

::

    from sluicegate.client import Client

    with Client() as client:                       # http://127.0.0.1:8400/v1
        with client.chat.stream(model="default",
                                messages=[{"role": "user", "content": "Hi"}]) as stream:
            for text in stream.text_stream:
                print(text, end="")
        print(stream.stats.ttft_ms, stream.usage)

A resumable stream (``client.chat.stream(..., resumable=True)``) survives a dropped connection:
the SDK reconnects and resumes after the last event received. ``stream.stream_id`` names it for
``client.chat.resume(stream_id, after=seq)`` and ``client.chat.cancel(stream_id)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._state import RateLimits

if TYPE_CHECKING:
    from .cache import CacheHit, StreamingCache
from .builder import BuilderError, ChatRequest, ChatRequestBuilder
from .callbacks import StreamCallbacks
from .chunks import ChunkInfo, StreamProcessor, TaskType, ToolCallFragment, process_stream_chunk
from .client import AsyncClient, Client
from .decorators import stream_llm, stream_llm_sync
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SluicegateError,
    StreamClosedError,
    StreamError,
    StreamResumeError,
    UnprocessableEntityError,
)
from .progress import ProgressTracker, RichProgress
from .stream import (
    AsyncChatStream,
    AsyncCompletionStream,
    ChatStream,
    CompletionStream,
    StreamMetadata,
    StreamStats,
)
from .types import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    CompletionChunk,
    CompletionUsage,
    StreamCancellation,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncChatStream",
    "AsyncClient",
    "AsyncCompletionStream",
    "AuthenticationError",
    "BadRequestError",
    "BuilderError",
    "CacheHit",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatRequest",
    "ChatRequestBuilder",
    "ChatStream",
    "ChunkInfo",
    "Client",
    "ClientClosedError",
    "Completion",
    "CompletionChunk",
    "CompletionStream",
    "CompletionUsage",
    "ConflictError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProgressTracker",
    "RateLimitError",
    "RateLimits",
    "RichProgress",
    "SluicegateError",
    "StreamCallbacks",
    "StreamCancellation",
    "StreamClosedError",
    "StreamError",
    "StreamMetadata",
    "StreamProcessor",
    "StreamResumeError",
    "StreamStats",
    "StreamingCache",
    "TaskType",
    "ToolCallFragment",
    "UnprocessableEntityError",
    "process_stream_chunk",
    "stream_llm",
    "stream_llm_sync",
]


def __getattr__(name: str) -> object:
    # The stream cache (and its embedding code) loads on first use, not with the SDK.
    if name in ("CacheHit", "StreamingCache"):
        from . import cache

        return getattr(cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
