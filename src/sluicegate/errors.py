"""The gateway's error tree. Every error renders as an OpenAI-shaped body.

::

    GatewayError                      500 api_error
    ├── InvalidRequestError           400 invalid_request_error (param names the field)
    │   └── ContextLengthError        400 code=context_length_exceeded
    ├── AuthenticationError           401 authentication_error
    ├── ModelNotFoundError            404 not_found_error, code=model_not_found
    │   └── ProviderNotConfiguredError 404 code=provider_not_configured (names the key variable)
    ├── RouteNotFoundError            404 not_found_error
    ├── MethodNotAllowedError         405 invalid_request_error
    ├── PayloadTooLargeError          413 invalid_request_error, code=request_too_large
    ├── RateLimitError                429 rate_limit_exceeded (carries retry_after in s)
    └── UpstreamError                 502 upstream_error (connect or protocol faults)
        ├── UpstreamStatusError       the upstream's own status (4xx/5xx) and error body
        └── UpstreamTimeoutError      504 timeout

The body is ``{"error": {"message", "type", "param", "code"}}`` with all four keys present, as
openai-python expects (WIRE.md §7). ``to_chunk_error()`` gives the ``error`` object of the
mid-stream error frame (WIRE.md §2).
"""

from __future__ import annotations

import math
from typing import Any


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


class MethodNotAllowedError(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


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


class UpstreamError(GatewayError):
    """The upstream failed to answer usably: connect error, reset, malformed stream."""

    status = 502
    type = "server_error"
    code = "upstream_error"


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
