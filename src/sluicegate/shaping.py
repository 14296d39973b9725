"""Shapes a provider's chunks into the gateway's spec-exact OpenAI stream (docs/wire.md §2, §3).

Per chunk (the hot path) the shaper only overwrites ``id``, ``created`` and ``model`` and looks at
each choice's ``index`` and ``finish_reason``; the server then serialises the dict once.

What it guarantees to the client:

- the same ``id`` and ``created`` on every chunk, and the model name the client asked for;
- a role chunk first for every choice index (``delta.role = "assistant"`` is added to a choice's
  first chunk if the provider did not send one);
- a finish chunk for every choice that started;
- usage at the end, in one chunk with ``choices: []``, only when the client asked for it
  (``stream_options.include_usage``); when the provider sent none, it is estimated from the
  delivered characters and marked ``"estimated": true``;
- ``choices: null`` from an upstream (seen from vLLM) is treated as ``[]``.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from .chunks import Chunk, Kind, chat_chunk, estimate_tokens, make_usage, new_id, now, text_chunk
from .errors import GatewayError, UpstreamError
from .schemas import ChatRequest, CompletionRequest
from .tokens import TokenCounter, counter_for

__all__ = ["StreamShaper", "shaper_for"]


class StreamShaper:
    """Stateful per-stream rewriter. ``shape(chunk) -> chunk | None`` (None: drop it).

    When the provider reports no usage, it is estimated from ``prompt_text`` and the content
    delivered, with ``count_tokens`` (text → tokens) if given, else at about 4 characters a
    token.
    """

    __slots__ = (
        "_chat",
        "carried",
        "carried_pieces",
        "count_tokens",
        "created",
        "finished",
        "first_content_at",
        "id",
        "include_usage",
        "kind",
        "model",
        "pieces",
        "prompt_text",
        "started",
        "usage",
    )

    def __init__(self, kind: Kind, model: str, *, include_usage: bool, prompt_text: str = "",
                 count_tokens: TokenCounter | None = None):
        self.kind: Kind = kind
        self.id = new_id(kind)
        self.created = now()
        self.model = model
        self.include_usage = include_usage
        self.started: set[int] = set()
        self.finished: dict[int, str] = {}
        self.usage: dict[str, Any] | None = None
        self.first_content_at: float | None = None  # time.perf_counter() of the first content
        self._chat = kind == "chat"
        self.prompt_text = prompt_text
        self.count_tokens = count_tokens  # None: about 4 characters a token
        self.pieces: list[str] = []  # the content delivered, for token counts and continuation
        self.carried: dict[str, Any] | None = None  # usage of earlier, continued attempts
        self.carried_pieces = 0

    def shape(self, chunk: Chunk) -> Chunk | None:
        """Rewrite one provider chunk in place; returns None when it must not be sent."""
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            # A usage-only chunk (or an empty one): held back, sent by closing_chunks().
            return None
        if usage is not None and not self.include_usage:
            chunk["usage"] = None
        chunk["id"] = self.id
        chunk["created"] = self.created
        chunk["model"] = self.model
        chat = self._chat
        for choice in choices:
            index = choice.get("index", 0)
            if index not in self.started:
                self.started.add(index)
                if chat:
                    delta = choice.get("delta")
                    if delta is None:
                        delta = choice["delta"] = {}
                    if "role" not in delta:
                        delta["role"] = "assistant"
            content = choice["delta"].get("content") if chat else choice.get("text")
            if content:
                if self.first_content_at is None:
                    self.first_content_at = perf_counter()
                self.pieces.append(content)
            reason = choice.get("finish_reason")
            if reason is not None:
                self.finished[index] = reason
        return chunk

    @property
    def unfinished(self) -> list[int]:
        """Choice indexes that started but have no finish_reason yet."""
        return sorted(i for i in self.started if i not in self.finished)

    def final_usage(self) -> dict[str, Any]:
        """The provider's usage, or an estimate marked ``"estimated": true`` (tokens); after a
        continuation, the sum over the attempts."""
        usage = self.usage
        if usage is None:
            completion = "".join(self.pieces[self.carried_pieces:])
            if self.count_tokens is not None:
                usage = make_usage(self.count_tokens(self.prompt_text),
                                   self.count_tokens(completion), estimated=True)
            else:
                usage = make_usage(estimate_tokens(len(self.prompt_text)),
                                   estimate_tokens(len(completion)), estimated=True)
        if self.carried is None:
            return usage
        return _add_usage(self.carried, usage)

    def carry_usage(self, usage: dict[str, Any] | None) -> None:
        """Close the current attempt's usage (its own, or ``usage``, or an estimate) before a
        continuation on another deployment; ``final_usage`` adds it to the next one's."""
        if self.usage is None:
            self.usage = usage
        self.carried = self.final_usage()
        self.carried_pieces = len(self.pieces)
        self.usage = None

    def closing_chunks(self) -> list[Chunk]:
        """Chunks owed at a clean end: the usage chunk if asked for.

        Raises ``UpstreamError`` if a started choice never got a finish_reason (the upstream
        ended early), so the caller sends the error frame instead of a false ``stop``.
        """
        if self.unfinished:
            raise UpstreamError("The upstream ended the stream before every choice finished.",
                                reason="ended_early")
        if not self.started:
            # Nothing at all was produced: still give the client one role + finish chunk.
            out = [self._finish_chunk(0, "stop", first=True)]
            self.started.add(0)
            self.finished[0] = "stop"
        else:
            out = []
        if self.include_usage:
            out.append(self.usage_chunk())
        return out

    def usage_chunk(self) -> Chunk:
        """The usage chunk (``choices: []``, ``usage`` from ``final_usage``), sent last before
        ``[DONE]``, or just before the error frame of a stream that failed mid-way."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.final_usage(),
        }

    def _finish_chunk(self, index: int, reason: str, *, first: bool = False) -> Chunk:
        if self.kind == "chat":
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            return chat_chunk(index, delta, reason, id=self.id, created=self.created,
                              model=self.model)
        return text_chunk(index, "", reason, id=self.id, created=self.created, model=self.model)

    def error_chunk(self, error: GatewayError) -> Chunk:
        """The mid-stream error frame (docs/wire.md §2): top-level ``error`` and ``finish_reason:
        "error"`` on every unfinished choice (choice 0 if none started)."""
        indexes = self.unfinished or [0]
        choices: list[dict[str, Any]] = []
        for index in indexes:
            if self.kind == "chat":
                choices.append({"index": index, "delta": {}, "logprobs": None,
                                "finish_reason": "error"})
            else:
                choices.append({"index": index, "text": "", "logprobs": None,
                                "finish_reason": "error"})
            self.finished[index] = "error"
        return {
            "id": self.id,
            "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "error": error.to_dict(),
            "choices": choices,
        }


def shaper_for(req: ChatRequest | CompletionRequest, dialect: str | None) -> StreamShaper:
    """The request's shaper, estimating usage with the tokenizer of ``dialect`` (the first
    target's provider dialect, e.g. ``"openai"``; None: ~4 characters a token)."""
    if isinstance(req, ChatRequest):
        prompt_text = "\n".join(m.text() for m in req.messages)
    else:
        prompt_text = req.prompt_text()
    return StreamShaper("chat" if isinstance(req, ChatRequest) else "text", req.model,
                        include_usage=req.include_usage, prompt_text=prompt_text,
                        count_tokens=counter_for(dialect))


def _add_usage(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    prompt = int(a.get("prompt_tokens") or 0) + int(b.get("prompt_tokens") or 0)
    completion = int(a.get("completion_tokens") or 0) + int(b.get("completion_tokens") or 0)
    return make_usage(prompt, completion, estimated=bool(a.get("estimated") or
                                                         b.get("estimated")))
