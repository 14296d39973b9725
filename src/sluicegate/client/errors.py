"""The client's error tree, rooted at ``SluicegateError``.

::

    SluicegateError
    ├── APIError(message)
    │   ├── APIStatusError(message, status_code, body, request_id)   a non-2xx HTTP status
    │   │   ├── BadRequestError            400
    │   │   ├── AuthenticationError        401
    │   │   ├── PermissionDeniedError      403
    │   │   ├── NotFoundError              404
    │   │   ├── ConflictError              409
    │   │   ├── UnprocessableEntityError   422
    │   │   ├── RateLimitError             429
    │   │   └── InternalServerError        ≥ 500
    │   ├── APIConnectionError             connect failure or a dropped connection
    │   │   └── APITimeoutError            ``timeout`` / ``stall_timeout`` / connect timeout
    │   └── StreamError                    the mid-stream error frame (top-level ``error``)
    │       └── StreamResumeError          a dropped resumable stream the gateway won't resume
    └── StreamClosedError                  misuse: using a stream after ``close()``

``status_error(status, body, headers)`` builds the right ``APIStatusError`` subclass from an
OpenAI-shaped body (``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..retry import retry_after

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "SluicegateError",
    "StreamClosedError",
    "StreamError",
    "StreamResumeError",
    "UnprocessableEntityError",
    "status_error",
]


class SluicegateError(Exception):
    """Base of every error raised by ``sluicegate.client``."""


class APIError(SluicegateError):
    """An error talking to the API. ``message`` is human-readable."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIStatusError(APIError):
    """The server answered a non-2xx status before streaming.

    ``status_code``: the HTTP status; ``body``: the decoded JSON body (or the raw text, or
    None); ``request_id``: the ``x-request-id`` response header if any; ``headers``: the
    response headers; ``retry_after``: seconds asked for by ``retry-after-ms`` /
    ``Retry-After`` (None if absent).
    """

    status_code: int = 0

    def __init__(self, message: str, *, status_code: int, body: object = None,
                 request_id: str | None = None, headers: Mapping[str, str] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.request_id = request_id
        self.headers: dict[str, str] = dict(headers or {})
        self.retry_after = retry_after
        error = body.get("error") if isinstance(body, dict) else None
        self.type: str | None = error.get("type") if isinstance(error, dict) else None
        self.code: object = error.get("code") if isinstance(error, dict) else None
        self.param: str | None = error.get("param") if isinstance(error, dict) else None

    def __str__(self) -> str:
        return f"Error code: {self.status_code} - {self.message}"


class BadRequestError(APIStatusError):
    status_code = 400


class AuthenticationError(APIStatusError):
    status_code = 401


class PermissionDeniedError(APIStatusError):
    status_code = 403


class NotFoundError(APIStatusError):
    status_code = 404


class ConflictError(APIStatusError):
    status_code = 409


class UnprocessableEntityError(APIStatusError):
    status_code = 422


class RateLimitError(APIStatusError):
    status_code = 429


class InternalServerError(APIStatusError):
    """Any status ≥ 500."""


class APIConnectionError(APIError):
    """The connection could not be made, or dropped before the response ended.

    ``partial_text``: the content of choice 0 the stream delivered before it failed ("" when
    it failed before any, or outside a stream). A resumable stream raises it once its
    reconnections ran out: it is then the last connection error."""

    def __init__(self, message: str = "Connection error.", *, partial_text: str = "") -> None:
        super().__init__(message)
        self.partial_text = partial_text


class APITimeoutError(APIConnectionError):
    """A time limit fired: ``timeout`` (whole request, s), ``stall_timeout`` (longest gap
    between chunks, s) or the connect timeout. The connection has been closed."""

    def __init__(self, message: str = "Request timed out.", *, partial_text: str = "") -> None:
        super().__init__(message, partial_text=partial_text)


class StreamError(APIError):
    """The stream ended with an error frame after it started (an event carrying a top-level
    ``error`` object). ``partial_text``: the content of choice 0 received before it;
    ``error``: the frame's ``error`` object; ``code`` and ``type`` taken from it."""

    def __init__(self, message: str, *, partial_text: str = "",
                 error: dict[str, Any] | None = None, code: object = None,
                 type: str | None = None) -> None:
        super().__init__(message)
        self.partial_text = partial_text
        self.error = error
        self.code = code
        self.type = type


class StreamResumeError(StreamError):
    """A resumable stream dropped and the gateway answered its resume request
    (``GET /v1/chat/completions/{stream_id}/stream``) with an error status, so it cannot go on.

    ``status_code`` and ``code``, as the gateway sends them: 404 ``stream_not_found`` (unknown
    or expired stream id), 400 ``invalid_last_event_id`` (the id belongs to another stream, or
    is past its end), 410 ``stream_events_expired`` (the events after the last one received
    have left the gateway's retained window), 503 ``state_unavailable`` (raised once the
    reconnections ran out), or any other non-2xx status. ``body``: the decoded error body;
    ``error`` / ``type``: its ``error`` object and type; ``stream_id``; ``last_event_id``: the
    id of the last event received (``<stream_id>:<seq>``, None if none); ``partial_text``: the
    content of choice 0 received before the drop. ``__cause__`` is the ``APIStatusError`` of
    the resume request."""

    def __init__(self, message: str, *, status_code: int, body: object = None,
                 stream_id: str | None = None, last_event_id: str | None = None,
                 partial_text: str = "") -> None:
        found = body.get("error") if isinstance(body, dict) else None
        error = found if isinstance(found, dict) else None
        super().__init__(message, partial_text=partial_text, error=error,
                         code=error.get("code") if error else None,
                         type=error.get("type") if error else None)
        self.status_code = status_code
        self.body = body
        self.stream_id = stream_id
        self.last_event_id = last_event_id


class StreamClosedError(SluicegateError):
    """A stream was used after ``close()`` / ``aclose()`` (or after its ``with`` block)."""


class ClientClosedError(SluicegateError, RuntimeError):
    """A client was used after ``close()`` / ``aclose()``."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error(status: int, body: object, headers: Mapping[str, str] | None = None
                 ) -> APIStatusError:
    """The ``APIStatusError`` subclass for ``status`` (``InternalServerError`` for ≥ 500, the
    base class for other codes), with the message of an OpenAI-shaped ``body``."""
    headers = headers or {}
    message: str | None = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
        elif isinstance(error, str):
            message = error
        elif body.get("message"):
            message = str(body["message"])
    elif isinstance(body, str) and body:
        message = body[:500]
    cls = _BY_STATUS.get(status) or (InternalServerError if status >= 500 else APIStatusError)
    lowered = {k.lower(): v for k, v in headers.items()}
    request_id = lowered.get("x-request-id") or lowered.get("request-id")
    return cls(message or f"HTTP {status}", status_code=status, body=body,
               request_id=request_id, headers=headers, retry_after=retry_after(lowered))
