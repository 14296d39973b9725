"""The gateway's error tree. Every error renders as an OpenAI-shaped body.

::

    GatewayError                      500 api_error
    ├── InvalidRequestError           400 invalid_request_error (param names the field)
    │   └── ContextLengthError        400 code=context_length_exceeded
    ├── AuthenticationError           401 authentication_error
    │   └── InvalidLastEventIdError   400 code=invalid_last_event_id (resume)
    ├── ModelNotFoundError            404 not_found_error, code=model_not_found
    │   └── ProviderNotConfiguredError 404 code=provider_not_configured (names the key variable)
    ├── RouteNotFoundError            404 not_found_error
    ├── StreamNotFoundError           404 not_found_error, code=stream_not_found (resume)
    ├── StreamCancelledError          409 code=stream_cancelled or no_reader (resumable)
    ├── StreamEventsExpiredError      410 code=stream_events_expired (resume)
    ├── MethodNotAllowedError         405 invalid_request_error
    ├── RequestTimeoutError           408 invalid_request_error, code=request_timeout
    ├── PayloadTooLargeError          413 invalid_request_error, code=request_too_large
    ├── RateLimitError                429 rate_limit_exceeded (carries retry_after in s)
    ├── ShuttingDownError             503 code=shutting_down (the shutdown grace ran out)
    ├── StateUnavailableError         503 code=state_unavailable (the shared state is down)
    └── UpstreamError                 502 upstream_error (connect or protocol faults)
        ├── UpstreamStatusError       the upstream's own status (4xx/5xx) and error body
        └── UpstreamTimeoutError      504 timeout

The body is ``{"error": {"message", "type", "param", "code"}}`` with all four keys present, as
openai-python expects (docs/wire.md §7). ``to_chunk_error()`` gives the ``error`` object of the
mid-stream error frame (docs/wire.md §2).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from .redact import scrub


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    status: int = 500
    type: str = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object: ``{"message", "type", "param", "code"}``."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def to_body(self) -> dict[str, Any]:
        """The full response body: ``{"error": {...}}``."""
        return {"error": self.to_dict()}

    def headers(self) -> dict[str, str]:
        """Extra response headers for this error (e.g. ``Retry-After``)."""
        return {}


class InvalidRequestError(GatewayError):
    status = 400
    type = "invalid_request_error"


class ContextLengthError(InvalidRequestError):
    code = "context_length_exceeded"


class AuthenticationError(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFoundError(GatewayError):
    status = 404
    type = "not_found_error"
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist on this gateway.", param="model")


class ProviderNotConfiguredError(ModelNotFoundError):
    """The model's provider has no API key on this gateway (its key variable is not set)."""

    code = "provider_not_configured"

    def __init__(self, model: str, provider: str, key_envs: tuple[str, ...]) -> None:
        GatewayError.__init__(
            self,
            f"The model '{model}' is served by provider '{provider}', which has no API key on "
            f"this gateway: set {' or '.join(key_envs)}.",
            param="model",
        )


