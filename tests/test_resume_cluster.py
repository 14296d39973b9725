"""Resumable streams across gateway processes sharing a real Redis.

Three ``sluicegate serve`` processes front one fake upstream that knows its answer and can
continue it. A client drops its connection and resumes on another instance; the producing
instance is killed with SIGKILL and the stream continues elsewhere; a 20 MB answer keeps
Redis under the stream's cap.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import redis

from sluicegate.client import Client

from .fakes_story import CuttingProxy, StoryUpstream
from .processes import Instance, start_process, stop
from .resume_helpers import MESSAGES, body, parse_events, read_until, resume, text_of

WORDS = [f"t{i} " for i in range(60)]


def start_instance(tmp: Path, upstream_url: str, redis_url: str, extra: str = "") -> Instance:
    """A gateway process on the shared Redis, resumable streams with a 1 s lease."""
    return start_process(tmp, (
        "embedded_model: false\n"
        f"state:\n  backend: redis\n  url: {redis_url}\n"
        f"resumable:\n  lease_s: 1.0\n  grace_s: 10\n{extra}"
        "models:\n"
        f"  - name: 'mock/*'\n    provider: openai\n    base_url: {upstream_url}\n"))


@pytest.fixture(scope="module")
def story() -> Iterator[StoryUpstream]:
    upstream = StoryUpstream(WORDS, gap_s=0.01).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def cluster(story: StoryUpstream, redis_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Instance]]:
    base = tmp_path_factory.mktemp("cluster")
    instances = [start_instance(base / f"g{i}", story.base_url, redis_url) for i in range(3)]
    yield instances
    for instance in instances:
        stop(instance)


@pytest.mark.timeout(120)
def test_drop_then_resume_on_another_instance_twenty_times(cluster: list[Instance],
                                                          story: StoryUpstream) -> None:
    rng = random.Random(1234)
    whole = "".join(WORDS)
    for run in range(20):
        k = rng.randint(1, len(WORDS) + 3)  # role chunk + 60 words + finish + usage + [DONE]
        first, second = cluster[run % 3], cluster[(run + 1) % 3]
        stream_id, seen = read_until(first.url, body(), k)
        rest = resume(second.url, stream_id, seen[-1].seq if seen else 0)
        assert rest.status_code == 200, rest.text
        events = parse_events(rest.content)
        seqs = [e.seq for e in seen + events]
        assert seqs == list(range(1, len(seqs) + 1)), f"run {run}, k={k}: gaps or repeats"
        assert text_of(seen + events) == whole, f"run {run}, k={k}"
        assert (seen + events)[-1].data == b"[DONE]"
        assert rest.content.count(b"[DONE]") + sum(e.data == b"[DONE]" for e in seen) == 1


@pytest.mark.timeout(60)
def test_openai_sdk_stream_dropped_by_the_network_then_resumed(cluster: list[Instance],
                                                                story: StoryUpstream) -> None:
    proxy = CuttingProxy([cluster[0].port, cluster[1].port], cut_after=12)
    try:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)
        got: list[str] = []
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            stream = client.chat.completions.create(
                model="mock/story", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
                extra_body={"stream_options": {"resumable": True}})
            stream_id = stream.response.headers["x-sluicegate-stream-id"]
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got.append(chunk.choices[0].delta.content)
        # The SDK hides event ids; the 12 events were the role chunk and 11 words.
        assert "".join(got) == "".join(WORDS[:11])
        # A resume needs the credential the stream started with.
        assert resume(cluster[1].url, stream_id, 12).status_code == 404
        rest = resume(cluster[1].url, stream_id, 12, headers={"Authorization": "Bearer unused"})
        assert "".join(got) + text_of(parse_events(rest.content)) == "".join(WORDS)
    finally:
        proxy.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cut_after", [3, 17, 40])
def test_the_sdk_resumes_on_another_instance_by_itself(cluster: list[Instance],
                                                       story: StoryUpstream,
                                                       cut_after: int) -> None:
    proxy = CuttingProxy([cluster[2].port, cluster[0].port], cut_after=cut_after)
    try:
        with Client(base_url=proxy.url + "/v1", api_key="k") as client, client.chat.stream(
                model="mock/story", messages=MESSAGES, resumable=True) as stream:
            pieces = list(stream.text_stream)
            final = stream.final()
        assert "".join(pieces) == "".join(WORDS), "every chunk once, in order"
        assert final.choices[0].message.content == "".join(WORDS)
        assert final.choices[0].finish_reason == "stop"
        assert stream.stream_id is not None and stream.stream_id.startswith("rs_")
        (first, first_line), (second, second_line) = proxy.connections
        assert (first, second) == (cluster[2].port, cluster[0].port)
        assert first_line.startswith(b"POST /v1/chat/completions")
        assert second_line.startswith(
            f"GET /v1/chat/completions/{stream.stream_id}/stream".encode())
    finally:
        proxy.stop()


@pytest.mark.timeout(90)
def test_sigkill_of_the_producer_then_resume_continues_the_answer(
        story: StoryUpstream, redis_url: str, tmp_path: Path) -> None:
    story.gap_s = 0.05  # 3 s of answer: time to kill the producer mid-way
    story.continued.clear()
    producer = start_instance(tmp_path / "a", story.base_url, redis_url)
    taker = start_instance(tmp_path / "b", story.base_url, redis_url)
    try:
        stream_id, seen = read_until(producer.url, body(), 10)
        producer.proc.send_signal(signal.SIGKILL)
        producer.proc.wait(10)
        rest = resume(taker.url, stream_id, seen[-1].seq)
        assert rest.status_code == 200
        events = parse_events(rest.content)
        all_events = seen + events
        assert [e.seq for e in all_events] == list(range(1, len(all_events) + 1))
        assert text_of(all_events) == "".join(WORDS), "one answer, nothing lost or repeated"
        assert rest.content.count(b"[DONE]") == 1 and all_events[-1].data == b"[DONE]"
        ids = {e.chunk()["id"] for e in all_events if e.data != b"[DONE]"}
        assert len(ids) == 1, "the same completion id across the seam"
        assert story.continued, "the taker asked the upstream to continue"
        roles = [e for e in all_events if e.data != b"[DONE]" and any(
            (c.get("delta") or {}).get("role") for c in e.chunk()["choices"])]
        assert roles and roles[0].seq == 1
        usage_lines: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5  # accounted just after [DONE] went out
        while not usage_lines and time.monotonic() < deadline:
            time.sleep(0.05)
            usage_lines = [orjson.loads(line.split(" usage ", 1)[1])
                           for line in taker.output().splitlines()
                           if "sluicegate.usage" in line and stream_id in line]
        assert len(usage_lines) == 1, taker.output()
        record = usage_lines[0]
        assert record["continued_at_seq"] >= seen[-1].seq
        assert record["usage"]["completion_tokens"] >= len(WORDS) - 2, record
        assert record["outcome"] == "completed"
    finally:
        story.gap_s = 0.01
        stop(producer)
        stop(taker)


@pytest.mark.timeout(120)
def test_a_twenty_megabyte_answer_stays_under_the_cap_in_redis(
        redis_url: str, tmp_path: Path) -> None:
    words = ["y" * 20_000] * 1_000  # 20 MB of content
    big = StoryUpstream(words).start()
    instance = start_instance(tmp_path / "big", big.base_url, redis_url,
                              "  max_bytes: 1048576\n")
    try:
        with httpx.stream("POST", instance.url + "/v1/chat/completions", json=body(),
                          timeout=120) as r:
            stream_id = r.headers["x-sluicegate-stream-id"]
            size = sum(len(piece) for piece in r.iter_raw())
        assert size > 20_000_000
        client = redis.Redis.from_url(redis_url)
        used = client.memory_usage("{sg:" + stream_id + "}:log")
        assert used is not None and used < 2 * 1048576, f"{used} bytes in Redis"
        assert resume(instance.url, stream_id, 1).status_code == 410
    finally:
        stop(instance)
        big.stop()
