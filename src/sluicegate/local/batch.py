"""The batched embedded engine: up to ``parallel`` sequences decoded together (``local.parallel``).

llama.cpp decodes many sequences in one ``llama_decode`` call when each token of the batch
names its sequence id; the weights are read once per pass, so a step for 4 sequences costs
~1.6x a step for 1 on the 2-core host of ``docs/profile.md`` (not 4x). ``BatchedEngine`` drives
llama-cpp-python's low-level API directly, on one context with ``n_seq_max = parallel``:

- Every step puts the last sampled token of each running sequence into one batch, then fills
  what is left (at most ``PREFILL_CHUNK`` tokens while others decode) with prompt tokens of the
  sequences still reading their prompt. A new request so joins at the next step and a long
  prompt is read in chunks between decode steps, never freezing the others. An idle engine
  waits ``JOIN_WINDOW_S`` for more requests, so a burst reads its prompts in one step.
- The batch lists its tokens by sequence id, and the ids of the sequences that share a step
  are kept consecutive (``sluicegate.local.slots``): llama.cpp makes a pass over the weights
  per run of consecutive ids, and ids 3, 2, 1, 0 cost 2.5x ids 0, 1, 2, 3.
- A sequence that finishes or is cancelled frees its id at once for the next waiting job. Its
  cache is kept until that id is taken: a prompt that begins like it reads only the rest.
- Sampling is per sequence: each has its own llama.cpp sampler chain
  (``sluicegate.local.sampling``), so temperature, top_p, seed, stop and n mean what they mean
  on the single-sequence engine. The ``n`` choices of a job run one after the other on its
  sequence, the later ones reusing its prompt.
- The contract of ``LocalEngine`` holds: pieces are handed to the job's event loop as they
  are produced, ``cancel()`` is honoured before the next token, usage is exact, and beyond
  ``parallel + max_queue`` admitted jobs ``submit`` raises ``RateLimitError`` (429).

Two KV cache layouts (``local.shared_cache``):

- Per sequence (default, ``kv_unified`` off): each sequence has a cache stream of its own with a
  whole ``n_ctx`` window (memory: ``parallel`` times one window; about 18 KiB a token for
  Gemma 3 270M, so ~74 MiB per sequence at 4096). Attention for a sequence then reads only its
  own cells. Its logits still depend on what else is in the batch: llama.cpp's CPU matrix
  kernels round differently for other batch shapes (a prompt chunk of another sequence beside
  a decode row made a seeded text diverge after 2 tokens). So a seeded request is decoded in a
  batch of its own, as the single-sequence engine would (decode rows alone, its whole prompt
  in ``n_batch`` chunks, no cached prefix), and gives the same text as there, alone or beside
  other streams (``tests/test_local_batch.py``). The price: a seeded stream does not share the
  weight reads of a step; unseeded ones do.
- Shared (``kv_unified`` on): all sequences draw from one ``n_ctx`` cells. A job starts only
  when its prompt plus ``max_tokens`` fits beside the cells reserved by the running ones;
  otherwise it waits (first come, first served). A sequence whose prompt begins like one a
  running sequence has read copies those cells (``llama_memory_seq_cp``) instead of evaluating
  them again; a finished sequence keeps nothing. Attention runs over a cache interleaved with
  other sequences' cells, whose float reductions round differently: a seeded (or greedy)
  request beside others can diverge from its text alone after some tokens. Gemma 3 uses
  sliding-window attention, whose cache may drop cells a window behind a sequence, so a prefix
  is copied only from a sequence that has not gone that far.

A prompt that cannot fit one window is refused at ``submit`` (400), as before.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UpstreamError
from .cpu import Repack, load_llama
from .engine import Finished, Job, LocalEngine, Piece
from .sampling import sampler_chain
from .sequence import Seq
from .slots import MIN_SHARED_PREFIX, Slots, common_prefix

__all__ = ["JOIN_WINDOW_S", "PREFILL_CHUNK", "BatchedEngine", "make_engine"]

log = logging.getLogger("sluicegate.local")

N_BATCH = 512
"""Tokens per ``llama_decode`` call at most."""

PREFILL_CHUNK = 128
"""Prompt tokens read per step while other sequences decode: bounds the pause a new prompt
adds to their next token."""

JOIN_WINDOW_S = 0.003
"""An idle engine starts a job's first step once no other job has arrived for this long
(seconds): requests sent together, which reach the engine a millisecond or two apart, then read
their prompts in one batch. Reading them one step after another would hold the later ones'
first token behind the earlier one's whole prompt step (~55 ms for a 20-token prompt here), and
a batch of prompts costs less than the prompts one by one. The price: a lone request's first
token comes this much later."""

JOIN_MAX_S = 0.012
"""The longest an idle engine waits for a burst of jobs to arrive (seconds)."""


class BatchedEngine(LocalEngine):
    """``LocalEngine`` with up to ``parallel`` sequences decoded in one batch per step."""

    def __init__(
        self,
        model_path: str | Callable[[], str],
        *,
        parallel: int = 4,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        max_queue: int = 8,
        default_max_tokens: int = 256,
        repack: Repack = "auto",
        cpuinfo: str | Path = "/proc/cpuinfo",
        unified: bool = False,
    ) -> None:
        super().__init__(model_path, n_ctx=n_ctx, n_threads=n_threads, max_queue=max_queue,
                         default_max_tokens=default_max_tokens, repack=repack, cpuinfo=cpuinfo)
        self.parallel = parallel
        self.unified = unified
        self.prefix_tokens_reused = 0
        """Prompt tokens copied from another sequence instead of evaluated (tests, metrics)."""
        self.sequences_moved = 0
        """Sequences moved to another id to close a gap between ids (tests, metrics)."""
        self._ctx: Any = None
        self._batch: Any = None
        self._mem: Any = None
        self._n_swa = 0
        self._running: list[Seq] = []
        self._slots = Slots(parallel)

    def load(self) -> None:
        import llama_cpp

        with self._load_lock:
            if self._llm is not None:
                return
            path = self._model_path() if callable(self._model_path) else self._model_path
            log.info("loading local model %s (%d sequences in parallel)", path, self.parallel)
            # The Llama object serves the tokenizer; its own context is left small and unused.
            llm = load_llama(str(path), self.repack, n_ctx=256, n_threads=self.n_threads,
                             n_batch=256, verbose=False)
            params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
            # Per-sequence caches: each sequence has a whole window of its own.
            params.n_ctx = self.n_ctx if self.unified else self.n_ctx * self.parallel
            params.n_batch = N_BATCH
            params.n_ubatch = N_BATCH
            params.n_seq_max = self.parallel
            params.kv_unified = self.unified
            params.n_threads = self.n_threads
            params.n_threads_batch = self.n_threads
            ctx = llama_cpp.llama_init_from_model(llm.model, params)
            if not ctx:
                raise RuntimeError("llama.cpp could not create the batched context")
            self._ctx = ctx
            self._mem = llama_cpp.llama_get_memory(ctx)
            self._batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
            self._n_swa = int(llama_cpp.llama_model_n_swa(llm.model))
            self._llm = llm
            self._start_worker()

    # The worker: everything below runs on the engine's one thread.

    def _worker(self) -> None:
        while True:
            with self._wake:
                while not self._jobs and not self._running and not self._closed:
                    self._wake.wait()
                if self._closed and not self._jobs and not self._running:
                    return
                if not self._running:
                    self._gather_burst()
                started = self._admit_waiting()
            for seq in started:
                self._start_choice(seq)
            self._drop_cancelled()
            if not self._running:
                continue
            try:
                self._step()
            except Exception as exc:  # reported to every running request; the worker goes on
                log.exception("local batched generation failed")
                for seq in list(self._running):
                    self._end_job(seq, exc)

    def _gather_burst(self) -> None:
        """Idle, with a job to start: wait while more jobs keep arriving (each within
        ``JOIN_WINDOW_S`` of the last, ``JOIN_MAX_S`` in all, until every free sequence has
        one), so that requests sent together read their prompts in one first step. Called with
        ``_wake`` held; ``submit`` and ``close`` notify it."""
        deadline = time.monotonic() + JOIN_MAX_S
        seen = len(self._jobs)
        while not self._closed and seen < len(self._slots.free):
            left = min(JOIN_WINDOW_S, deadline - time.monotonic())
            if left <= 0 or not self._wake.wait(left) or len(self._jobs) == seen:
                return
            seen = len(self._jobs)

    def _admit_waiting(self) -> list[Seq]:
        """Jobs from the queue that fit now (called with ``_wake`` held), in order."""
        started: list[Seq] = []
        for job in [j for j in self._jobs if j.cancelled.is_set()]:  # left while waiting
            self._jobs.remove(job)
            job.emit(Finished(len(job.prompt_tokens), 0))
            self._release()
        reserved = sum(s.reserved for s in self._running)
        while self._jobs and self._slots.free:
            job = self._jobs[0]
            need = len(job.prompt_tokens) + job.max_tokens
            if self.unified and self._running and reserved + need > self.n_ctx:
                break  # waits for cells: first come, first served
            self._jobs.pop(0)
            reserved += need
            alone = self._alone_job(job)
            seq_id, kept = self._slots.take(job.prompt_tokens, alone=alone,
                                            reuse=not (alone or self.unified))
            seq = Seq(job, seq_id, 0, None, need, kept=kept)
            self._running.append(seq)
            started.append(seq)
        return started

    def _release(self) -> None:
        with self._admit_lock:
            self._admitted -= 1

    def _start_choice(self, seq: Seq) -> None:
        """Set ``seq`` up for its choice ``seq.index``: sampler, and the prompt tokens its cache
        holds (``seq.kept``) or it copies from another sequence (shared cache), if any."""
        import llama_cpp

        p = seq.job.params
        seed = p.seed + seq.index if p.seed is not None else random.getrandbits(31)
        seq.sampler = sampler_chain(self._llm.n_vocab(), p.temperature, p.top_k, p.top_p,
                                    p.repeat_penalty, p.frequency_penalty, p.presence_penalty,
                                    seed)
        seq.restart(p.trim)
        if seq.kept:
            llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, seq.kept, -1)
            seq.read, seq.kept = seq.kept, 0
            self.prefix_tokens_reused += seq.read
            return
        llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, -1, -1)
        prompt = seq.job.prompt_tokens
        best: Seq | None = None
        shared = 0
        for other in self._running if self.unified else ():
            if other is seq or (self._n_swa and other.n_past >= self._n_swa):
                continue
            k = common_prefix(prompt, other.job.prompt_tokens, other.read)
            if k > shared:
                best, shared = other, k
        shared = min(shared, len(prompt) - 1)  # the last prompt token is evaluated for logits
        if best is not None and shared >= MIN_SHARED_PREFIX:
            llama_cpp.llama_memory_seq_cp(self._mem, best.seq_id, seq.seq_id, 0, shared)
            seq.read = shared
            self.prefix_tokens_reused += shared

    def _drop_cancelled(self) -> None:
        for seq in list(self._running):
            if seq.job.cancelled.is_set():
                self._end_job(seq)

    def _end_job(self, seq: Seq, error: BaseException | None = None) -> None:
        """Free ``seq``'s slot, its cache kept for a later prompt that begins alike (per-sequence
        caches, and only while the cache still starts at position 0: sliding-window layers
        could have dropped cells); the job is over (finished, cancelled or failed)."""
        import llama_cpp

        held = None
        if error is None and not self.unified and self._holds_start(seq.seq_id):
            held = seq.job.prompt_tokens[:seq.read] + seq.fed
        else:
            llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, -1, -1)
        if seq.sampler is not None:
            llama_cpp.llama_sampler_free(seq.sampler)
            seq.sampler = None
        with self._wake:
            self._running.remove(seq)
            self._slots.release(seq.seq_id, held)
        if error is not None:
            seq.job.emit(error)
        else:
            seq.job.emit(Finished(len(seq.job.prompt_tokens), seq.job.completion_tokens))
        self._release()

    def _holds_start(self, seq_id: int) -> bool:
        import llama_cpp

        return int(llama_cpp.llama_memory_seq_pos_min(self._mem, seq_id)) == 0

    def _step(self) -> None:
        """One round: one batch for the sequences that share, then (per-sequence caches) one
        batch of its own for each seeded sequence, whose logits so match the single-sequence
        engine's. Each batch's logits are sampled before the next batch overwrites them."""
        running = list(self._running)
        decoding = any(s.last >= 0 for s in running)
        shared = [s for s in running if not self._alone(s)]
        if shared:
            if not self.unified:
                self._close_gaps(shared)
            self._decode(shared, PREFILL_CHUNK if decoding else N_BATCH)
        for seq in running:
            if self._alone(seq) and seq in self._running:
                # Read like Llama.eval: in n_batch chunks, alone, whatever the others do.
                self._decode([seq], N_BATCH)

    def _close_gaps(self, shared: list[Seq]) -> None:
        """Move the highest sharing sequence into a free id between the others until their
        ids are consecutive, so that their step is one pass over the weights, not one per run
        of consecutive ids (see ``_decode``). A move copies the sequence's whole cache stream
        once (``llama_memory_seq_cp``, at the next decode): about what one extra pass costs."""
        import llama_cpp

        while True:
            ids = sorted(s.seq_id for s in shared)
            with self._wake:
                gaps = [i for i in self._slots.free if ids[0] < i < ids[-1]]
                if not gaps:
                    return
                target = min(gaps)
                self._slots.claim(target)
                top = next(s for s in shared if s.seq_id == ids[-1])
                llama_cpp.llama_memory_seq_cp(self._mem, top.seq_id, target, -1, -1)
                llama_cpp.llama_memory_seq_rm(self._mem, top.seq_id, -1, -1)
                self._slots.release(top.seq_id)
                top.seq_id = target
                self.sequences_moved += 1

    def _alone(self, seq: Seq) -> bool:
        return self._alone_job(seq.job)

    def _alone_job(self, job: Job) -> bool:
        return not self.unified and job.params.seed is not None

    def _decode(self, seqs: list[Seq], budget: int) -> None:
        """Decode the next token of every decoding sequence in ``seqs`` and up to ``budget``
        prompt tokens of those still reading their prompt (first come, first served), then
        sample.

        The batch lists its tokens by sequence id. With a cache per sequence llama.cpp splits
        a batch into micro-batches that each hold consecutive, increasing sequence ids only
        (``llama_batch_allocr::split_equal``, sequential), and every micro-batch is a pass
        over all the weights: 4 decode tokens in the order 3, 2, 1, 0 cost 2.5x the same
        tokens in the order 0, 1, 2, 3 (``bench/decode_ceiling.py --order``)."""
        import llama_cpp

        batch = self._batch
        rows: list[tuple[Seq, int]] = []  # sequences to sample, and their row in the batch
        n = 0

        def add(seq: Seq, token: int, pos: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq.seq_id
            batch.logits[n] = logits
            if logits:
                rows.append((seq, n))
            n += 1

        budget = min(budget, N_BATCH - sum(1 for s in seqs if s.last >= 0))
        takes: dict[Seq, int] = {}  # prompt tokens each reading sequence reads now
        for seq in seqs:
            if seq.last < 0 and budget > 0:
                takes[seq] = min(budget, len(seq.job.prompt_tokens) - seq.read)
                budget -= takes[seq]
        for seq in sorted(seqs, key=lambda s: s.seq_id):
            if seq.last >= 0:
                add(seq, seq.last, seq.n_past - 1, True)  # the sampled token is not in yet
                seq.fed.append(seq.last)
            elif seq in takes:
                prompt = seq.job.prompt_tokens
                for i in range(seq.read, seq.read + takes[seq]):
                    add(seq, prompt[i], i, i == len(prompt) - 1)
                seq.read += takes[seq]
        if n == 0:
            return
        batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            raise UpstreamError("The local model could not decode a batch.",
                                reason="local_failed", detail=f"llama_decode returned {rc}")
        for seq, row in rows:
            token = int(llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, row))
            self._take(seq, token)

    def _take(self, seq: Seq, token: int) -> None:
        """Handle one sampled token of ``seq``: emit text, or end the choice."""
        import llama_cpp

        job = seq.job
        if job.cancelled.is_set():
            self._end_job(seq)
            return
        p = job.params
        seq.count += 1
        job.completion_tokens += 1
        self.tokens_generated += 1
        llm = self._llm
        finish: str | None = None
        stops = p.stop
        eog = token == llm.token_eos() or llama_cpp.llama_vocab_is_eog(llm._model.vocab, token)
        if eog or seq.add(llm.detokenize([token], special=False), stops):
            finish = "stop"
        elif seq.count >= job.max_tokens or seq.n_past >= self.n_ctx:
            finish = "length"
        if finish is None:
            text = seq.ready(stops, p.trim)
            if text:
                job.emit(Piece(seq.index, text))
            seq.last = token
            return
        job.emit(Piece(seq.index, seq.rest(p.trim, finish), finish))
        if seq.index + 1 < p.n and not job.cancelled.is_set():
            llama_cpp.llama_sampler_free(seq.sampler)
            seq.sampler = None
            seq.index += 1
            if not (self._alone(seq) or self.unified) and self._holds_start(seq.seq_id):
                seq.kept = min(seq.read, len(job.prompt_tokens) - 1)  # its own prompt
            self._start_choice(seq)
        else:
            self._end_job(seq)


def make_engine(model_path: str | Callable[[], str], *, parallel: int, n_ctx: int,
                n_threads: int | None, max_queue: int, repack: Repack,
                shared_cache: bool = False) -> LocalEngine:
    """The single-sequence engine for ``parallel == 1``, the batched one above it."""
    if parallel <= 1:
        return LocalEngine(model_path, n_ctx=n_ctx, n_threads=n_threads, max_queue=max_queue,
                           repack=repack)
    return BatchedEngine(model_path, parallel=parallel, n_ctx=n_ctx, n_threads=n_threads,
                         max_queue=max_queue, repack=repack, unified=shared_cache)
