"""A fluent builder for validated chat requests.

::

    request = (ChatRequestBuilder().with_model("default")
               .with_system("Be brief.").with_text("Describe this picture.")
               .with_image("https://example.com/cat.png", detail="low")
               .with_max_tokens(64).with_fallbacks(["mock/backup"]).build())
    stream = client.chat.stream(request)          # keyword params override its fields
    body = request.to_body()                      # the JSON body, fallbacks → ``models``

Every validation failure raises ``BuilderError`` (a ``SluicegateError`` and a ``ValueError``)
whose ``field`` names the offending field (e.g. ``temperature``, ``messages.0.role``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import SluicegateError

__all__ = ["BuilderError", "ChatRequest", "ChatRequestBuilder", "ImageDetail"]

ImageDetail = Literal["auto", "low", "high"]

_DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+(;[A-Za-z0-9=.+-]+)*;base64,[A-Za-z0-9+/=\s]+$")
_HTTP_URL = re.compile(r"^https?://[^\s/]+\S*$")
# pydantic adds the union member it tried to a location ("str", "list[str]", ...); the field path
# is what ``BuilderError.field`` names.
_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|list|dict|[a-z-]+\[.*\])$")
# Fields set by dedicated builder methods; ``with_param`` routes these names to them.
_FIELDS = ("model", "messages", "stream", "temperature", "max_tokens", "fallbacks", "tools")


class BuilderError(SluicegateError, ValueError):
    """A request that cannot be built. ``field`` names the offending field (or None)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ChatRequest(BaseModel):
    """A validated chat request, as built by ``ChatRequestBuilder.build()``.

    ``model`` is required, ``messages`` holds at least one OpenAI chat message (dicts),
    ``temperature`` is in 0..2, ``max_tokens`` ≥ 1 (tokens), ``fallbacks`` are the models to try
    after ``model``, ``params`` any other OpenAI field (sent as is). ``stream`` defaults to False;
    ``client.chat.stream(request)`` always streams whatever it says.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    fallbacks: list[str] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("messages")
    @classmethod
    def _valid_messages(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        problem = _message_problem(value)
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        return value

    @field_validator("fallbacks")
    @classmethod
    def _valid_fallbacks(cls, value: list[str]) -> list[str]:
        if not all(name.strip() for name in value):
            raise ValueError("fallback model names must not be empty")
        return value

    def to_body(self) -> dict[str, Any]:
        """The JSON request body: ``{"model", "messages", "stream", ...}``.

        Unset optional fields are left out; ``fallbacks`` become the OpenRouter-style ``models``
        list ``[model, *fallbacks]``; ``params`` are merged last (they may override anything).
        """
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in self.messages],
                                "stream": self.stream}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.tools is not None:
            body["tools"] = [dict(t) for t in self.tools]
        if self.fallbacks:
            body["models"] = [self.model, *self.fallbacks]
        body.update(self.params)
        return body

    def to_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``client.chat.stream(**kwargs)`` / ``create(**kwargs)``:
        ``model``, ``messages``, ``fallbacks`` (or None), the set sampling fields and ``params``.
        ``stream`` is left out (the method decides)."""
        kwargs: dict[str, Any] = {"model": self.model,
                                  "messages": [dict(m) for m in self.messages],
                                  "fallbacks": list(self.fallbacks) or None}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        if self.tools is not None:
            kwargs["tools"] = [dict(t) for t in self.tools]
        kwargs.update(self.params)
        return kwargs


def _builder_error(exc: ValidationError) -> BuilderError:
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if isinstance(p, int) or not _TYPE_TAG.match(str(p))]
    field = ".".join(str(p) for p in loc) or None
    msg = err["msg"]
    return BuilderError(f"Invalid value for '{field}': {msg}" if field else msg, field=field)


