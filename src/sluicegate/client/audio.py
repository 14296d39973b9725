"""``client.audio.transcriptions``: speech to text through the gateway's
``POST /v1/audio/transcriptions``.

    with Client() as client:
        for event in client.audio.transcriptions.stream(file="talk.wav"):
            if event["type"] == "transcript.text.delta":
                print(event["delta"], end="")

``stream`` yields the gateway's events as dicts: ``transcript.text.delta`` (``delta``), then
``transcript.text.done`` (``text``, ``usage``); ``process_stream_chunk`` reads them too.
``create`` returns the whole text. ``file``: a path, bytes, or a binary file object; ``model``
defaults to ``task/audio_transcription`` (the gateway's task, or its local Whisper model).
Raises the ``APIStatusError`` subclasses (400 for a format it cannot read, 413 for a file over
its limit), ``APIConnectionError``, ``APITimeoutError``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import httpx
import orjson

from .errors import APIConnectionError, APITimeoutError, status_error


class _ClientParts(Protocol):
    """What these resources use of ``Client`` / ``AsyncClient``."""

    base_url: str
    api_key: str | None
    timeout: float | None
    connect_timeout: float | None

__all__ = ["AsyncAudio", "Audio"]

FileInput = str | os.PathLike[str] | bytes | IO[bytes]
PATH = "/audio/transcriptions"
DEFAULT_MODEL = "task/audio_transcription"


def _file(file: FileInput) -> tuple[str, bytes]:
    if isinstance(file, bytes):
        return "audio.wav", file
    if isinstance(file, (str, os.PathLike)):
        path = Path(file)
        return path.name, path.read_bytes()
    name = getattr(file, "name", None)
    return (Path(name).name if isinstance(name, str) else "audio.wav"), file.read()


def _form(model: str, stream: bool, fields: dict[str, Any]) -> dict[str, str]:
    form = {"model": model, "stream": "true" if stream else "false"}
    form.update({k: str(v) for k, v in fields.items() if v is not None})
    return form


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            event = orjson.loads(line[6:])
            if isinstance(event, dict):
                yield event


def _error(response: httpx.Response, body: bytes) -> Exception:
    try:
        decoded: object = orjson.loads(body)
    except orjson.JSONDecodeError:
        decoded = body.decode("utf-8", "replace")
    return status_error(response.status_code, decoded, dict(response.headers))


class _Transcriptions:
    def __init__(self, client: _ClientParts) -> None:
        self._client = client

    def _timeout(self, timeout: float | None) -> httpx.Timeout:
        limit = self._client.timeout if timeout is None else timeout
        return httpx.Timeout(limit, connect=self._client.connect_timeout)

    def stream(self, file: FileInput, model: str = DEFAULT_MODEL, *,
               timeout: float | None = None, **fields: Any) -> Iterator[dict[str, Any]]:
        """The transcription's events as they come (``fields``: ``language``, ``prompt``,
        ``temperature``...)."""
        name, data = _file(file)
        client = self._client
        try:
            with httpx.Client(timeout=self._timeout(timeout)) as http, http.stream(
                    "POST", client.base_url + PATH, data=_form(model, True, fields),
                    files={"file": (name, data)}, headers=_headers(client.api_key)
            ) as response:
                if response.status_code >= 400:
                    raise _error(response, response.read())
                yield from _events(response.iter_lines())
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"The transcription did not finish in time: {exc}") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Connection error: {exc}") from exc

    def create(self, file: FileInput, model: str = DEFAULT_MODEL, *,
               timeout: float | None = None, **fields: Any) -> str:
        """The whole transcript."""
        text = ""
        for event in self.stream(file, model, timeout=timeout, **fields):
            if event.get("type") == "transcript.text.done":
                text = str(event.get("text") or "")
        return text


class _AsyncTranscriptions:
    def __init__(self, client: _ClientParts) -> None:
        self._client = client

    async def stream(self, file: FileInput, model: str = DEFAULT_MODEL, *,
                     timeout: float | None = None,  # noqa: ASYNC109 (as the sync one)
                     **fields: Any
                     ) -> AsyncIterator[dict[str, Any]]:
        """As ``Client.audio.transcriptions.stream``, async (``file`` is read at once)."""
        name, data = _file(file)
        client = self._client
        limit = client.timeout if timeout is None else timeout
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(
                    limit, connect=client.connect_timeout)) as http, http.stream(
                    "POST", client.base_url + PATH, data=_form(model, True, fields),
                    files={"file": (name, data)}, headers=_headers(client.api_key)
            ) as response:
                if response.status_code >= 400:
                    raise _error(response, await response.aread())
                async for line in response.aiter_lines():
                    for event in _events(iter((line,))):
                        yield event
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"The transcription did not finish in time: {exc}") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Connection error: {exc}") from exc


class Audio:
    """``client.audio``: ``transcriptions.stream`` / ``transcriptions.create``."""

    def __init__(self, client: _ClientParts) -> None:
        self.transcriptions = _Transcriptions(client)


class AsyncAudio:
    """``AsyncClient.audio``: ``transcriptions.stream``."""

    def __init__(self, client: _ClientParts) -> None:
        self.transcriptions = _AsyncTranscriptions(client)
