"""The embedded inference engine: one llama.cpp model, one worker thread, a bounded queue.

- The model loads once (``load()``), at gateway start-up or on first use.
- ``submit()`` admits a job or raises ``RateLimitError`` (429) when ``1 + max_queue`` jobs are
  already running or waiting. It tokenizes the prompt first and raises ``ContextLengthError``
  (400) when the prompt leaves no room in the context window (``n_ctx`` tokens).
- The worker generates token by token with ``Llama.generate`` and hands each decoded piece to
  the job's event loop as soon as it exists (``loop.call_soon_threadsafe``).
- ``Job.cancel()`` is checked before every next token, so a cancelled job generates at most one
  more token. ``tokens_generated`` counts every sampled token (for tests and metrics).
- Usage is counted with the model's own tokenizer: prompt tokens plus sampled tokens.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ContextLengthError, RateLimitError
from .cpu import Repack, decide_repack, features_used, load_llama, read_cpu

__all__ = ["MAX_TOKEN_CHARS", "Finished", "GenerationParams", "Job", "LocalEngine", "Piece"]

log = logging.getLogger("sluicegate.local")

MAX_TOKEN_CHARS = 128
"""More characters than any one token covers (bytes ≥ characters; Gemma 3's longest token is
31 bytes), so a prompt of more than ``n_ctx * MAX_TOKEN_CHARS`` characters is over the context
window without tokenizing it."""


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling settings. ``max_tokens`` is per choice (tokens); ``stop`` holds strings."""

    max_tokens: int | None = None
    temperature: float = 0.5
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.0
    """1.0 disables llama.cpp's penalties sampler, which otherwise scans the whole vocabulary
    (262,144 tokens for Gemma 3) per token: ~2 ms a token here, about 8% of decode time."""
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    trim: bool = False
    """Chat turns: drop whitespace before the answer and before a stop sequence."""


@dataclass(frozen=True, slots=True)
class Piece:
    """Text for one choice; ``finish_reason`` set on the choice's last piece."""

    index: int
    text: str
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    """The job ended; token counts come from the model's tokenizer."""

    prompt_tokens: int
    completion_tokens: int


Item = Piece | Finished | BaseException