def _message_problem(messages: list[dict[str, Any]]) -> tuple[str, str] | None:
    """The first invalid message's field path (``messages.<i>.<key>``) and reason, or None.
    Checked with the gateway's own message model (imported on first use)."""
    from ..schemas import ChatMessage

    for index, message in enumerate(messages):
        try:
            ChatMessage.model_validate(message)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = [p for p in err["loc"] if isinstance(p, int) or not _TYPE_TAG.match(str(p))]
            return ".".join(["messages", str(index), *map(str, loc)]), err["msg"]
    return None


def _message_dict(message: object, index: int) -> dict[str, Any]:
    if isinstance(message, BaseModel):
        return message.model_dump(exclude_none=True)
    if isinstance(message, Mapping):
        return dict(message)
    raise BuilderError(f"Invalid value for 'messages.{index}': a message must be a dict, "
                       f"not {type(message).__name__}", field=f"messages.{index}")


def _tool_dict(tool: object, index: int) -> dict[str, Any]:
    field = f"tools.{index}"
    if not isinstance(tool, Mapping):
        raise BuilderError(f"Invalid value for '{field}': a tool must be a dict", field=field)
    spec = dict(tool)
    if "function" not in spec and "name" in spec:  # a bare function spec
        spec = {"type": "function", "function": spec}
    function = spec.get("function")
    if spec.get("type", "function") != "function" or not isinstance(function, Mapping):
        raise BuilderError(f"Invalid value for '{field}': expected {{'type': 'function', "
                           "'function': {...}}", field=field)
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise BuilderError(f"Invalid value for '{field}.function.name': a tool needs a name",
                           field=f"{field}.function.name")
    spec.setdefault("type", "function")
    return spec


