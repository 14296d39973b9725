"""Decorators turning a prompt-building function into a streaming call.

::

    @stream_llm(model="default", max_tokens=64)
    async def ask(question: str) -> str:            # a prompt string, or a list of messages
        return f"Answer briefly: {question}"

    async for text in ask("why is the sky blue?"): ...      # AsyncIterator[str]

    @stream_llm_sync(model="mock/a", with_metadata=True)
    def ask_sync(question: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": question}]

    for event in ask_sync("hi"): event["chunk"], event["provider"] ...   # Iterator[ChunkEvent]

The decorated function runs when iteration starts; the connection is closed when iteration ends,
breaks or raises (for the async form: when the generator is closed, e.g. by
``contextlib.aclosing``, or its task is cancelled). Errors are those of ``client.chat.stream``
(``APIStatusError`` subclasses, ``APIConnectionError``, ``APITimeoutError``, ``StreamError``);
a prompt of the wrong type raises ``TypeError``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypedDict, overload

from .callbacks import StreamCallbacks
from .progress import ProgressSink
from .types import ChatCompletionChunk

if TYPE_CHECKING:
    from .cache import StreamingCache  # only annotations: the cache loads when it is used
    from .client import AsyncClient, Client

__all__ = ["ChunkEvent", "Prompt", "aclose_default_client", "close_default_clients",
           "stream_llm", "stream_llm_sync"]

P = ParamSpec("P")
Prompt = str | Sequence[Mapping[str, Any]]
"""A user prompt, or the whole list of OpenAI chat messages."""

DEFAULT_BASE_URL = "http://127.0.0.1:8400/v1"


class ChunkEvent(TypedDict):
    """What ``with_metadata=True`` yields, once per chunk (the usage chunk included)."""

    chunk: ChatCompletionChunk
    chunk_index: int  # 0-based, over every chunk of the stream
    provider: str | None  # the gateway's X-Sluicegate-Provider header, when known
    model: str | None  # the model that answered
    text: str  # choice 0's content delta ("" for role, finish and usage chunks)


_sync_clients: dict[int, Client] = {}
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, AsyncClient]] = (
    weakref.WeakKeyDictionary())
_lock = threading.Lock()


def _settings() -> tuple[str, str | None]:
    return (os.environ.get("SLUICEGATE_BASE_URL") or DEFAULT_BASE_URL,
            os.environ.get("SLUICEGATE_API_KEY") or None)


def _default_client(max_retries: int) -> Client:
    """The module's shared ``Client`` for ``max_retries``, created on first use from
    ``SLUICEGATE_BASE_URL`` (default ``http://127.0.0.1:8400/v1``) and ``SLUICEGATE_API_KEY``."""
    from .client import Client

    with _lock:
        client = _sync_clients.get(max_retries)
        if client is None:
            base_url, api_key = _settings()
            client = Client(base_url=base_url, api_key=api_key, max_retries=max_retries)
            _sync_clients[max_retries] = client
        return client


def _default_async_client(max_retries: int) -> AsyncClient:
    """Like ``_default_client``, one ``AsyncClient`` per running event loop (a connection pool
    cannot move between loops)."""
    from .client import AsyncClient

    loop = asyncio.get_running_loop()
    per_loop = _async_clients.setdefault(loop, {})
    client = per_loop.get(max_retries)
    if client is None:
        base_url, api_key = _settings()
        client = AsyncClient(base_url=base_url, api_key=api_key, max_retries=max_retries)
        per_loop[max_retries] = client
    return client


def close_default_clients() -> None:
    """Close the shared sync clients the decorators created (new ones are made on next use)."""
    with _lock:
        clients = list(_sync_clients.values())
        _sync_clients.clear()
    for client in clients:
        client.close()


async def aclose_default_client() -> None:
    """Close the shared async clients the decorators created for the running event loop."""
    per_loop = _async_clients.pop(asyncio.get_running_loop(), {})
    for client in per_loop.values():
        await client.aclose()


def _messages(prompt: object) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, Sequence) and all(isinstance(m, Mapping) for m in prompt):
        return [dict(m) for m in prompt]
    raise TypeError("a stream_llm function must return a prompt string or a list of message "
                    f"dicts, not {type(prompt).__name__}")


def _cache_request(model: str, messages: list[dict[str, Any]], fallbacks: list[str] | None,
                   with_metadata: bool, params: Mapping[str, Any]) -> dict[str, Any]:
    """What a ``StreamingCache`` keys a decorated call on (the request, and what is yielded)."""
    return {**params, "model": model, "messages": messages, "models": fallbacks,
            "yields": "events" if with_metadata else "text"}


def _event(chunk: ChatCompletionChunk, index: int, provider: str | None,
           model: str | None) -> ChunkEvent:
    text = ""
    for choice in chunk.choices:
        if choice.index == 0:
            text = choice.delta.content or ""
    return ChunkEvent(chunk=chunk, chunk_index=index, provider=provider,
                      model=model or chunk.model or None, text=text)


@overload
def stream_llm(
    model: str = ..., *, fallbacks: Sequence[str] | None = ..., max_retries: int = ...,
    timeout: float | None = ..., callbacks: StreamCallbacks | None = ...,
    progress: ProgressSink | None = ..., with_metadata: Literal[False] = ...,
    client: AsyncClient | None = ..., cache: StreamingCache | None = ..., **params: Any,
) -> Callable[[Callable[P, Awaitable[Prompt] | Prompt]], Callable[P, AsyncIterator[str]]]: ...


@overload
def stream_llm(
    model: str = ..., *, fallbacks: Sequence[str] | None = ..., max_retries: int = ...,
    timeout: float | None = ..., callbacks: StreamCallbacks | None = ...,
    progress: ProgressSink | None = ..., with_metadata: Literal[True],
    client: AsyncClient | None = ..., cache: StreamingCache | None = ..., **params: Any,
) -> Callable[[Callable[P, Awaitable[Prompt] | Prompt]], Callable[P, AsyncIterator[ChunkEvent]]]:
    ...


