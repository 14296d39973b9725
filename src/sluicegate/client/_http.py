"""The HTTP transport: httpx's async client, the project's SSE codec, retries before the first
token (tenacity: exponential backoff with jitter, ``Retry-After`` / ``retry-after-ms`` honoured,
capped at 30 s).

Errors: a non-2xx status raises the matching ``APIStatusError`` subclass (its body decoded); a
connect failure ``APIConnectionError`` (``APITimeoutError`` for the connect timeout); a
connection dropped mid-stream ``APIConnectionError``. Retried: connection errors and statuses
408, 409, 429 and ≥ 500, up to ``max_retries`` times.

Resumable streams (see ``_resume``): ``HTTPSource`` keeps the stream id
(``X-Sluicegate-Stream-Id``) and the SSE id of the last event read (``<stream_id>:<seq>``), and
``open_resume`` asks the gateway for the events after a seq (``GET …/{stream_id}/stream`` with
``Last-Event-ID``, the reconnection header of the WHATWG HTML Living Standard, §9.2
"Server-sent events").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from ..retry import retryable_status
from ..sse import SSEDecoder
from ._state import RateLimits
from .errors import APIConnectionError, APIStatusError, APITimeoutError, status_error

__all__ = ["MAX_RETRY_WAIT_S", "HTTPSource", "HTTPTransport", "event_seq", "retry_wait",
           "retryable", "with_retries"]

MAX_RETRY_WAIT_S = 30.0
"""Cap on any wait between tries (s), ``Retry-After`` included."""

T = TypeVar("T")


NOT_RETRIED_CODES = frozenset({"budget_exceeded", "insufficient_quota"})
"""429 codes that waiting does not clear (a spent budget or quota)."""


def retryable(exc: BaseException) -> bool:
    """Connection errors (timeouts included) and statuses 408, 409, 429, ≥ 500; not a 429 for
    a spent budget (``budget_exceeded``, ``insufficient_quota``)."""
    if isinstance(exc, APIStatusError):
        if exc.status_code == 429 and exc.code in NOT_RETRIED_CODES:
            return False
        return retryable_status(exc.status_code)
    return isinstance(exc, APIConnectionError)


_backoff = wait_exponential_jitter(multiplier=0.5, max=8.0, jitter=0.5)


def retry_wait(state: RetryCallState, backoff: wait_base) -> float:
    """The wait before the next try (s): the failed try's ``retry_after`` if it has one, else
    ``backoff``'s; capped at ``MAX_RETRY_WAIT_S``."""
    exc = state.outcome.exception() if state.outcome is not None else None
    after = getattr(exc, "retry_after", None)
    if isinstance(after, (int, float)) and after >= 0:
        return float(min(after, MAX_RETRY_WAIT_S))
    return float(min(backoff(state), MAX_RETRY_WAIT_S))


def _wait(state: RetryCallState) -> float:
    return retry_wait(state, _backoff)


async def with_retries(fn: Callable[[], Awaitable[T]], max_retries: int) -> tuple[T, int]:
    """``await fn()``, retried on ``retryable`` errors; returns the result and the tries made.
    Raises the last error."""
    tries = 0
    retrying = AsyncRetrying(stop=stop_after_attempt(max_retries + 1), wait=_wait,
                             retry=retry_if_exception(retryable), reraise=True)
    async for attempt in retrying:
        with attempt:
            tries += 1
            return await fn(), tries
    raise AssertionError("unreachable")  # pragma: no cover


class _Response(Protocol):
    """What the transport reads of a response (``httpx.Response`` or ``ThreadedResponse``)."""

    status_code: int
    headers: httpx.Headers

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


class _HTTPClient(Protocol):
    """What the transport uses of its client (``httpx.AsyncClient`` or ``ThreadedClient``)."""

    def build_request(self, method: str, url: str, *, content: bytes | None,
                      headers: Mapping[str, str]) -> httpx.Request: ...

    async def send(self, request: httpx.Request, *, stream: bool) -> _Response: ...

    async def aclose(self) -> None: ...