class ChatRequestBuilder:
    """Builds a ``ChatRequest`` step by step; every ``with_*`` method returns the builder.

    Values are checked by ``build()`` (and image URLs, messages and tools as they are added);
    failures raise ``BuilderError`` naming the field.
    """

    def __init__(self) -> None:
        self._model: str | None = None
        self._system: str | None = None
        self._messages: list[dict[str, Any]] = []
        self._stream = False
        self._temperature: float | None = None
        self._max_tokens: int | None = None
        self._fallbacks: list[str] = []
        self._tools: list[dict[str, Any]] | None = None
        self._params: dict[str, Any] = {}

    def with_model(self, model: str) -> Self:
        """The model (or alias, or ``provider/model``) to ask first."""
        self._model = model
        return self

    def with_system(self, text: str) -> Self:
        """The system prompt, placed first (calling again replaces it)."""
        self._system = text
        return self

    def with_text(self, text: str) -> Self:
        """Append a user message with ``text`` as its content."""
        self._messages.append({"role": "user", "content": text})
        return self

    def with_messages(self, messages: Iterable[Mapping[str, Any] | BaseModel]) -> Self:
        """Replace the conversation with ``messages`` (OpenAI message dicts or pydantic models).

        A system message given here takes precedence over ``with_system``'s.
        Raises ``BuilderError`` (field ``messages.<i>``) for an entry that is not a message.
        """
        self._messages = [_message_dict(m, i) for i, m in enumerate(messages)]
        return self

    def with_image(self, url: str, detail: ImageDetail | None = None) -> Self:
        """Add an ``image_url`` part to the last message if it is a user message, else to a new
        user message. ``url`` is an ``http(s)://`` URL or a ``data:image/<type>;base64,...`` URL;
        ``detail`` is ``"auto"``, ``"low"`` or ``"high"``.

        Raises ``BuilderError`` (field ``image_url`` or ``detail``) for anything else.
        """
        if not isinstance(url, str) or not (_HTTP_URL.match(url) or _DATA_URL.match(url)):
            shown = url if len(str(url)) <= 60 else str(url)[:57] + "..."
            raise BuilderError(f"Invalid value for 'image_url': {shown!r} is neither an http(s) "
                               "URL nor a base64 image data URL", field="image_url")
        if detail is not None and detail not in ("auto", "low", "high"):
            raise BuilderError(f"Invalid value for 'detail': {detail!r} (expected 'auto', 'low' "
                               "or 'high')", field="detail")
        image: dict[str, Any] = {"url": url}
        if detail is not None:
            image["detail"] = detail
        part = {"type": "image_url", "image_url": image}
        if not self._messages or self._messages[-1].get("role") != "user":
            self._messages.append({"role": "user", "content": [part]})
            return self
        last = self._messages[-1]
        content = last.get("content")
        if isinstance(content, str):
            parts: list[Any] = [{"type": "text", "text": content}] if content else []
        elif isinstance(content, list):
            parts = list(content)
        else:
            parts = []
        self._messages[-1] = {**last, "content": [*parts, part]}
        return self

    def with_streaming(self, stream: bool = True) -> Self:
        """Set the request's ``stream`` flag (``client.chat.stream`` streams regardless)."""
        self._stream = stream
        return self

    def with_resumable(self, resumable: bool = True) -> Self:
        """Ask for a resumable stream (``stream_options.resumable``, merged with the other
        stream options): ``client.chat.stream(request)`` then resumes a dropped connection by
        itself. False takes the flag out again."""
        options = dict(self._params.get("stream_options") or {})
        if resumable:
            options["resumable"] = True
        else:
            options.pop("resumable", None)
        if options:
            self._params["stream_options"] = options
        else:
            self._params.pop("stream_options", None)
        return self

    def with_temperature(self, temperature: float) -> Self:
        """Sampling temperature, 0..2 (checked by ``build()``)."""
        self._temperature = temperature
        return self

    def with_max_tokens(self, max_tokens: int) -> Self:
        """Most tokens to generate, ≥ 1 (checked by ``build()``)."""
        self._max_tokens = max_tokens
        return self

    def with_fallbacks(self, models: Iterable[str]) -> Self:
        """Models to try after the first one, in order (sent as ``models``)."""
        self._fallbacks = list(models)
        return self

    def with_tools(self, tools: Iterable[Mapping[str, Any]]) -> Self:
        """Tool definitions: ``{"type": "function", "function": {...}}`` or a bare function spec
        ``{"name", "description", "parameters"}`` (wrapped). Raises ``BuilderError`` (field
        ``tools.<i>``) for a malformed tool."""
        self._tools = [_tool_dict(t, i) for i, t in enumerate(tools)]
        return self

    def with_param(self, name: str, value: Any) -> Self:
        """Any other OpenAI field (``top_p``, ``stop``, ``seed``, ``timeouts``, ...). The builder's
        own fields (``model``, ``temperature``, ...) are routed to their ``with_*`` method."""
        if name in _FIELDS:
            setters: dict[str, Callable[[Any], object]] = {
                "model": self.with_model, "messages": self.with_messages,
                "stream": self.with_streaming, "temperature": self.with_temperature,
                "max_tokens": self.with_max_tokens, "fallbacks": self.with_fallbacks,
                "tools": self.with_tools}
            setters[name](value)
        elif name == "models":
            raise BuilderError("Use with_fallbacks() for 'models': it is [model, *fallbacks]",
                               field="models")
        else:
            self._params[name] = value
        return self

    def build(self) -> ChatRequest:
        """The validated ``ChatRequest``. Raises ``BuilderError`` naming the first bad field:
        ``model`` (missing/empty), ``messages`` (none, or ``messages.<i>.<key>``),
        ``temperature`` (outside 0..2), ``max_tokens`` (< 1), ``fallbacks``."""
        if self._model is None:
            raise BuilderError("Invalid value for 'model': a model is required", field="model")
        messages = list(self._messages)
        if self._system is not None and not any(m.get("role") == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self._system})
        problem = _message_problem(messages)
        if problem is not None:
            raise BuilderError(f"Invalid value for '{problem[0]}': {problem[1]}", field=problem[0])
        try:
            return ChatRequest(model=self._model, messages=messages, stream=self._stream,
                               temperature=self._temperature, max_tokens=self._max_tokens,
                               fallbacks=self._fallbacks, tools=self._tools,
                               params=dict(self._params))
        except ValidationError as exc:
            raise _builder_error(exc) from None
