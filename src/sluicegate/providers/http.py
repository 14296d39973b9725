"""What every HTTP upstream shares: a pooled aiohttp session, the POST that opens a stream,
status errors, the byte loop that reads the stream, and releasing the response.

``HTTPProvider.open_stream`` raises, before any byte reaches the client:

- ``UpstreamTimeoutError`` (504, code ``connect_timeout``) when the TCP connect and TLS
  handshake take longer than ``connect_s`` (s). Waiting for the response headers after that is
  not part of it: it counts against the caller's first-token limit;
- ``UpstreamError`` (502) when the upstream cannot be reached;
- ``UpstreamStatusError`` with the upstream's own status for a 4xx/5xx answer. The dialect's
  ``status_error`` reads the error body (at most 64 KiB); ``retry_after`` (s) comes from
  ``retry-after-ms`` or ``retry-after`` (docs/wire.md §7). Redirects are not followed; a 3xx, a
  status outside 400-599, and 401/403 (the gateway's own key refused) become a 502 with a
  generic message, the upstream's text logged only. Every configured secret is scrubbed from
  upstream text (``sluicegate.redact``).

``UpstreamStream`` reads, decodes and parses the body for every dialect, which supplies only
hooks (decode and translate one event, the body's end); see its docstring.
``UpstreamStream.aclose`` returns a finished body's connection to the pool and closes the socket
of anything unfinished, so the upstream sees a client disconnect at once and stops generating.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

import aiohttp
import orjson

from .. import telemetry
from ..chunks import Chunk
from ..errors import (
    InvalidRequestError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from ..redact import register_env
from ..retry import retry_after
from ..schemas import ChatRequest, CompletionRequest
from ..sse import EventTooLargeError, SSEDecoder
from .base import ChunkStream, Target

__all__ = ["END", "SKIP", "HTTPProvider", "MalformedEvent", "UpstreamStream", "connection_lost",
           "openai_status_error", "retry_after"]

log = logging.getLogger("sluicegate.providers")

MAX_ERROR_BODY = 64 * 1024
_DRAIN_TIMEOUT_S = 0.5

EventT = TypeVar("EventT")  # one decoded SSE event: its data (bytes), or a whole ServerSentEvent


def _loads_or_none(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def openai_status_error(status: int, body: bytes,
                        headers: Mapping[str, str]) -> UpstreamStatusError:
    """An OpenAI-shaped error body (``{"error": {message, type, param, code}}``) or a plain
    ``{"error": "..."}``; anything else keeps only the status."""
    message = f"The upstream answered HTTP {status}."
    etype: str | None = None
    code: str | None = None
    param: str | None = None
    parsed = _loads_or_none(body)
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or message)
        etype = err.get("type") if isinstance(err.get("type"), str) else None
        code = str(err["code"]) if err.get("code") is not None else None
        param = err.get("param") if isinstance(err.get("param"), str) else None
    elif isinstance(err, str):
        message = err
    return UpstreamStatusError(status, message, type=etype, code=code, param=param,
                               retry_after=retry_after(headers))


def connection_lost(exc: aiohttp.ClientError) -> UpstreamError:
    """The error for a connection lost mid-body (reason ``connection_lost``); the HTTP library's
    exception is kept as ``detail`` for the log only."""
    return UpstreamError("The upstream closed the connection before finishing the answer.",
                         reason="connection_lost", detail=repr(exc))


class MalformedEvent(Exception):
    """Raised by a dialect's ``_event`` hook for an event it cannot use: ``payload`` (the raw
    ``data`` bytes, logged) and ``why`` (e.g. ``"not JSON"``). The stream counts and skips it
    (``ChunkStream.skip_malformed``)."""

    def __init__(self, payload: bytes, why: str) -> None:
        super().__init__(why)
        self.payload = payload
        self.why = why


END = 1
"""``_event`` return value: the dialect's end of stream (``[DONE]``, ``message_stop``)."""
SKIP = 2
"""``_event`` return value: an event with nothing in it (e.g. Anthropic's ``ping``); it neither
counts as malformed nor ends a run of malformed events."""