def _decode(content: bytes) -> object:
    try:
        return orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        return content.decode("utf-8", "replace")


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def event_seq(event_id: str | None) -> int | None:
    """The seq of a resumable stream's event id ``<stream_id>:<seq>`` (None if not one)."""
    if not event_id:
        return None
    _, colon, tail = event_id.rpartition(":")
    return int(tail) if colon and tail.isascii() and tail.isdigit() else None


class HTTPSource:
    """One streaming response: SSE events decoded to chunk dicts, ``[DONE]`` ends it.

    ``stream_id``: the ``X-Sluicegate-Stream-Id`` header (a resumable stream), else None;
    ``last_event_id``: the SSE id of the last event read (None before any, and on streams
    without ids); ``finished``: ``[DONE]`` was read (a body that ends without it is an end
    too, but not a finished one).

    ``after`` (a seq, for resumable streams): every event's id is read, ``seq`` follows the
    seq of the last event read (starting at ``after``, and ``last_event_id`` at the value
    given), and an event whose seq is not above it is skipped as a replay of one already
    delivered.
    """

    def __init__(self, response: _Response, tries: int = 1, *, after: int | None = None,
                 last_event_id: str | None = None) -> None:
        self._response = response
        self._iter: AsyncIterator[bytes] = response.aiter_bytes()
        self._decoder = SSEDecoder()
        self._done = False
        self._track = after is not None
        self._last_id = last_event_id
        self.seq = after or 0
        self.finished = False
        headers = response.headers
        self.provider: str | None = headers.get("x-sluicegate-provider")
        self.model: str | None = headers.get("x-sluicegate-model")
        self.attempts: int | None = _int_or_none(headers.get("x-sluicegate-attempts")) or tries
        self.request_id: str | None = headers.get("x-request-id")
        self.stream_id: str | None = headers.get("x-sluicegate-stream-id") or None
        self.rate_limits: RateLimits | None = RateLimits.from_headers(headers)

    @property
    def last_event_id(self) -> str | None:
        if self._track:
            return self._last_id
        return self._decoder.last_event_id or self._last_id

    async def next_batch(self) -> list[dict[str, Any]] | None:
        while not self._done:
            try:
                data = await anext(self._iter)
            except StopAsyncIteration:
                self._done = True
                break
            except httpx.TransportError as exc:
                raise APIConnectionError(f"The connection dropped mid-stream: {exc!r}") from exc
            if self._track:
                out = self._tracked(data)
            else:
                out = []
                for payload in self._decoder.feed_data(data):
                    if payload.startswith(b"[DONE]"):
                        self._done = self.finished = True
                        break
                    try:
                        obj = orjson.loads(payload)
                    except orjson.JSONDecodeError:
                        continue  # a malformed event is skipped, as the gateway does
                    if isinstance(obj, dict):
                        out.append(obj)
            if out:
                return out
        return None

    def _tracked(self, data: bytes) -> list[dict[str, Any]]:
        """The chunk dicts of the events completed by ``data``, replays skipped."""
        out: list[dict[str, Any]] = []
        for event in self._decoder.feed(data):
            seq = event_seq(event.id)
            if seq is not None:
                if seq <= self.seq:
                    continue  # delivered already (a resume that starts earlier than asked)
                self.seq = seq
            if event.id is not None:
                self._last_id = event.id
            if event.data.startswith(b"[DONE]"):
                self._done = self.finished = True
                break
            try:
                obj = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    async def aclose(self) -> None:
        self._done = True
        await self._response.aclose()