@dataclass(eq=False)
class Job:
    """One admitted request. Read items from ``queue``; call ``cancel()`` to stop it."""

    prompt_tokens: list[int]
    params: GenerationParams
    max_tokens: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    completion_tokens: int = 0
    """Tokens sampled so far for this job, over all its choices (updated by the worker)."""

    def cancel(self) -> None:
        self.cancelled.set()

    def emit(self, item: Item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()


class LocalEngine:
    """A GGUF model served by llama-cpp-python from one worker thread.

    ``n_ctx`` is the context window in tokens, ``n_threads`` llama.cpp's CPU threads (None: all
    cores), ``max_queue`` how many jobs may wait behind the running one.
    """

    def __init__(
        self,
        model_path: str | Callable[[], str],
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        max_queue: int = 8,
        default_max_tokens: int = 256,
        repack: Repack = "auto",
        cpuinfo: str | Path = "/proc/cpuinfo",
    ) -> None:
        self._model_path = model_path
        self.cpu = read_cpu(cpuinfo)
        self.repack = decide_repack(repack, self.cpu)
        self.features: list[str] = []  # CPU features llama.cpp uses, known once loaded
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.max_queue = max_queue
        self.parallel = 1
        """Jobs generating at once; admission allows ``parallel + max_queue``."""
        self.default_max_tokens = default_max_tokens
        self.tokens_generated = 0
        self._llm: Any = None
        self._load_lock = threading.Lock()
        self._admit_lock = threading.Lock()
        self._admitted = 0
        self._jobs: list[Job] = []
        self._wake = threading.Condition(threading.Lock())
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def describe(self) -> dict[str, Any]:
        """For ``/healthz``: loaded, the CPU model, weight repacking and why, and the CPU
        features llama.cpp uses (empty until loaded)."""
        return {"loaded": self.loaded, "cpu": self.cpu.model,
                "repack": self.repack.use_extra_bufts, "repack_reason": self.repack.reason,
                "cpu_features": list(self.features)}

    def load(self) -> None:
        """Load the model (blocking, seconds). Idempotent and thread-safe."""
        with self._load_lock:
            if self._llm is not None:
                return
            path = self._model_path() if callable(self._model_path) else self._model_path
            log.info("loading local model %s", path)
            self._llm = load_llama(str(path), self.repack, n_ctx=self.n_ctx,
                                   n_threads=self.n_threads, n_batch=512, verbose=False)
            self._start_worker()

    def _start_worker(self) -> None:
        """Log what the loaded model runs on, then start the engine's thread."""
        self.features = features_used(self.repack)
        log.info("local model on %s: weight repacking %s (%s); CPU features used: %s",
                 self.cpu.model, "on" if self.repack.use_extra_bufts else "off",
                 self.repack.reason, " ".join(self.features) or "none reported")
        self._thread = threading.Thread(target=self._worker, name="sluicegate-local",
                                        daemon=True)
        self._thread.start()

    def count_tokens(self, prompt: str) -> int:
        """Tokens the model reads for ``prompt``, tokenized as ``submit`` does (BOS included),
        so the count equals a job's ``prompt_tokens`` (loads the model if needed)."""
        self.load()
        return len(self._llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False))

    def submit(self, prompt: str, params: GenerationParams,
               loop: asyncio.AbstractEventLoop) -> Job:
        """Admit a job. Raises ``RateLimitError`` (429) or ``ContextLengthError`` (400).

        Blocking (tokenizing a long prompt takes a while): call it off the event loop. A prompt
        longer than ``n_ctx * MAX_TOKEN_CHARS`` characters cannot fit and is refused before it
        is tokenized.
        """
        if len(prompt) > self.n_ctx * MAX_TOKEN_CHARS:
            raise ContextLengthError(
                f"The prompt is {len(prompt)} characters, more than this model's context window "
                f"of {self.n_ctx} tokens can hold.", param="messages")
        self.load()
        tokens: list[int] = self._llm.tokenize(prompt.encode("utf-8"), add_bos=True,
                                               special=False)
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise ContextLengthError(
                f"The prompt is {len(tokens)} tokens; this model's context window is "
                f"{self.n_ctx} tokens.",
                param="messages",
            )
        wanted = params.max_tokens or self.default_max_tokens
        job = Job(prompt_tokens=tokens, params=params, max_tokens=min(wanted, room), loop=loop)
        with self._admit_lock:
            if self._admitted >= self.parallel + self.max_queue:
                raise RateLimitError(
                    f"The local model is busy ({self._admitted} requests running or queued).",
                    retry_after=1.0,
                )
            self._admitted += 1
        with self._wake:
            self._jobs.append(job)
            self._wake.notify()
        return job

    def close(self) -> None:
        """Stop the worker after the running job; pending jobs are cancelled."""
        with self._wake:
            self._closed = True
            for job in self._jobs:
                job.cancel()
            self._wake.notify()

    def _worker(self) -> None:
        while True:
            with self._wake:
                while not self._jobs and not self._closed:
                    self._wake.wait()
                if self._closed and not self._jobs:
                    return
                job = self._jobs.pop(0)
            try:
                self._run(job)
            except Exception as exc:  # reported to the request, never kills the worker
                log.exception("local generation failed")
                job.emit(exc)
            finally:
                with self._admit_lock:
                    self._admitted -= 1

    def _run(self, job: Job) -> None:
        completion = 0
        for index in range(job.params.n):
            if job.cancelled.is_set():
                break
            completion += self._generate(job, index)
        job.emit(Finished(len(job.prompt_tokens), completion))

    def _generate(self, job: Job, index: int) -> int:
        """Generate one choice; returns the tokens sampled for it."""
        import llama_cpp

        llm = self._llm
        p = job.params
        seed = p.seed + index if p.seed is not None else random.getrandbits(31)
        llm.set_seed(seed)
        if p.seed is not None:
            # Re-evaluate the whole prompt: reusing the cached prefix evaluates it in a different
            # batch shape, whose float rounding would change sampled tokens for the same seed.
            llm.reset()
        stops = p.stop
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        eos = llm.token_eos()
        vocab = llm._model.vocab
        pending = ""
        at_start = p.trim
        count = 0
        finish: str | None = None
        generator = llm.generate(
            job.prompt_tokens,
            top_k=p.top_k,
            top_p=p.top_p,
            min_p=0.0,
            temp=p.temperature,
            repeat_penalty=p.repeat_penalty,
            presence_penalty=p.presence_penalty,
            frequency_penalty=p.frequency_penalty,
            reset=True,
        )
        try:
            for token in generator:
                if job.cancelled.is_set():
                    return count
                count += 1
                job.completion_tokens += 1
                self.tokens_generated += 1
                if token == eos or llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = "stop"
                    break
                pending += decoder.decode(llm.detokenize([token], special=False))
                if stops:
                    cut = min((i for i in (pending.find(s) for s in stops) if i >= 0),
                              default=-1)
                    if cut >= 0:
                        pending = pending[:cut]
                        finish = "stop"
                        break
                if count >= job.max_tokens:
                    finish = "length"
                    break
                safe = len(pending) - _partial_stop(pending, stops) if stops else len(pending)
                if p.trim:
                    # Whitespace before the held-back part is invisible until text follows it,
                    # so holding it costs no latency and lets a turn end without a dangling
                    # newline.
                    safe = len(pending[:safe].rstrip())
                if safe > 0:
                    text, pending = pending[:safe], pending[safe:]
                    if at_start:
                        # Stops are matched on the raw text above; only what is sent is trimmed.
                        text = text.lstrip()
                        at_start = not text
                    if text:
                        job.emit(Piece(index, text))
        finally:
            generator.close()
        if finish is None:  # the generator ran out: the context window is full
            finish = "length"
        pending += decoder.decode(b"", final=True)
        if p.trim:
            pending = pending.strip() if at_start else pending
            pending = pending.rstrip() if finish == "stop" else pending
        job.emit(Piece(index, pending, finish))
        return count


def _partial_stop(text: str, stops: tuple[str, ...]) -> int:
    """Length (characters) of the longest suffix of ``text`` that could begin a stop string.

    Only that much is held back from the client, so text that cannot be part of a stop sequence
    is sent at once.
    """
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best
