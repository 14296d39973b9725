"""The embedded local provider: OpenAI-dialect chunks from a ``LocalEngine``.

Chat requests are rendered with the transcript format of ``sluicegate.local.prompt``; text
completion prompts go to the model as they are. Every choice opens with a role chunk
(``delta: {"role": "assistant", "content": ""}``), then one chunk per decoded piece, then a
finish chunk (``stop`` or ``length``), then one usage chunk counted by the model's tokenizer.

The model is text-only: a content part other than ``text`` is a 400 naming the part, and so is
``tools`` (a base model cannot call them). Tool results in the history are rendered as text.
Closing the stream cancels the job; the engine stops before its next token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ..chunks import Chunk, Kind, chat_chunk, make_usage, text_chunk, usage_chunk
from ..errors import GatewayError, InvalidRequestError, UpstreamError
from ..local.engine import Finished, GenerationParams, Job, LocalEngine, Piece
from ..local.prompt import TURN_STOPS, render_chat_prompt
from ..schemas import ChatRequest, CompletionRequest
from .base import ChunkStream, Target

__all__ = ["LocalProvider", "LocalStream"]


class LocalStream(ChunkStream):
    """Chunks of one local job, in order; ``aclose()`` cancels the job."""

    usage_source = "tokenizer"

    def __init__(self, job: Job, kind: Kind) -> None:
        self._job = job
        self._kind = kind

    async def _iterate(self) -> AsyncIterator[list[Chunk]]:
        job = self._job
        chat = self._kind == "chat"
        started = -1
        while True:
            item = await job.queue.get()
            if isinstance(item, Piece):
                if not chat:
                    yield [text_chunk(item.index, item.text, item.finish_reason)]
                    continue
                batch: list[Chunk] = []
                if item.index != started:
                    started = item.index
                    batch.append(chat_chunk(item.index, {"role": "assistant", "content": ""}))
                if item.text:
                    batch.append(chat_chunk(item.index, {"content": item.text}))
                if item.finish_reason is not None:
                    batch.append(chat_chunk(item.index, {}, item.finish_reason))
                yield batch
            elif isinstance(item, Finished):
                yield [usage_chunk(self._kind,
                                   make_usage(item.prompt_tokens, item.completion_tokens))]
                return
            elif isinstance(item, GatewayError):
                raise item
            else:
                raise UpstreamError("The local model failed.", reason="local_failed",
                                    detail=repr(item)) from item

    async def aclose(self) -> None:
        self._job.cancel()

    def close_now(self) -> bool:
        self._job.cancel()
        return True

    def partial_usage(self) -> dict[str, Any]:
        """Exact counts for a stream that ended early: the prompt and every sampled token."""
        return make_usage(len(self._job.prompt_tokens), self._job.completion_tokens)


def _params(
    request: ChatRequest | CompletionRequest, extra_stops: tuple[str, ...], *, trim: bool
) -> GenerationParams:
    defaults = GenerationParams()
    return GenerationParams(
        max_tokens=request.token_limit,
        temperature=defaults.temperature if request.temperature is None else request.temperature,
        top_p=defaults.top_p if request.top_p is None else request.top_p,
        stop=(*request.stop_list(), *extra_stops),
        seed=request.seed,
        n=request.n,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        trim=trim,
    )


def _check_text_only(request: ChatRequest) -> None:
    if request.tools:
        raise InvalidRequestError("This model cannot call tools: 'tools' is not supported.",
                                  param="tools")
    for i, message in enumerate(request.messages):
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if part.get("type") != "text":
                    raise InvalidRequestError(
                        f"This model is text-only: content part type {part.get('type')!r} is "
                        "not supported.",
                        param=f"messages.{i}.content.{j}",
                    )


def _cancel_admitted(submit: asyncio.Future[Job]) -> None:
    if not submit.cancelled() and submit.exception() is None:
        submit.result().cancel()


class LocalProvider:
    """Serves one ``LocalEngine`` (provider name ``local``)."""

    def __init__(self, engine: LocalEngine, name: str = "local") -> None:
        self.name = name
        self.engine = engine

    async def open_chat(self, request: ChatRequest, target: Target, *,
                        connect_s: float | None = 10.0) -> ChunkStream:
        _check_text_only(request)
        prompt = render_chat_prompt(request.messages)
        return await self._open(prompt, _params(request, TURN_STOPS, trim=True), "chat")

    async def open_text(self, request: CompletionRequest, target: Target, *,
                        connect_s: float | None = 10.0) -> ChunkStream:
        return await self._open(request.prompt_text(), _params(request, (), trim=False), "text")

    async def _open(self, prompt: str, params: GenerationParams, kind: Kind) -> ChunkStream:
        loop = asyncio.get_running_loop()
        if not self.engine.loaded:
            await asyncio.to_thread(self.engine.load)
        # Tokenizing runs in a thread: a long prompt must not stall every other stream. If the
        # client leaves meanwhile, the job admitted after all is cancelled at once.
        submit = asyncio.ensure_future(
            asyncio.to_thread(self.engine.submit, prompt, params, loop))
        try:
            job = await asyncio.shield(submit)
        except asyncio.CancelledError:
            submit.add_done_callback(_cancel_admitted)
            raise
        return LocalStream(job, kind)

    async def aclose(self) -> None:
        self.engine.close()
