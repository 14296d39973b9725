"""Validated request types for the OpenAI-compatible endpoints.

Shapes follow the OpenAI API reference (Chat Completions and legacy Completions). Unknown fields
are kept (``extra="allow"``) so they reach an OpenAI-compatible upstream unchanged.
``parse_chat_request`` and ``parse_completion_request`` raise ``InvalidRequestError`` (400) with
``param`` naming the offending field, e.g. ``messages.0.role``.
"""

from __future__ import annotations

import re
from typing import Any, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from .errors import InvalidRequestError

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "NativeRequest",
    "parse_chat_request",
    "parse_completion_request",
]


MAX_MODEL_CHARS = 256


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Lenient):
    include_usage: bool = False
    resumable: bool | None = None  # the gateway's own: kept for resume (never sent upstream)


class ChatMessage(_Lenient):
    """One chat message. ``content`` is a string, a list of content parts, or null."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text: a string content, or its ``text`` parts joined."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class _SamplingRequest(_Lenient):
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    model: str = Field(min_length=1, max_length=MAX_MODEL_CHARS, pattern=r"^[!-~]+$")
    """Printable ASCII without spaces or control characters, at most 256 characters: it
    becomes part of upstream URLs and headers (``X-Sluicegate-Model``)."""
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int = Field(default=1, ge=1, le=16)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @property
    def raw(self) -> dict[str, Any]:
        """The JSON body as the client sent it (for pass-through to an OpenAI upstream)."""
        # Read from the private store directly: ``self._raw`` would go through pydantic's
        # ``__getattr__`` (~1.3 µs, on every request's path).
        raw: dict[str, Any] = self.__pydantic_private__["_raw"]  # type: ignore[index]
        return raw

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def stop_list(self) -> list[str]:
        """``stop`` as a list (empty strings dropped)."""
        if self.stop is None:
            return []
        items = [self.stop] if isinstance(self.stop, str) else self.stop
        return [s for s in items if s]


class NativeRequest(NamedTuple):
    """A request body in an upstream's own dialect, with the client headers to forward."""

    dialect: str
    body: dict[str, Any]
    headers: dict[str, str]


class ChatRequest(_SamplingRequest):
    """``POST /v1/chat/completions`` body."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    _native: NativeRequest | None = PrivateAttr(default=None)

    @property
    def native(self) -> NativeRequest | None:
        """The client's own request in an upstream dialect (set by ``sluicegate.ingress``): an
        upstream of that dialect gets it as it came instead of a translation."""
        return self._native

    @native.setter
    def native(self, value: NativeRequest | None) -> None:
        self._native = value

    @property
    def token_limit(self) -> int | None:
        """``max_completion_tokens`` if given, else ``max_tokens`` (tokens)."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_SamplingRequest):
    """``POST /v1/completions`` body (legacy text completions). ``prompt`` is one string."""

    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("only a single prompt is supported")
        return v

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


# pydantic adds the union member tried to an error's loc ("str", "list[str]", ...); the client's
# field path is what ``param`` should name.
_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|list|dict|[a-z-]+\[.*\])$")


def _raise_invalid(exc: ValidationError) -> InvalidRequestError:
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if isinstance(p, int) or not _TYPE_TAG.match(p)]
    param = ".".join(str(p) for p in loc) or None
    msg = err["msg"]
    return InvalidRequestError(f"Invalid value for '{param}': {msg}" if param else msg, param=param)


_R = TypeVar("_R", bound=_SamplingRequest)


def _parse(model: type[_R], body: object) -> _R:
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    try:
        request = model.model_validate(body)
    except ValidationError as exc:
        raise _raise_invalid(exc) from None
    # The private store directly: ``request._raw = body`` goes through pydantic's __setattr__.
    request.__pydantic_private__["_raw"] = body  # type: ignore[index]
    return request


def parse_chat_request(body: object) -> ChatRequest:
    """Validate a decoded JSON body. Raises ``InvalidRequestError`` (400)."""
    return _parse(ChatRequest, body)


def parse_completion_request(body: object) -> CompletionRequest:
    """Validate a decoded JSON body. Raises ``InvalidRequestError`` (400)."""
    return _parse(CompletionRequest, body)
