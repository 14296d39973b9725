"""A fake OpenAI transcription upstream (``POST /v1/audio/transcriptions``), as OpenAI's
``gpt-4o-transcribe`` answers: with ``stream=true``, ``transcript.text.delta`` events (one per
word, with ``logprobs``) then ``transcript.text.done`` with the text and token usage; otherwise
``{"text", "usage"}`` JSON, or the bare text for ``response_format=text``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .fakes import FakeUpstream

TRANSCRIPT = "The quick brown fox jumps over the lazy dog."


@dataclass
class AudioScript:
    text: str = TRANSCRIPT
    status: int = 200
    gap_s: float = 0.0


@dataclass
class AudioReceived:
    headers: dict[str, str]
    fields: dict[str, str]
    file: bytes
    filename: str
    content_type: str
    extra: dict[str, Any] = field(default_factory=dict)


class FakeTranscriptionUpstream(FakeUpstream[AudioScript]):
    def __init__(self) -> None:
        super().__init__(AudioScript)
        self.queue: list[AudioScript] = []
        self.requests: list[AudioReceived] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/audio/transcriptions", self._handle)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        post = await request.post()
        upload = post["file"]
        assert isinstance(upload, web.FileField)
        fields = {k: str(v) for k, v in post.items() if k != "file"}
        self.requests.append(AudioReceived(dict(request.headers), fields, upload.file.read(),
                                           upload.filename, upload.content_type))
        script = self.queue.pop(0) if self.queue else self.script
        if script.status != 200:
            return self.error_response(script.status, {"error": {
                "message": "fake failure", "type": "server_error", "param": None,
                "code": None}}, {})
        words = script.text.split(" ")
        usage = {"type": "tokens", "input_tokens": 14,
                 "input_token_details": {"text_tokens": 0, "audio_tokens": 14},
                 "output_tokens": len(words), "total_tokens": 14 + len(words)}
        if fields.get("stream") != "true":
            if fields.get("response_format") == "text":
                return web.Response(text=script.text + "\n")
            return web.json_response({"text": script.text, "usage": usage})

        async def send(response: web.StreamResponse) -> None:
            for i, word in enumerate(words):
                delta = word if i == 0 else " " + word
                await response.write(b"data: " + orjson.dumps({
                    "type": "transcript.text.delta", "delta": delta,
                    "logprobs": [{"token": delta, "logprob": -0.01, "bytes": list(
                        delta.encode())}]}) + b"\n\n")
                if script.gap_s:
                    await asyncio.sleep(script.gap_s)
            await response.write(b"data: " + orjson.dumps({
                "type": "transcript.text.done", "text": script.text, "logprobs": [],
                "usage": usage}) + b"\n\n")

        return await self.stream(request, send)