class HTTPTransport:
    """Talks to ``base_url`` (``…/v1``) with a bearer ``api_key`` if given.

    ``http_client``: an ``httpx.AsyncClient`` to send with, or an ``httpx.Client`` (its
    blocking calls then run in worker threads); its own timeouts apply and ``aclose()`` closes
    it. Without one, an ``httpx.AsyncClient`` (``connect_timeout`` in s, no read limit) is
    created on first use, on the loop that uses it.
    """

    def __init__(self, base_url: str, api_key: str | None, *, connect_timeout: float | None,
                 max_retries: int, headers: dict[str, str] | None = None,
                 http_client: httpx.AsyncClient | httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self._timeout = httpx.Timeout(None, connect=connect_timeout)
        self._headers = {"Accept": "text/event-stream, application/json",
                         "User-Agent": "sluicegate-python-client",
                         "Content-Type": "application/json", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        # GET and DELETE carry no body, so no Content-Type.
        self._bodiless_headers = {k: v for k, v in self._headers.items()
                                  if k.lower() != "content-type"}
        self._client: _HTTPClient | None = None
        if isinstance(http_client, httpx.Client):
            from ._threaded_http import ThreadedClient

            self._client = ThreadedClient(http_client)
        elif http_client is not None:
            self._client = http_client

    def _http(self) -> _HTTPClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        return self._client

    async def _send(self, path: str, body: dict[str, Any] | None, *, method: str = "POST",
                    headers: Mapping[str, str] | None = None) -> _Response:
        """Send one request to ``base_url + path`` (``body`` as JSON, if any) and return the
        response, its body not read yet. Raises on a status ≥ 300, as the module says."""
        client = self._http()
        if headers is None:
            headers = self._headers if body is not None else self._bodiless_headers
        request = client.build_request(
            method, self.base_url + path,
            content=orjson.dumps(body) if body is not None else None, headers=headers)
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"Timed out connecting to {self.base_url}: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Could not reach {self.base_url}: {exc!r}") from exc
        if response.status_code >= 300:
            try:
                content = await response.aread()
            except httpx.TransportError:
                content = b""
            finally:
                await response.aclose()
            raise status_error(response.status_code, _decode(content), dict(response.headers))
        return response

    async def open_stream(self, path: str, body: dict[str, Any], *, after: int | None = None
                          ) -> HTTPSource:
        """POST ``body`` to ``path`` and return the open event stream (retried before it
        opens). ``after``: track event ids from that seq (a resumable stream, see
        ``HTTPSource``)."""
        response, tries = await with_retries(lambda: self._send(path, body), self.max_retries)
        return HTTPSource(response, tries, after=after)

    async def open_resume(self, path: str, stream_id: str, *, after: int,
                          last_event_id: str | None = None) -> HTTPSource:
        """Reopen the resumable stream ``stream_id`` after seq ``after``:
        ``GET {path}/{stream_id}/stream`` with ``Last-Event-ID: <stream_id>:<after>`` (the
        ``last_event_id`` given, when it is that event's id), or with ``?starting_after=0``
        when no event was received. Sends the same headers (``Authorization`` included) as the
        request that started it. One try: the caller retries. Raises ``APIStatusError``
        subclasses (404 ``stream_not_found``, 400 ``invalid_last_event_id``, 410
        ``stream_events_expired``, 503 ``state_unavailable``), ``APIConnectionError``."""
        url = f"{path}/{quote(stream_id, safe='')}/stream"
        headers = self._bodiless_headers
        if after > 0:
            if event_seq(last_event_id) != after:
                last_event_id = f"{stream_id}:{after}"
            headers = {**headers, "Last-Event-ID": str(last_event_id)}
        else:
            url += "?starting_after=0"
        response = await self._send(url, None, method="GET", headers=headers)
        return HTTPSource(response, after=after, last_event_id=last_event_id)

    async def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` and return the decoded JSON object (retried)."""
        return await self._json("POST", path, body)

    async def delete_json(self, path: str) -> dict[str, Any]:
        """DELETE ``path`` and return the decoded JSON object (retried as ``post_json``)."""
        return await self._json("DELETE", path, None)

    async def _json(self, method: str, path: str, body: dict[str, Any] | None
                    ) -> dict[str, Any]:
        async def once() -> dict[str, Any]:
            response = await self._send(path, body, method=method)
            try:
                content = await response.aread()
            except httpx.TransportError as exc:
                raise APIConnectionError(f"The connection dropped: {exc!r}") from exc
            finally:
                await response.aclose()
            decoded = _decode(content)
            if not isinstance(decoded, dict):
                raise APIConnectionError("The server answered something other than JSON.")
            return decoded

        result, _ = await with_retries(once, self.max_retries)
        return result

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
