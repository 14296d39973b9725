"""Background responses: ``background: true``, ``GET /v1/responses/{id}?stream=true&
starting_after=N`` and ``POST /v1/responses/{id}/cancel``, with the official openai SDK, on one
gateway (memory state) and across processes sharing a real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from .fakes import FakeOpenAIUpstream, Script, ServerThread
from .fakes_story import StoryUpstream
from .processes import Instance, start_process, stop

MODEL = "mock/some-model"
WORDS = [f"w{i} " for i in range(30)]


@pytest.fixture
def client(gw: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as c:
        yield c


def _events(raw: bytes) -> list[dict[str, Any]]:
    """Each event's data; every event must carry ``id:`` and a matching ``event:`` name."""
    out = []
    for frame in raw.split(b"\n\n"):
        if not frame or frame.startswith(b":"):
            continue
        lines = dict(line.split(b": ", 1) for line in frame.split(b"\n"))
        payload = orjson.loads(lines[b"data"])
        assert lines[b"event"] == payload["type"].encode()
        assert lines[b"id"].endswith(b":%d" % (payload["sequence_number"] + 1))
        out.append(payload)
    return out


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def _read_first(url: str, body: dict[str, Any], n: int) -> tuple[str, list[dict[str, Any]]]:
    """Stream ``body`` and drop the connection after ``n`` events: (response id, events)."""
    seen: list[dict[str, Any]] = []
    buffer = b""
    with httpx.stream("POST", url + "/v1/responses", json=body, timeout=30,
                      headers={"Authorization": "Bearer x"}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["x-sluicegate-stream-id"].startswith("rs_")
        for data in response.iter_bytes():
            buffer += data
            *frames, buffer = buffer.split(b"\n\n")
            seen += _events(b"\n\n".join(frames) + b"\n\n")
            if len(seen) >= n:
                break
    return seen[0]["response"]["id"], seen[:n]


def test_a_dropped_background_stream_resumes_after_its_last_sequence_number(
        gw: ServerThread, fake: FakeOpenAIUpstream, client: openai.OpenAI) -> None:
    fake.script = Script(texts=WORDS, gap_s=0.02)
    body = {"model": MODEL, "input": "tell", "background": True, "stream": True}
    response_id, seen = _read_first(gw.url, body, 9)
    assert response_id.startswith("resp_") and seen[0]["response"]["background"] is True
    last = seen[-1]["sequence_number"]
    rest = list(client.responses.retrieve(response_id, stream=True, starting_after=last))
    numbers = [e.sequence_number for e in rest]
    assert numbers == list(range(last + 1, last + 1 + len(rest))), "gaps or repeats"
    assert rest[-1].type == "response.completed"
    text = _text(seen) + "".join(e.delta for e in rest if e.type == "response.output_text.delta")
    assert text == "".join(WORDS)
    # Generation went on with no reader: the upstream stream was never cut.
    assert fake.closed_early == []
    # From the start, the whole stream again; past the end, a 400 naming the field.
    again = httpx.get(f"{gw.url}/v1/responses/{response_id}", params={"stream": "true"},
                      headers={"Authorization": "Bearer x"}, timeout=30)
    assert _text(_events(again.content)) == "".join(WORDS)
    past = httpx.get(f"{gw.url}/v1/responses/{response_id}",
                     params={"stream": "true", "starting_after": "5000"},
                     headers={"Authorization": "Bearer x"})
    assert past.status_code == 400 and past.json()["error"]["param"] == "starting_after"


def test_the_sdk_stream_helper_resumes_a_background_response(
        gw: ServerThread, fake: FakeOpenAIUpstream, client: openai.OpenAI) -> None:
    fake.script = Script(texts=WORDS, gap_s=0.01)
    response_id, seen = _read_first(
        gw.url, {"model": MODEL, "input": "tell", "background": True, "stream": True}, 6)
    with client.responses.stream(response_id=response_id,
                                 starting_after=seen[-1]["sequence_number"]) as stream:
        later = [e.sequence_number for e in stream]
        final = stream.get_final_response()
    assert later[0] == seen[-1]["sequence_number"] + 1
    assert final.output_text == "".join(WORDS) and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens == len(WORDS)


def test_background_without_stream_is_queued_then_retrieved(
        gw: ServerThread, fake: FakeOpenAIUpstream, client: openai.OpenAI) -> None:
    fake.script = Script(texts=WORDS, gap_s=0.01)
    created = client.responses.create(model=MODEL, input="tell", background=True)
    assert created.status == "queued" and created.background is True
    deadline = time.monotonic() + 20
    current = client.responses.retrieve(created.id)
    while current.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.05)
        current = client.responses.retrieve(created.id)
    assert current.status == "completed"
    assert current.output_text == "".join(WORDS)
    # Stored: it can be continued like any stored response.
    follow = client.responses.create(model=MODEL, input="more",
                                     previous_response_id=created.id)
    assert follow.status == "completed"
    assert fake.received[-1].body["messages"][-2] == {"role": "assistant",
                                                       "content": "".join(WORDS)}


