"""``POST /v1/audio/transcriptions`` (sluicegate.audio): the official openai SDK, streamed and
not, against the local Whisper model and against a fake OpenAI upstream; an espeak-ng sample
whose words must be found; bad input; task routing; a client that leaves stops decoding."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from sluicegate.audio.transcriptions import Transcriptions
from sluicegate.audio.whisper import LocalWhisper, available
from sluicegate.client import StreamProcessor
from sluicegate.config import DeploymentConfig
from sluicegate.server import Gateway

from .conftest import MOCK_KEY, MOCK_KEY_ENV, mock_config
from .fakes import ServerThread, start_gateway
from .fakes_audio import TRANSCRIPT, AudioScript, FakeTranscriptionUpstream

SENTENCE = "The quick brown fox jumps over the lazy dog."
WORDS = {"quick", "fox", "lazy", "dog"}

needs_whisper = pytest.mark.skipif(not available(),
                                   reason="faster-whisper / the model packages not installed")


def _words(text: str) -> set[str]:
    return {w.strip(".,!?").lower() for w in text.split()}


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An espeak-ng recording of SENTENCE (WAV)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = tmp_path_factory.mktemp("audio") / "fox.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SENTENCE], check=True, timeout=60)
    return path


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory: pytest.TempPathFactory, speech: Path) -> Path:
    """About a minute of speech: several segments."""
    path = tmp_path_factory.mktemp("audio") / "long.wav"
    text = " ".join(f"Sentence number {i}. {SENTENCE}" for i in range(12))
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, timeout=60)
    return path


@pytest.fixture(scope="module")
def audio_upstream() -> Iterator[FakeTranscriptionUpstream]:
    fake = FakeTranscriptionUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def audio_gateway(audio_upstream: FakeTranscriptionUpstream
                  ) -> Iterator[tuple[ServerThread, Gateway]]:
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    config = mock_config(audio_upstream.base_url)
    config.models.append(DeploymentConfig(
        name="transcriber", provider="openai", base_url=audio_upstream.base_url,
        model="gpt-4o-transcribe", api_key_env=MOCK_KEY_ENV))
    config.tasks = {"audio_transcription": ["mock/broken-transcribe", "transcriber"]}
    config.audio.max_bytes = 300_000
    server, gateway = start_gateway(config)
    yield server, gateway
    server.stop()
    mp.undo()


@pytest.fixture
def agw(audio_gateway: tuple[ServerThread, Gateway],
        audio_upstream: FakeTranscriptionUpstream) -> ServerThread:
    audio_upstream.script = AudioScript()
    audio_upstream.queue.clear()
    audio_upstream.requests.clear()
    return audio_gateway[0]


@pytest.fixture
def client(agw: ServerThread) -> Iterator[openai.OpenAI]:
    """The official openai SDK, pointed at the gateway."""
    with openai.OpenAI(base_url=agw.url + "/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def test_openai_sdk_stream_from_an_openai_upstream(
        client: openai.OpenAI, audio_upstream: FakeTranscriptionUpstream, speech: Path) -> None:
    with speech.open("rb") as f:
        stream = client.audio.transcriptions.create(model="transcriber", file=f, stream=True)
        events = list(stream)
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    [done] = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) == len(TRANSCRIPT.split())
    assert "".join(d.delta for d in deltas) == done.text == TRANSCRIPT
    assert done.usage is not None and done.usage.output_tokens == len(TRANSCRIPT.split())
    [sent] = audio_upstream.requests
    assert sent.fields["model"] == "gpt-4o-transcribe"
    assert sent.fields["stream"] == "true"
    assert sent.headers["Authorization"] == f"Bearer {MOCK_KEY}"
    assert sent.file == speech.read_bytes() and sent.filename == "fox.wav"
    # the chunk helpers read these events too
    processor = StreamProcessor()
    for event in events:
        processor.process(event)
    assert processor.content == TRANSCRIPT and processor.finish_reason == "stop"


def test_openai_upstream_whole_answers(client: openai.OpenAI, speech: Path) -> None:
    with speech.open("rb") as f:
        result = client.audio.transcriptions.create(model="transcriber", file=f)
    assert result.text == TRANSCRIPT
    with speech.open("rb") as f:
        text = client.audio.transcriptions.create(model="transcriber", file=f,
                                                  response_format="text")
    assert str(text).strip() == TRANSCRIPT


def test_task_chain_moves_past_a_failing_model(
        agw: ServerThread, audio_upstream: FakeTranscriptionUpstream, speech: Path) -> None:
    audio_upstream.queue.append(AudioScript(status=503))
    response = httpx.post(agw.url + "/v1/audio/transcriptions",
                          data={"model": "task/audio_transcription", "stream": "true"},
                          files={"file": ("fox.wav", speech.read_bytes(), "audio/wav")},
                          timeout=30)
    assert response.status_code == 200
    assert response.headers["X-Sluicegate-Task"] == "audio_transcription"
    assert response.headers["X-Sluicegate-Model"] == "transcriber"
    assert [r.fields["model"] for r in audio_upstream.requests] == ["broken-transcribe",
                                                                    "gpt-4o-transcribe"]
    assert "transcript.text.done" in response.text


@needs_whisper
def test_openai_sdk_stream_from_the_local_model(client: openai.OpenAI, speech: Path) -> None:
    with speech.open("rb") as f:
        events = list(client.audio.transcriptions.create(
            model="local/whisper-base", file=f, stream=True, language="en"))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    [done] = [e for e in events if e.type == "transcript.text.done"]
    assert deltas and "".join(d.delta for d in deltas) == done.text
    assert _words(done.text) >= WORDS, done.text
    usage = done.usage.model_dump() if done.usage is not None else {}
    assert usage["type"] == "duration" and usage["seconds"] >= 2


@needs_whisper
def test_local_model_whole_answers(client: openai.OpenAI, speech: Path) -> None:
    with speech.open("rb") as f:
        result = client.audio.transcriptions.create(model="local/whisper-base", file=f)
    assert _words(result.text) >= WORDS
    with speech.open("rb") as f:
        text = client.audio.transcriptions.create(model="local/whisper-base", file=f,
                                                  response_format="text")
    assert _words(str(text)) >= WORDS


@needs_whisper
def test_segments_stream_as_decoded_and_a_client_that_leaves_stops_decoding(
        agw: ServerThread, audio_gateway: tuple[ServerThread, Gateway], long_speech: Path
) -> None:
    data = long_speech.read_bytes()
    handler = _handler(audio_gateway[1])
    limit = handler.max_bytes
    handler.max_bytes = len(data) + 1
    try:
        started = time.perf_counter()
        with httpx.stream("POST", agw.url + "/v1/audio/transcriptions",
                          data={"model": "local/whisper-base", "stream": "true",
                                "language": "en"},
                          files={"file": ("long.wav", data, "audio/wav")},
                          timeout=120) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    assert "transcript.text.delta" in line
                    break  # the first segment, then leave
            first_at = time.perf_counter() - started
        local = handler.local
        assert local is not None
        # the decoding thread stops after its current segment: the model is free again soon
        deadline = time.monotonic() + 30
        while local._busy.locked() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not local._busy.locked()
        assert first_at < 30
    finally:
        handler.max_bytes = limit


def _handler(gateway: Gateway) -> Transcriptions:
    return gateway.audio


@needs_whisper
async def test_stop_ends_decoding_between_segments(long_speech: Path) -> None:
    whisper = LocalWhisper(2)
    data = await asyncio.to_thread(long_speech.read_bytes)
    audio = await asyncio.to_thread(LocalWhisper.decode, data, "wav")
    stop = threading.Event()
    segments = whisper.transcribe(audio, language="en", prompt=None, temperature=0.0,
                                  stop=stop)
    got = [await anext(segments)]
    stop.set()
    got += [s async for s in segments]
    # the thread ends after the segment it was decoding when asked: far from the end
    assert got[-1].end < audio.duration_s * 0.75, (got, audio.duration_s)


@pytest.mark.parametrize(("name", "content", "status", "words"), [
    ("notes.txt", b"hello", 400, ["'txt'", "Supported formats"]),
    ("broken.wav", b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4, 400, ["wav", "decoded"]),
    ("big.wav", b"\x00" * 400_000, 413, ["300000"]),
])
def test_bad_input(agw: ServerThread, name: str, content: bytes, status: int,
                   words: list[str]) -> None:
    if status == 400 and name.endswith(".wav") and not available():
        pytest.skip("the local model decodes; not installed")
    response = httpx.post(agw.url + "/v1/audio/transcriptions",
                          data={"model": "local/whisper-base"},
                          files={"file": (name, content, "application/octet-stream")},
                          timeout=30)
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    for word in words:
        assert word in message


def test_missing_fields_and_unknown_models(agw: ServerThread, speech: Path) -> None:
    url = agw.url + "/v1/audio/transcriptions"
    files = {"file": ("fox.wav", speech.read_bytes(), "audio/wav")}
    assert httpx.post(url, files=files, timeout=30).status_code == 400  # no model
    assert httpx.post(url, data={"model": "local/whisper-base"},
                      timeout=30).status_code == 400  # no file
    assert httpx.post(url, data={"model": "no-such-model"}, files=files,
                      timeout=30).status_code == 404


def test_sdk_transcriptions(agw: ServerThread, speech: Path) -> None:
    from sluicegate.client import APIStatusError, Client

    with Client(agw.url + "/v1") as client:
        events = list(client.audio.transcriptions.stream(file=speech, model="transcriber"))
        assert events[-1]["type"] == "transcript.text.done"
        assert "".join(e["delta"] for e in events[:-1]) == TRANSCRIPT
        assert client.audio.transcriptions.create(speech.read_bytes(),
                                                  model="transcriber") == TRANSCRIPT
        notes = speech.with_name("notes.txt")
        notes.write_text("not audio")
        with pytest.raises(APIStatusError) as caught:
            list(client.audio.transcriptions.stream(file=notes, model="transcriber"))
        assert caught.value.status_code == 400
        assert "'txt'" in str(caught.value)


async def test_async_sdk_transcriptions(agw: ServerThread, speech: Path) -> None:
    from sluicegate.client import AsyncClient

    async with AsyncClient(agw.url + "/v1") as client:
        with speech.open("rb") as f:
            data = f.read()
        events = [e async for e in client.audio.transcriptions.stream(
            file=data, model="transcriber", language="en")]
    assert events[-1]["text"] == TRANSCRIPT
