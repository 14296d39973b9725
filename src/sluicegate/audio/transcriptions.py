"""``POST /v1/audio/transcriptions``: OpenAI's transcription API, streamed.

The request is ``multipart/form-data`` as OpenAI's: ``file`` (the audio), ``model``, and
optionally ``stream``, ``response_format`` (``json`` or ``text``; an OpenAI upstream takes
its others too), ``language``, ``prompt``, ``temperature``. With ``stream=true`` the answer is
SSE: ``transcript.text.delta`` events (``delta``), then one ``transcript.text.done`` (``text``
and ``usage``); otherwise ``{"text", "usage"}``.

Models:

- ``local/whisper-base``: Whisper base on the CPU (``sluicegate.audio.whisper``); a delta per
  segment, as it is decoded; usage ``{"type": "duration", "seconds"}`` (the audio's length,
  rounded up) plus ``output_tokens`` (tokens decoded);
- any OpenAI-dialect model (``openai/gpt-4o-transcribe``, a ``models`` deployment): the
  multipart request is sent on with the upstream model and the provider's key, and its answer
  (events, or the JSON / text) relayed as it comes;
- ``task/audio_transcription`` (or ``auto``): the ``tasks`` section's ``audio_transcription``
  list, tried in order while nothing was sent (a failure that may move on:
  ``sluicegate.failover.retryable``).

Bad input: a file whose extension (or, without one, content type) is not one of OpenAI's
formats (``flac``, ``m4a``, ``mp3``, ``mp4``, ``mpeg``, ``mpga``, ``oga``, ``ogg``, ``wav``,
``webm``) is a 400 naming it; one the local model cannot decode is a 400 naming the format; a
file over ``audio.max_bytes`` is a 413 (read no further). A client that disconnects stops the
decoding (the local model's thread ends after its current segment; an upstream's connection is
closed). Each request is accounted like a chat request (``sluicegate.accounting``).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from .. import telemetry
from ..accounting import Accounted, account
from ..config import GatewayConfig
from ..errors import GatewayError, InvalidRequestError, PayloadTooLargeError, UpstreamError
from ..failover import retryable
from ..metrics import Metrics
from ..providers.base import Target
from ..providers.http import HTTPProvider
from ..router import Router
from ..tasks import AUTO_MODELS, TASK_PREFIX
from .whisper import LOCAL_MODEL, LocalWhisper, available

__all__ = ["FORMATS", "GatewayParts", "Transcriptions"]

FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
_TYPES = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/mpeg": "mp3",
          "audio/mp3": "mp3", "audio/flac": "flac", "audio/ogg": "ogg", "audio/webm": "webm",
          "audio/mp4": "m4a", "audio/m4a": "m4a", "video/mp4": "mp4", "video/webm": "webm"}
TASK = "audio_transcription"
SSE = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
       "X-Accel-Buffering": "no"}


class GatewayParts(Protocol):
    """What the handler uses of ``sluicegate.server.Gateway``."""

    config: GatewayConfig
    router: Router
    metrics: Metrics | None


@dataclass(slots=True)
class Upload:
    data: bytes
    filename: str
    content_type: str
    fmt: str
    fields: dict[str, str]

    @property
    def stream(self) -> bool:
        return self.fields.get("stream", "").lower() == "true"


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class Transcriptions:
    """The route's handler; owns the local speech model (loaded on first use or at start-up)."""

    def __init__(self, gateway: GatewayParts) -> None:
        self.gateway = gateway
        settings = gateway.config.audio
        self.max_bytes = settings.max_bytes
        self.local: LocalWhisper | None = (
            LocalWhisper(settings.n_threads) if settings.local_model and available() else None)

    def register(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/transcriptions", self.handle)

    async def _read(self, request: web.Request) -> Upload:
        if request.content_length is not None and request.content_length > self.max_bytes + 65536:
            raise PayloadTooLargeError(f"The audio file exceeds {self.max_bytes} bytes.")
        if not request.content_type.startswith("multipart/"):
            raise InvalidRequestError("Send multipart/form-data with a 'file' and a 'model'.")
        reader = await request.multipart()
        fields: dict[str, str] = {}
        upload: tuple[bytes, str, str] | None = None
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                continue
            if part.name == "file":
                received = bytearray()
                while piece := await part.read_chunk(65536):
                    received += piece
                    if len(received) > self.max_bytes:
                        raise PayloadTooLargeError(
                            f"The audio file exceeds {self.max_bytes} bytes.")
                upload = (bytes(received), part.filename or "",
                          part.headers.get("Content-Type", ""))
            elif part.name:
                value = await part.text()
                if len(value) > 65536:
                    raise InvalidRequestError(f"The field '{part.name}' is too long.",
                                              param=part.name)
                fields[part.name] = value
        if upload is None:
            raise InvalidRequestError("The 'file' field is missing.", param="file")
        if not fields.get("model"):
            raise InvalidRequestError("The 'model' field is missing.", param="model")
        data, filename, content_type = upload
        ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        fmt = ext or _TYPES.get(content_type.split(";")[0].strip().lower(), "")
        if fmt not in FORMATS:
            named = f"'{ext}'" if ext else f"'{content_type or 'unknown'}'"
            raise InvalidRequestError(
                f"Unsupported file format {named}. Supported formats: {', '.join(FORMATS)}.",
                param="file", code="unsupported_format")
        if not data:
            raise InvalidRequestError("The audio file is empty.", param="file")
        return Upload(data, filename or f"audio.{fmt}", content_type, fmt, fields)

    def _chain(self, model: str) -> tuple[list[str], bool]:
        """The model names to try, and whether they came from the task."""
        tasks = self.gateway.config.tasks
        if model in AUTO_MODELS or model == f"{TASK_PREFIX}{TASK}":
            if TASK not in tasks:
                if self.local is not None:
                    return [LOCAL_MODEL], True
                raise InvalidRequestError(f"No '{TASK}' task is configured.", param="model")
            return list(tasks[TASK]), True
        return [model], False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        upload = await self._read(request)
        names, by_task = self._chain(upload.fields["model"])
        started = time.perf_counter()
        state: dict[str, Any] = {"outcome": "failed", "provider": "none", "upstream": "",
                                 "usage": {}, "ttft": None, "attempts": 0,
                                 "deployment": "none"}
        if self.gateway.metrics is not None:
            self.gateway.metrics.in_flight.inc()
        response: web.StreamResponse | None = None
        try:
            failure: GatewayError | None = None
            for name in names:
                state["attempts"] += 1
                headers = {"X-Sluicegate-Model": name}
                if by_task:
                    headers.update({"X-Sluicegate-Task": TASK,
                                    "X-Sluicegate-Task-Reason": "explicit"})
                try:
                    if name == LOCAL_MODEL and self.local is not None:
                        state.update(provider="local", upstream="whisper-base",
                                     deployment=LOCAL_MODEL)
                        response = await self._local(request, upload, headers, state)
                    else:
                        target = self.gateway.router.resolve(name)
                        provider = target.provider
                        if not isinstance(provider, HTTPProvider) or getattr(
                                provider, "dialect", "") not in ("openai", "openrouter"):
                            raise InvalidRequestError(
                                f"The model '{name}' does not transcribe audio: use "
                                f"{LOCAL_MODEL} or an OpenAI-dialect model.", param="model")
                        state.update(provider=provider.name, upstream=target.upstream_model,
                                     deployment=(target.deployment.name if target.deployment
                                                 else "none"))
                        response = await self._upstream(request, upload, target, provider,
                                                        headers, state)
                    state["outcome"] = "completed"
                    return response
                except GatewayError as exc:
                    if response is not None or not retryable(exc) or name == names[-1]:
                        raise
                    failure = exc
            assert failure is not None
            raise failure
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            state["outcome"] = "cancelled"
            raise
        except BaseException as exc:
            if not isinstance(exc, GatewayError):
                state["outcome"] = "cancelled"
            raise
        finally:
            account(Accounted(
                id=f"transcr-{uuid.uuid4().hex[:24]}", model=upload.fields["model"],
                deployment=state["deployment"],  # a configured name: a metric label
                provider=state["provider"], upstream_model=state["upstream"],
                outcome=state["outcome"], attempts=state["attempts"],
                duration_s=time.perf_counter() - started, ttft_s=state["ttft"],
                malformed_events=0, usage=state["usage"], extra={"endpoint": "transcriptions"},
            ), self.gateway.metrics)

    # -- the local model -------------------------------------------------------------------

    async def _local(self, request: web.Request, upload: Upload, headers: dict[str, str],
                     state: dict[str, Any]) -> web.StreamResponse:
        import asyncio

        assert self.local is not None
        audio = await asyncio.to_thread(LocalWhisper.decode, upload.data, upload.fmt)
        temperature = float(upload.fields.get("temperature") or 0.0)
        stop = threading.Event()
        segments = self.local.transcribe(audio, language=upload.fields.get("language") or None,
                                         prompt=upload.fields.get("prompt") or None,
                                         temperature=temperature, stop=stop)
        started = time.perf_counter()
        pieces: list[str] = []
        tokens = 0
        response: web.StreamResponse | None = None
        try:
            async with contextlib.aclosing(segments):
                async for segment in segments:
                    text = segment.text if pieces else segment.text.lstrip()
                    pieces.append(text)
                    tokens += segment.tokens
                    if state["ttft"] is None:
                        state["ttft"] = time.perf_counter() - started
                    if upload.stream:
                        if response is None:
                            response = web.StreamResponse(headers={**SSE, **headers})
                            await response.prepare(request)
                        await response.write(_event({"type": "transcript.text.delta",
                                                     "delta": text, "logprobs": None}))
        finally:
            stop.set()
        text = "".join(pieces)
        usage = {"type": "duration", "seconds": math.ceil(audio.duration_s),
                 "output_tokens": tokens}
        state["usage"] = {"prompt_tokens": 0, "completion_tokens": tokens,
                          "total_tokens": tokens}
        if not upload.stream:
            if upload.fields.get("response_format") == "text":
                return web.Response(text=text + "\n", headers=headers)
            return web.Response(body=orjson.dumps({"text": text, "usage": usage}),
                                content_type="application/json", headers=headers)
        if response is None:  # no speech: no delta, the done event only
            response = web.StreamResponse(headers={**SSE, **headers})
            await response.prepare(request)
        await response.write(_event({"type": "transcript.text.done", "text": text,
                                     "logprobs": None, "usage": usage}))
        await response.write_eof()
        return response

    # -- an OpenAI upstream ----------------------------------------------------------------

    async def _upstream(self, request: web.Request, upload: Upload, target: Target,
                        provider: HTTPProvider, headers: dict[str, str],
                        state: dict[str, Any]) -> web.StreamResponse:
        form = aiohttp.FormData()
        for key, value in upload.fields.items():
            form.add_field(key, target.upstream_model if key == "model" else value)
        form.add_field("file", upload.data, filename=upload.filename,
                       content_type=upload.content_type or "application/octet-stream")
        sent = {k: v for k, v in provider.request_headers().items()
                if k.lower() != "content-type"}
        sent.update(provider.extra_headers)
        if telemetry.active is not None:
            telemetry.inject(sent)
        started = time.perf_counter()
        try:
            upstream = await provider._get_session().post(
                provider.base_url + "/audio/transcriptions", data=form, headers=sent,
                allow_redirects=False)
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"Cannot reach the upstream ({provider.name}).",
                                detail=repr(exc)) from exc
        try:
            if not 200 <= upstream.status < 300:
                body = await upstream.content.read(65536)
                raise provider._refused(upstream.status, body, upstream.headers)
            content_type = upstream.headers.get("Content-Type", "application/json")
            if not content_type.startswith("text/event-stream"):
                body = await upstream.read()
                state["ttft"] = time.perf_counter() - started
                with contextlib.suppress(orjson.JSONDecodeError):
                    state["usage"] = _usage(orjson.loads(body).get("usage"))
                return web.Response(body=body, headers={**headers,
                                                        "Content-Type": content_type})
            response = web.StreamResponse(headers={**SSE, **headers})
            await response.prepare(request)
            buffer = b""
            async for chunk in upstream.content.iter_any():
                if state["ttft"] is None:
                    state["ttft"] = time.perf_counter() - started
                await response.write(chunk)  # relayed as it comes
                buffer = (buffer + chunk)[-65536:]
            for block in buffer.split(b"\n\n"):  # the done event's usage, for accounting
                if b"transcript.text.done" in block and block.startswith(b"data: "):
                    with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                        state["usage"] = _usage(orjson.loads(block[6:]).get("usage"))
            await response.write_eof()
            return response
        finally:
            upstream.close()


def _usage(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    prompt = int(raw.get("input_tokens") or 0)
    completion = int(raw.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": int(raw.get("total_tokens") or prompt + completion)}
