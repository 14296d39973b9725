"""Request bodies and the ``chat`` / ``completions`` resources of both clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import quote

from ._resume import DEFAULT_RESUME_RETRIES
from .callbacks import StreamCallbacks
from .stream import AsyncChatStream, AsyncCompletionStream, ChatStream, CompletionStream
from .types import ChatCompletion, ChatCompletionChunk, Completion, StreamCancellation

if TYPE_CHECKING:
    from ._loop import LoopThread
    from ._source import Engine
    from .batch import BatchRequest


class _Owner(Protocol):
    """What a resource uses of its client (``Client`` / ``AsyncClient``): a protocol, so this
    module needs no import of ``client`` (which imports it)."""

    def _engine(self, path: str, body: dict[str, Any], timeout: float | None,
                stall_timeout: float | None,
                resume_retries: int = DEFAULT_RESUME_RETRIES) -> Engine: ...

    def _resume_engine(self, path: str, stream_id: str, after: int, timeout: float | None,
                       stall_timeout: float | None, resume_retries: int) -> Engine: ...

    def _callbacks_for(self, callbacks: StreamCallbacks | None) -> list[StreamCallbacks]: ...


class Client(_Owner, Protocol):
    _loop: LoopThread

    @property
    def chat(self) -> Chat: ...

    def _create(self, path: str, body: dict[str, Any], timeout: float | None
                ) -> dict[str, Any]: ...

    def _delete(self, path: str, timeout: float | None) -> dict[str, Any]: ...


class AsyncClient(_Owner, Protocol):
    @property
    def chat(self) -> AsyncChat: ...

    async def _create(self, path: str, body: dict[str, Any], limit_s: float | None
                      ) -> dict[str, Any]: ...

    async def _delete(self, path: str, limit_s: float | None) -> dict[str, Any]: ...

__all__ = ["AsyncChat", "AsyncCompletions", "Chat", "Completions", "chat_body",
           "completion_body"]

CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"


@runtime_checkable
class HasBody(Protocol):
    """A prepared request (``ChatRequest`` from ``ChatRequestBuilder.build()``)."""

    def to_body(self) -> dict[str, Any]: ...


def _message(m: object) -> dict[str, Any]:
    dump = getattr(m, "model_dump", None)
    if callable(dump):
        return dict(dump(exclude_none=True))
    if isinstance(m, Mapping):
        return dict(m)
    raise TypeError(f"a message must be a dict, not {type(m).__name__}")


def _finish(body: dict[str, Any], fallbacks: Iterable[str] | None, stream: bool,
            resumable: bool = False) -> dict[str, Any]:
    if fallbacks:
        body["models"] = [body.get("model"), *fallbacks]
    if stream:
        body["stream"] = True
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        if resumable:
            options["resumable"] = True
        body["stream_options"] = options
    else:
        body["stream"] = False
        body.pop("stream_options", None)
    return body


def chat_body(model: str | HasBody, messages: Iterable[object] | None,
              fallbacks: Iterable[str] | None, params: Mapping[str, Any], *,
              stream: bool, resumable: bool = False) -> dict[str, Any]:
    """The JSON body: a request's ``to_body()`` (or ``{"model": model}``), then ``messages``
    and ``params`` on top; ``fallbacks`` → ``models: [model, *fallbacks]``; ``stream`` and
    ``stream_options.include_usage`` forced for streams, and ``stream_options.resumable`` when
    ``resumable`` (merged into the other stream options). A ``task_type`` param (``TaskType``
    or a task name; on ``stream``, ``create`` and the decorators) becomes the gateway's
    ``task`` field: the task's models serve the request (``sluicegate.tasks``)."""
    body: dict[str, Any] = {"model": model} if isinstance(model, str) else dict(model.to_body())
    if messages is not None:
        body["messages"] = [_message(m) for m in messages]
    body.update(params)
    if (task := body.pop("task_type", None)) is not None:  # TaskType or its name → "task"
        body["task"] = str(getattr(task, "value", task))
    return _finish(body, fallbacks, stream, resumable)