class RouteNotFoundError(GatewayError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class StreamNotFoundError(GatewayError):
    """No resumable stream by that id here: never started, expired, or another key's."""

    status = 404
    type = "not_found_error"
    code = "stream_not_found"


class InvalidLastEventIdError(InvalidRequestError):
    """A resume's ``Last-Event-ID`` names another stream, or an event past the end."""

    code = "invalid_last_event_id"


class StreamEventsExpiredError(GatewayError):
    """The events after the resume point were dropped from the stream's retained window."""

    status = 410
    type = "invalid_request_error"
    code = "stream_events_expired"


class StreamCancelledError(GatewayError):
    """A resumable stream stopped on purpose: ``DELETE`` (code ``stream_cancelled``) or no
    reader for the grace period (code ``no_reader``)."""

    status = 409
    type = "invalid_request_error"
    code = "stream_cancelled"


class StateUnavailableError(GatewayError):
    """The shared state (Redis) cannot be reached, so a resumable stream cannot be served."""

    status = 503
    type = "server_error"
    code = "state_unavailable"


class MethodNotAllowedError(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeoutError(GatewayError):
    """The client did not send its whole request body in time."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLargeError(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimitError(GatewayError):
    """Too many requests; ``retry_after`` is in seconds and becomes the ``Retry-After`` header."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


Reason = Literal["connection_lost", "ended_early", "malformed", "bad_shape", "too_large",
                 "reported", "stall", "total", "local_failed"]
"""What went wrong mid-stream, for the message the client reads (``explain_midstream``)."""


class ShuttingDownError(GatewayError):
    """The gateway is shutting down and its grace period for live requests ran out."""

    status = 503
    type = "server_error"
    code = "shutting_down"


class UpstreamError(GatewayError):
    """The upstream failed to answer usably: connect error, reset, malformed stream.

    ``reason`` says what happened when it happened mid-stream (the gateway then words the
    message for people: provider, tokens delivered); ``detail`` keeps the technical cause
    (e.g. the HTTP library's exception) for the log line, never for the client.
    """

    status = 502
    type = "server_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        reason: Reason | None = None,
        detail: str | None = None,
    ) -> None:
        # Upstream text is untrusted: no configured secret survives into a message or a log.
        super().__init__(scrub(message), param=param, code=code, status=status)
        self.reason: Reason | None = reason
        self.detail = scrub(detail) if detail else detail


class UpstreamStatusError(UpstreamError):
    """The upstream answered a non-2xx status before streaming.

    The gateway keeps the upstream's status, and its error ``message``/``type``/``code`` when the
    body is OpenAI-shaped; ``retry_after`` (s) comes from ``retry-after-ms`` or ``retry-after``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, param=param, code=code)
        if type is not None:
            self.type = type
        elif status < 500:
            self.type = "invalid_request_error"
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class UpstreamTimeoutError(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


def bad_shape(exc: Exception) -> UpstreamError:
    """The error for an upstream chunk the gateway could not read (``exc``: the ``KeyError``,
    ``TypeError`` or ``AttributeError`` it raised), code ``malformed_stream``."""
    return UpstreamError("The upstream sent a chunk of an unexpected shape.",
                         code="malformed_stream", reason="bad_shape", detail=repr(exc))


def _tokens(n: int) -> str:
    return f"{n} token" if n == 1 else f"{n} tokens"


def explain_midstream(exc: GatewayError, provider: str, tokens: int,
                      limit_s: float | None = None) -> None:
    """Reword ``exc``, a failure after ``tokens`` (completion tokens) were delivered, for the
    person reading the error frame: what happened, the provider, how many tokens arrived.

    E.g. "The upstream (openai) closed the connection after 5 tokens without finishing the
    answer." ``code``, ``type`` and ``status`` stay; the previous message moves to ``detail``
    (for the log line) unless a technical detail is already there. ``limit_s`` (s) is the
    stall or total limit for the timeout reasons.
    """
    reason = exc.reason if isinstance(exc, UpstreamError) else None
    after = _tokens(tokens)
    who = f"The upstream ({provider})"
    limit = f"{limit_s:g} s" if limit_s is not None else "its time limit"
    if reason == "connection_lost":
        message = f"{who} closed the connection after {after} without finishing the answer."
    elif reason == "ended_early":
        message = f"{who} ended the stream after {after} without finishing the answer."
    elif reason == "malformed":
        message = (f"{who} sent too many malformed events in a row after {after}; the stream "
                   "was stopped.")
    elif reason == "bad_shape":
        message = (f"{who} sent a chunk of an unexpected shape after {after}; the stream was "
                   "stopped.")
    elif reason == "too_large":
        message = (f"{who} sent an event larger than the gateway accepts after {after}; the "
                   "stream was stopped.")
    elif reason == "reported":
        message = f"{who} reported an error after {after}: {exc.message}"
    elif reason == "stall":
        message = f"{who} sent nothing for {limit} after {after}; the stream was stopped."
    elif reason == "total":
        message = f"The request reached its time limit of {limit} after {after}; the stream " \
                  "was stopped."
    elif reason == "local_failed":
        message = f"The local model ({provider}) failed after {after}."
    else:
        message = f"{who} failed after {after}: {exc.message}"
    if isinstance(exc, UpstreamError) and reason != "reported":  # else the message has it
        exc.detail = exc.detail or exc.message
    exc.message = message