def stream_llm(
    model: str = "default", *, fallbacks: Sequence[str] | None = None, max_retries: int = 2,
    timeout: float | None = None, callbacks: StreamCallbacks | None = None,
    progress: ProgressSink | None = None, with_metadata: bool = False,
    client: AsyncClient | None = None, cache: StreamingCache | None = None, **params: Any,
) -> Callable[[Callable[P, Awaitable[Prompt] | Prompt]], Callable[P, AsyncIterator[Any]]]:
    """Decorate an async (or sync) function returning a ``Prompt``; calling the result returns
    an ``AsyncIterator[str]`` of content deltas, or of ``ChunkEvent`` dicts with
    ``with_metadata=True``.

    ``model``: the first model; ``fallbacks``: models tried after it (sent as ``models``);
    ``max_retries``: retries before the first token, for the default client only (a given
    ``client`` keeps its own setting); ``timeout``: whole stream, s; ``callbacks`` /
    ``progress``: passed to every stream; ``params``: other OpenAI fields (``max_tokens``,
    ``temperature``, ``stall_timeout`` (s), ``flush_chars``, ...). ``client=None`` uses a shared
    ``AsyncClient`` per event loop, configured from ``SLUICEGATE_BASE_URL`` /
    ``SLUICEGATE_API_KEY``. ``cache``: a ``StreamingCache``; a hit yields the recorded items
    without a request (exact, or semantic on the last user message), a stream read to its end
    is recorded.
    """
    fallback_list = list(fallbacks) if fallbacks else None

    def decorate(fn: Callable[P, Awaitable[Prompt] | Prompt]) -> Callable[P, AsyncIterator[Any]]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[Any]:
            prompt = fn(*args, **kwargs)
            if inspect.isawaitable(prompt):
                prompt = await prompt
            messages = _messages(prompt)
            key = _cache_request(model, messages, fallback_list, with_metadata, params)
            if cache is not None and (hit := await cache.alookup(key)) is not None:
                for item in hit.items:
                    yield item
                return
            recorded: list[Any] = []
            aclient = client if client is not None else _default_async_client(max_retries)
            stream = aclient.chat.stream(model=model, messages=messages, timeout=timeout,
                                         callbacks=callbacks, progress=progress,
                                         fallbacks=fallback_list, **params)
            async with stream as s:
                if not with_metadata:
                    async for text in s.text_stream:
                        if text:
                            recorded.append(text)
                            yield text
                else:
                    index = 0
                    async for chunk in s:
                        event = _event(chunk, index, s.stats.provider, s.stats.model)
                        recorded.append(event)
                        yield event
                        index += 1
            if cache is not None:
                await cache.astore(key, recorded)

        return run

    return decorate


@overload
def stream_llm_sync(
    model: str = ..., *, fallbacks: Sequence[str] | None = ..., max_retries: int = ...,
    timeout: float | None = ..., callbacks: StreamCallbacks | None = ...,
    progress: ProgressSink | None = ..., with_metadata: Literal[False] = ...,
    client: Client | None = ..., cache: StreamingCache | None = ..., **params: Any,
) -> Callable[[Callable[P, Prompt]], Callable[P, Iterator[str]]]: ...


@overload
def stream_llm_sync(
    model: str = ..., *, fallbacks: Sequence[str] | None = ..., max_retries: int = ...,
    timeout: float | None = ..., callbacks: StreamCallbacks | None = ...,
    progress: ProgressSink | None = ..., with_metadata: Literal[True],
    client: Client | None = ..., cache: StreamingCache | None = ..., **params: Any,
) -> Callable[[Callable[P, Prompt]], Callable[P, Iterator[ChunkEvent]]]: ...


def stream_llm_sync(
    model: str = "default", *, fallbacks: Sequence[str] | None = None, max_retries: int = 2,
    timeout: float | None = None, callbacks: StreamCallbacks | None = None,
    progress: ProgressSink | None = None, with_metadata: bool = False,
    client: Client | None = None, cache: StreamingCache | None = None, **params: Any,
) -> Callable[[Callable[P, Prompt]], Callable[P, Iterator[Any]]]:
    """``stream_llm`` for a sync function: calling the result returns an ``Iterator[str]`` of
    content deltas, or of ``ChunkEvent`` dicts with ``with_metadata=True``. Same arguments;
    ``client=None`` uses a shared ``Client`` (one per ``max_retries`` value); ``cache``: a
    ``StreamingCache`` (see ``stream_llm``)."""
    fallback_list = list(fallbacks) if fallbacks else None

    def decorate(fn: Callable[P, Prompt]) -> Callable[P, Iterator[Any]]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> Iterator[Any]:
            messages = _messages(fn(*args, **kwargs))
            key = _cache_request(model, messages, fallback_list, with_metadata, params)
            if cache is not None and (hit := cache.lookup(key)) is not None:
                yield from hit.items
                return
            recorded: list[Any] = []
            sclient = client if client is not None else _default_client(max_retries)
            stream = sclient.chat.stream(model=model, messages=messages, timeout=timeout,
                                         callbacks=callbacks, progress=progress,
                                         fallbacks=fallback_list, **params)
            with stream as s:
                if not with_metadata:
                    for text in s.text_stream:
                        if text:
                            recorded.append(text)
                            yield text
                else:
                    for index, chunk in enumerate(s):
                        event = _event(chunk, index, s.stats.provider, s.stats.model)
                        recorded.append(event)
                        yield event
            if cache is not None:
                cache.store(key, recorded)

        return run

    return decorate