def completion_body(model: str, prompt: str | None, fallbacks: Iterable[str] | None,
                    params: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
    """The legacy completions body (``prompt`` one string)."""
    body: dict[str, Any] = {"model": model}
    if prompt is not None:
        body["prompt"] = prompt
    body.update(params)
    return _finish(body, fallbacks, stream)


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return value if isinstance(value, int) else None


def _stream_path(stream_id: str) -> str:
    """``/chat/completions/{stream_id}``: a resumable stream's resource."""
    if not stream_id:
        raise ValueError("stream_id must not be empty")
    return f"{CHAT_PATH}/{quote(stream_id, safe='')}"


class Chat:
    """``client.chat``: ``stream``, ``create``, ``resume``, ``cancel``, ``stream_many``,
    ``run_many``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def stream(self, model: str | HasBody = "default", messages: Iterable[object] | None = None,
               *, timeout: float | None = None, stall_timeout: float | None = None,
               callbacks: StreamCallbacks | None = None, progress: Any = None,
               flush_chars: int | None = None, flush_ms: float | None = None,
               fallbacks: Iterable[str] | None = None, resumable: bool = False,
               resume_retries: int = DEFAULT_RESUME_RETRIES, **params: Any) -> ChatStream:
        """A ``ChatStream`` (opens at first use). ``model`` is a model name or a
        ``ChatRequest``; ``params``: any OpenAI field (``max_tokens``, ``n``, ``tools``, the
        gateway's ``timeouts``…). ``timeout`` / ``stall_timeout`` in s.

        ``resumable``: ask the gateway for a resumable stream (``stream_options.resumable``;
        False leaves the body as it is, so a ``ChatRequest`` or ``stream_options`` asking for
        one still gets one). A connection that drops before the end is then resumed from the
        last event received, the loop seeing each chunk once, in order; ``resume_retries``
        bounds the reconnections in a row that bring nothing new (backoff with jitter: the
        first wait 0.1–0.25 s, doubling, at most 2 s). ``timeout`` covers the reconnections,
        ``stall_timeout`` each wait, a reconnection included. ``stream.stream_id`` names the
        stream for ``resume`` / ``cancel``. Besides the usual errors, a resumable stream may
        raise ``StreamResumeError`` (the gateway refused to resume it) and, once the
        reconnections ran out, the last ``APIConnectionError``; both carry ``partial_text``.
        An in-process client ignores ``resumable`` (no connection to drop)."""
        body = chat_body(model, messages, fallbacks, params, stream=True, resumable=resumable)
        return ChatStream(
            self._client._engine(CHAT_PATH, body, timeout, stall_timeout, resume_retries),
            self._client._loop, callbacks=self._client._callbacks_for(callbacks),
            progress=progress, flush_chars=flush_chars, flush_ms=flush_ms,
            max_tokens=_max_tokens(body))

    def resume(self, stream_id: str, after: int = 0, *, timeout: float | None = None,
               stall_timeout: float | None = None, callbacks: StreamCallbacks | None = None,
               progress: Any = None, flush_chars: int | None = None,
               flush_ms: float | None = None,
               resume_retries: int = DEFAULT_RESUME_RETRIES) -> ChatStream:
        """A ``ChatStream`` of the resumable stream ``stream_id`` (``stream.stream_id``): its
        chunks after seq ``after`` (the ``n`` of an event id ``<stream_id>:<n>``, as in
        ``stream.last_event_id``; 0: from the start), then the live ones, read from
        ``GET /v1/chat/completions/{stream_id}/stream`` with the client's ``Authorization``.
        It opens at first use and resumes itself as ``stream(resumable=True)`` does (the first
        request included: connection errors and 503s are retried). Its stats and ``final()``
        cover the chunks it reads. Raises, when used, ``StreamResumeError`` (404
        ``stream_not_found``, 400 ``invalid_last_event_id``, 410 ``stream_events_expired``,
        a 503 ``state_unavailable`` outlasting the retries), ``APIConnectionError``,
        ``APITimeoutError``; here, ``ValueError`` for an empty ``stream_id`` or a negative
        ``after`` and ``NotImplementedError`` for an in-process client."""
        engine = self._client._resume_engine(CHAT_PATH, stream_id, after, timeout,
                                             stall_timeout, resume_retries)
        return ChatStream(engine, self._client._loop,
                          callbacks=self._client._callbacks_for(callbacks), progress=progress,
                          flush_chars=flush_chars, flush_ms=flush_ms)

    def cancel(self, stream_id: str, *, timeout: float | None = None) -> StreamCancellation:
        """Cancel the resumable stream ``stream_id`` (``DELETE
        /v1/chat/completions/{stream_id}``), wherever it is being read; returns the gateway's
        answer. Raises ``NotFoundError`` for an unknown (or expired) stream id, other
        ``APIStatusError`` subclasses, ``APIConnectionError``, ``APITimeoutError``
        (``timeout`` s); ``NotImplementedError`` for an in-process client."""
        return StreamCancellation.model_validate(
            self._client._delete(_stream_path(stream_id), timeout))

    def create(self, model: str | HasBody = "default", messages: Iterable[object] | None = None,
               *, timeout: float | None = None, fallbacks: Iterable[str] | None = None,
               **params: Any) -> ChatCompletion:
        """A whole ``ChatCompletion`` (non-streaming request). Raises ``APIStatusError``
        subclasses, ``APIConnectionError``, ``APITimeoutError``."""
        body = chat_body(model, messages, fallbacks, params, stream=False)
        return ChatCompletion.model_validate(self._client._create(CHAT_PATH, body, timeout))

    def stream_many(self, requests: Iterable[BatchRequest], concurrency: int = 4
                    ) -> Iterator[tuple[int, ChatCompletionChunk]]:
        """``(request_index, chunk)`` as they arrive from up to ``concurrency`` streams; a
        request is a ``ChatRequest`` or a dict of ``stream()`` arguments."""
        from . import batch

        return batch.stream_many(self._client, requests, concurrency)

    def run_many(self, requests: Iterable[BatchRequest], concurrency: int = 4
                 ) -> list[ChatCompletion]:
        """Every request's ``ChatCompletion``, in input order (up to ``concurrency`` at once)."""
        from . import batch

        return batch.run_many(self._client, requests, concurrency)


class Completions:
    """``client.completions``: legacy text completions."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def stream(self, model: str = "default", prompt: str | None = None, *,
               timeout: float | None = None, stall_timeout: float | None = None,
               callbacks: StreamCallbacks | None = None, progress: Any = None,
               flush_chars: int | None = None, flush_ms: float | None = None,
               fallbacks: Iterable[str] | None = None, **params: Any) -> CompletionStream:
        """A ``CompletionStream`` of ``CompletionChunk`` (text), opening at first use."""
        body = completion_body(model, prompt, fallbacks, params, stream=True)
        return CompletionStream(
            self._client._engine(COMPLETIONS_PATH, body, timeout, stall_timeout),
            self._client._loop, callbacks=self._client._callbacks_for(callbacks),
            progress=progress, flush_chars=flush_chars, flush_ms=flush_ms,
            max_tokens=_max_tokens(body))

    def create(self, model: str = "default", prompt: str | None = None, *,
               timeout: float | None = None, fallbacks: Iterable[str] | None = None,
               **params: Any) -> Completion:
        """A whole ``Completion`` (non-streaming request)."""
        body = completion_body(model, prompt, fallbacks, params, stream=False)
        return Completion.model_validate(self._client._create(COMPLETIONS_PATH, body, timeout))


class AsyncChat:
    """``aclient.chat``: ``stream`` and ``resume`` (not coroutines), ``create``, ``cancel``,
    ``stream_many``, ``run_many``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def stream(self, model: str | HasBody = "default", messages: Iterable[object] | None = None,
               *, timeout: float | None = None, stall_timeout: float | None = None,
               callbacks: StreamCallbacks | None = None, progress: Any = None,
               flush_chars: int | None = None, flush_ms: float | None = None,
               fallbacks: Iterable[str] | None = None, resumable: bool = False,
               resume_retries: int = DEFAULT_RESUME_RETRIES, **params: Any) -> AsyncChatStream:
        """An ``AsyncChatStream`` (opens at first use); arguments (``resumable`` and
        ``resume_retries`` included) and errors as ``Client.chat.stream``."""
        body = chat_body(model, messages, fallbacks, params, stream=True, resumable=resumable)
        return AsyncChatStream(
            self._client._engine(CHAT_PATH, body, timeout, stall_timeout, resume_retries),
            callbacks=self._client._callbacks_for(callbacks), progress=progress,
            flush_chars=flush_chars, flush_ms=flush_ms, max_tokens=_max_tokens(body))

    def resume(self, stream_id: str, after: int = 0, *, timeout: float | None = None,
               stall_timeout: float | None = None, callbacks: StreamCallbacks | None = None,
               progress: Any = None, flush_chars: int | None = None,
               flush_ms: float | None = None,
               resume_retries: int = DEFAULT_RESUME_RETRIES) -> AsyncChatStream:
        """An ``AsyncChatStream`` of the resumable stream ``stream_id`` after seq ``after``
        (not a coroutine: it opens at first use); arguments and errors as
        ``Client.chat.resume``."""
        engine = self._client._resume_engine(CHAT_PATH, stream_id, after, timeout,
                                             stall_timeout, resume_retries)
        return AsyncChatStream(engine, callbacks=self._client._callbacks_for(callbacks),
                               progress=progress, flush_chars=flush_chars, flush_ms=flush_ms)

    async def cancel(self, stream_id: str, *,
                     timeout: float | None = None,  # noqa: ASYNC109 - the API's name (s)
                     ) -> StreamCancellation:
        """Cancel the resumable stream ``stream_id``; as ``Client.chat.cancel``."""
        return StreamCancellation.model_validate(
            await self._client._delete(_stream_path(stream_id), timeout))

    async def create(self, model: str | HasBody = "default",
                     messages: Iterable[object] | None = None, *,
                     timeout: float | None = None,  # noqa: ASYNC109 - the API's name (s)
                     fallbacks: Iterable[str] | None = None, **params: Any) -> ChatCompletion:
        """A whole ``ChatCompletion`` (non-streaming request); errors as ``Client``'s."""
        body = chat_body(model, messages, fallbacks, params, stream=False)
        return ChatCompletion.model_validate(
            await self._client._create(CHAT_PATH, body, timeout))

    def stream_many(self, requests: Iterable[BatchRequest], concurrency: int = 4
                    ) -> AsyncIterator[tuple[int, ChatCompletionChunk]]:
        """``(request_index, chunk)`` as they arrive from up to ``concurrency`` streams."""
        from . import batch

        return batch.astream_many(self._client, requests, concurrency)

    async def run_many(self, requests: Iterable[BatchRequest], concurrency: int = 4
                       ) -> list[ChatCompletion]:
        """Every request's ``ChatCompletion``, in input order (up to ``concurrency`` at once)."""
        from . import batch

        return await batch.arun_many(self._client, requests, concurrency)


class AsyncCompletions:
    """``aclient.completions``: legacy text completions."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def stream(self, model: str = "default", prompt: str | None = None, *,
               timeout: float | None = None, stall_timeout: float | None = None,
               callbacks: StreamCallbacks | None = None, progress: Any = None,
               flush_chars: int | None = None, flush_ms: float | None = None,
               fallbacks: Iterable[str] | None = None, **params: Any) -> AsyncCompletionStream:
        """An ``AsyncCompletionStream`` of ``CompletionChunk`` (text)."""
        body = completion_body(model, prompt, fallbacks, params, stream=True)
        return AsyncCompletionStream(
            self._client._engine(COMPLETIONS_PATH, body, timeout, stall_timeout),
            callbacks=self._client._callbacks_for(callbacks), progress=progress,
            flush_chars=flush_chars, flush_ms=flush_ms, max_tokens=_max_tokens(body))

    async def create(self, model: str = "default", prompt: str | None = None, *,
                     timeout: float | None = None,  # noqa: ASYNC109 - the API's name (s)
                     fallbacks: Iterable[str] | None = None, **params: Any) -> Completion:
        """A whole ``Completion`` (non-streaming request)."""
        body = completion_body(model, prompt, fallbacks, params, stream=False)
        return Completion.model_validate(
            await self._client._create(COMPLETIONS_PATH, body, timeout))