def test_cancel_stops_generation_and_ends_the_stream(
        gw: ServerThread, fake: FakeOpenAIUpstream, client: openai.OpenAI) -> None:
    fake.script = Script(texts=[f"x{i} " for i in range(400)], gap_s=0.02)
    created = client.responses.create(model=MODEL, input="long", background=True)
    deadline = time.monotonic() + 10
    while not fake.received and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    events = list(client.responses.retrieve(created.id, stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "cancelled"
    assert 0 < len(_text([e.model_dump() for e in events])) < 400 * 4
    deadline = time.monotonic() + 5
    while not fake.closed_early and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.closed_early, "the upstream stream was not closed"
    assert client.responses.retrieve(created.id).status == "cancelled"


def test_background_errors(gw: ServerThread, fake: FakeOpenAIUpstream,
                           client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model=MODEL, input="x", background=True, store=False)
    assert bad.value.body["param"] == "store"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_" + "0" * 24)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("nonsense")
    # Another credential's background response is not found either.
    created = client.responses.create(model=MODEL, input="x", background=True)
    other = httpx.get(f"{gw.url}/v1/responses/{created.id}",
                      headers={"Authorization": "Bearer someone-else"})
    assert other.status_code == 404
    # A failure before any content is logged: the response reads back as failed.
    fake.script = Script(status=500, error_body={"error": {"message": "boom"}})
    failed = client.responses.create(model=MODEL, input="x", background=True)
    deadline = time.monotonic() + 10
    current = client.responses.retrieve(failed.id)
    while current.status == "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
        current = client.responses.retrieve(failed.id)
    assert current.status == "failed" and current.error is not None


# -- across processes on a shared Redis ------------------------------------------------------


@pytest.fixture(scope="module")
def story() -> Iterator[StoryUpstream]:
    upstream = StoryUpstream(WORDS, gap_s=0.02).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def pair(story: StoryUpstream, redis_url: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Instance]]:
    base: Path = tmp_path_factory.mktemp("background")
    instances = [start_process(base / f"g{i}", (
        "embedded_model: false\n"
        f"state:\n  backend: redis\n  url: {redis_url}\n"
        "resumable:\n  lease_s: 1.0\n"
        "models:\n"
        f"  - name: 'mock/*'\n    provider: openai\n    base_url: {story.base_url}\n"))
        for i in range(2)]
    yield instances
    for instance in instances:
        stop(instance)


@pytest.mark.timeout(60)
def test_a_background_response_resumes_on_another_instance(pair: list[Instance]) -> None:
    body = {"model": "mock/story", "input": "tell", "background": True, "stream": True}
    response_id, seen = _read_first(pair[0].url, body, 7)
    with openai.OpenAI(base_url=pair[1].url + "/v1", api_key="x", max_retries=0) as client:
        rest = list(client.responses.retrieve(response_id, stream=True,
                                              starting_after=seen[-1]["sequence_number"]))
        assert rest[0].sequence_number == seen[-1]["sequence_number"] + 1
        assert rest[-1].type == "response.completed"
        text = _text(seen) + "".join(e.delta for e in rest
                                     if e.type == "response.output_text.delta")
        assert text == "".join(WORDS)
        assert client.responses.retrieve(response_id).output_text == "".join(WORDS)


@pytest.mark.timeout(60)
def test_a_background_response_whose_instance_died_ends_as_failed(
        story: StoryUpstream, redis_url: str, tmp_path: Path) -> None:
    slow = StoryUpstream([f"s{i} " for i in range(300)], gap_s=0.05).start()
    config = ("embedded_model: false\n"
              f"state:\n  backend: redis\n  url: {redis_url}\n"
              "resumable:\n  lease_s: 1.0\n"
              "models:\n"
              f"  - name: 'mock/*'\n    provider: openai\n    base_url: {slow.base_url}\n")
    doomed, survivor = start_process(tmp_path / "a", config), start_process(tmp_path / "b",
                                                                            config)
    try:
        body = {"model": "mock/story", "input": "tell", "background": True, "stream": True}
        response_id, seen = _read_first(doomed.url, body, 6)
        doomed.proc.kill()
        doomed.proc.wait(10)
        with openai.OpenAI(base_url=survivor.url + "/v1", api_key="x",
                           max_retries=0) as client:
            rest = list(client.responses.retrieve(response_id, stream=True,
                                                  starting_after=seen[-1]["sequence_number"]))
            assert rest[-1].type == "response.failed"
            numbers = [e.sequence_number for e in rest]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
            assert client.responses.retrieve(response_id).status == "failed"
    finally:
        stop(doomed)
        stop(survivor)
        slow.stop()