class UpstreamStream(ChunkStream, Generic[EventT]):
    """A ChunkStream that owns one upstream SSE response and runs the byte loop for every
    dialect: each network read (``iter_any``) is SSE-decoded and becomes one batch
    (``list[Chunk]``) of what its events translate to.

    A dialect supplies hooks only:

    - ``_feed()``: the decoder call for one read, returning the completed events (type ``EventT``).
      The default is ``SSEDecoder.feed_data`` (``bytes`` of each ``data``, the fast path of
      data-only dialects); a dialect that needs event names returns ``SSEDecoder().feed``;
    - ``_event(event, batch)``: decode one event and append its chunks to ``batch``. Returns
      None for an event handled, ``END`` at the dialect's end of stream, ``SKIP`` for an event
      to ignore; raises ``MalformedEvent`` for one to skip and count, or ``UpstreamError`` for
      an error the upstream reported mid-stream;
    - ``_body_end()``: the body ended before ``END``. Returns the last chunks (may be empty) or
      raises ``UpstreamError``; a dialect whose body's end is its end of stream sets ``_done``.

    Whatever the batch held before an error reaches the client first. Raised while iterating:
    the hooks' ``UpstreamError``; ``malformed_error()`` after more than ``max_malformed``
    malformed events in a row; ``UpstreamError`` code ``event_too_large`` for an event (or an
    unended line) over ``max_event_bytes``; ``connection_lost(exc)`` when the connection breaks
    mid-body.
    ``_done`` is set once the end of stream was read.
    """

    usage_source = "upstream"

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._done = False

    def _feed(self) -> Callable[[bytes], list[EventT]]:
        return cast(Callable[[bytes], list[EventT]],
                    SSEDecoder(self.max_event_bytes).feed_data)

    def _event(self, event: EventT, batch: list[Chunk]) -> int | None:
        raise NotImplementedError

    def _body_end(self) -> list[Chunk]:
        return []

    async def _iterate(self) -> AsyncIterator[list[Chunk]]:
        # The hot path: one hook call per event, hooks bound to locals, one batch per read.
        feed = self._feed()
        handle = self._event
        error: UpstreamError | None = None
        try:
            async for data in self._response.content.iter_any():
                batch: list[Chunk] = []
                for event in feed(data):
                    try:
                        status = handle(event, batch)
                    except MalformedEvent as bad:
                        if self.skip_malformed(bad.payload, bad.why):
                            error = self.malformed_error()
                            break
                        continue
                    except UpstreamError as exc:
                        error = exc
                        break
                    if status is None:
                        if self._malformed_run:
                            self.well_formed()
                    elif status == END:
                        self._done = True
                        if batch:
                            yield batch
                        return
                if batch:
                    yield batch  # on an error too: what came before reaches the client
                if error is not None:
                    raise error
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise connection_lost(exc) from exc
        except EventTooLargeError as exc:
            raise UpstreamError("The upstream sent an event larger than the gateway accepts.",
                                code="event_too_large", reason="too_large",
                                detail=str(exc)) from None
        tail = self._body_end()
        if tail:
            yield tail

    def close_now(self) -> bool:
        """Unless a finished body still has bytes to drain (for connection reuse), close or
        release the response now."""
        response = self._response
        if self._done and not response.content.is_eof():
            return False
        if self._done:
            response.release()
        else:
            response.close()
        return True

    async def aclose(self) -> None:
        if self.close_now():
            return
        # After the end event only the body's end (e.g. the last chunk of chunked encoding) is
        # left; read it so the connection can be reused.
        response = self._response
        try:
            async with asyncio.timeout(_DRAIN_TIMEOUT_S):
                while await response.content.readany():
                    pass
        except (TimeoutError, aiohttp.ClientError):
            pass
        if response.content.is_eof():
            response.release()
        else:
            response.close()


