"""A sync ``httpx.Client`` given to the sync ``Client`` (``http_client=``), used from the async
transport: each blocking call (send, each read of the body, close) runs in a worker thread of
the loop's default executor, so the loop never blocks. A read cut by a time limit goes on in
its worker until the response is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import httpx

__all__ = ["ThreadedClient", "ThreadedResponse"]


class ThreadedResponse:
    """The part of ``httpx.Response``'s async API the transport uses, over a sync response."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status_code: int = response.status_code
        self.headers: httpx.Headers = response.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's bytes, one worker-thread read at a time. Raises ``httpx.TransportError``."""
        chunks = self._response.iter_bytes()
        while (data := await asyncio.to_thread(next, chunks, None)) is not None:
            yield data

    async def aread(self) -> bytes:
        """The whole body."""
        return await asyncio.to_thread(self._response.read)

    async def aclose(self) -> None:
        """Release the connection."""
        await asyncio.to_thread(self._response.close)


class ThreadedClient:
    """The part of ``httpx.AsyncClient``'s API the transport uses, over an ``httpx.Client``."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def build_request(self, method: str, url: str, *, content: bytes | None,
                      headers: Mapping[str, str]) -> httpx.Request:
        return self._client.build_request(method, url, content=content, headers=headers)

    async def send(self, request: httpx.Request, *, stream: bool) -> ThreadedResponse:
        """Send ``request``; the response's body is read later. Raises as ``httpx.Client``."""
        response: httpx.Response = await asyncio.to_thread(self._client.send, request,
                                                           stream=stream)
        return ThreadedResponse(response)

    async def aclose(self) -> None:
        """Close the ``httpx.Client``."""
        await asyncio.to_thread(self._client.close)