class HTTPProvider:
    """Base of the HTTP providers: ``name``, ``base_url`` (no trailing slash), the key's env
    variables (the first one set wins), extra headers and ``connect_timeout`` (s)."""

    dialect = "openai"

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key_env: str | Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        if isinstance(api_key_env, str):
            api_key_env = (api_key_env,)
        self.api_key_envs: tuple[str, ...] = tuple(api_key_env or ())
        register_env(*self.api_key_envs)
        self.extra_headers = dict(headers or {})
        self.connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    # -- keys ------------------------------------------------------------------------------

    def api_key(self) -> str | None:
        """The key from the environment, read per request (so it can be rotated)."""
        for var in self.api_key_envs:
            key = os.environ.get(var)
            if key:
                return key
        return None

    @property
    def requires_key(self) -> bool:
        return bool(self.api_key_envs)

    @property
    def usable(self) -> bool:
        """True when no key is needed or one is set."""
        return not self.api_key_envs or self.api_key() is not None

    # -- the Provider protocol ---------------------------------------------------------------

    async def open_chat(self, request: ChatRequest, target: Target, *,
                        connect_s: float | None = 10.0) -> ChunkStream:
        raise NotImplementedError

    async def open_text(self, request: CompletionRequest, target: Target, *,
                        connect_s: float | None = 10.0) -> ChunkStream:
        """Legacy text completions; only the OpenAI dialect has them. Raises
        ``InvalidRequestError`` (400) here."""
        raise InvalidRequestError(
            f"Text completions (/v1/completions) are not available for {self.dialect} models; "
            "use /v1/chat/completions.", param="model")

    # -- HTTP ------------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
                auto_decompress=True,
            )
        return self._session

    def request_headers(self) -> dict[str, str]:
        """Auth and protocol headers for every request to this upstream; dialects override."""
        headers = {"Content-Type": "application/json"}
        key = self.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def list_models(self) -> list[str]:
        """The upstream's model ids (OpenAI dialect: ``GET {base_url}/models``, ``data[].id``).

        Raises ``UpstreamError`` / ``UpstreamStatusError``; dialects override.
        """
        body = await self.get_json(self.base_url + "/models")
        data = body.get("data") if isinstance(body, dict) else None
        return [str(m["id"]) for m in data or [] if isinstance(m, dict) and "id" in m]

    async def get_json(self, url: str, timeout_s: float = 5.0, *,
                       post: dict[str, Any] | None = None,
                       headers: Mapping[str, str] | None = None) -> Any:
        """GET ``url`` (POST the JSON ``post`` if given) with ``request_headers()`` (or
        ``headers``); the decoded JSON body. Raises as above."""
        session = self._get_session()
        headers = {**(headers or self.request_headers()), **self.extra_headers}
        try:
            async with session.request("POST" if post is not None else "GET", url,
                                       data=None if post is None else orjson.dumps(post),
                                       headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=timeout_s),
                                       allow_redirects=False) as response:
                body = await response.read()
                if not 200 <= response.status < 300:
                    raise self._refused(response.status, body[:MAX_ERROR_BODY],
                                        response.headers)
        except TimeoutError as exc:
            raise UpstreamTimeoutError(f"The upstream did not answer in {timeout_s} s.") from exc
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from exc
        parsed = _loads_or_none(body)
        if parsed is None:
            raise UpstreamError("The upstream answered a body that is not JSON.")
        return parsed

    def status_error(self, status: int, body: bytes,
                     headers: Mapping[str, str]) -> UpstreamStatusError:
        """The typed error for a non-2xx answer; dialects override it."""
        return openai_status_error(status, body, headers)

    async def open_stream(self, url: str, body: dict[str, Any],
                          headers: Mapping[str, str] | None = None, *,
                          connect_s: float | None = 10.0) -> aiohttp.ClientResponse:
        """POST ``body`` as JSON (headers: ``request_headers()`` unless given) and return the
        2xx response, body unread. ``connect_s`` (s; None: no limit) bounds the TCP connect and
        TLS handshake only. Raises as above."""
        if headers is None:
            headers = self.request_headers()
        try:
            data = orjson.dumps(body)
        except orjson.JSONEncodeError as exc:  # e.g. nested deeper than orjson writes (254)
            raise InvalidRequestError(f"The request body cannot be sent upstream: {exc}") from None
        session = self._get_session()
        try:
            # sock_connect covers loop.create_connection, TLS handshake included; the wait for
            # the status line and headers is left to the caller's first-token deadline.
            # Redirects are not followed: a 307 would re-send the whole prompt elsewhere.
            sent = {**headers, **self.extra_headers}
            if telemetry.active is not None:
                telemetry.inject(sent)  # the attempt's span as traceparent
            response = await session.post(url, data=data, headers=sent,
                                          timeout=aiohttp.ClientTimeout(total=None,
                                                                        sock_connect=connect_s),
                                          allow_redirects=False)
        except TimeoutError as exc:
            raise UpstreamTimeoutError(
                f"Could not connect to {self.name} within {connect_s} s.", code="connect_timeout",
                detail=repr(exc)) from exc
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from exc
        if not 200 <= response.status < 300:
            try:
                raw_body = await response.content.read(MAX_ERROR_BODY)
            except aiohttp.ClientError:
                raw_body = b""
            finally:
                response.close()
            raise self._refused(response.status, raw_body, response.headers)
        return response

    def _unreachable(self, exc: aiohttp.ClientError) -> UpstreamError:
        """A connection failure, named by provider: addresses and library reprs stay in the
        log detail, not in the client's message."""
        return UpstreamError(f"Cannot reach the upstream ({self.name}).", detail=repr(exc))

    def _refused(self, status: int, body: bytes,
                 headers: Mapping[str, str]) -> UpstreamStatusError:
        """The error for a non-2xx answer. The dialect's ``status_error`` reads it, except:

        - a redirect (3xx), or a status outside 400-599 (101, 999, ...), is a 502;
        - 401 and 403 are the gateway's own credentials failing upstream, not the client's:
          a 502 with a generic message (the upstream's text goes to the log only).
        """
        if status in (401, 403) or not 400 <= status < 600:
            error = self.status_error(status, body, headers)
            if 300 <= status < 400:
                what = f"answered with a redirect (HTTP {status}), which is not followed"
            elif status in (401, 403):
                what = f"refused the gateway's credentials (HTTP {status})"
            else:
                what = f"answered an unexpected HTTP status ({status})"
            log.warning("upstream %s %s: %s", self.name, what, error.message)
            return UpstreamStatusError(502, f"The upstream ({self.name}) {what}.",
                                       type="server_error", code="upstream_error")
        return self.status_error(status, body, headers)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
