"""The stream cache shared by two ``sluicegate serve`` processes through a real Redis: an exact
hit and a semantic hit answered by the instance that did not see the original request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis

from .conftest import MOCK_KEY, MOCK_KEY_ENV
from .fakes import FakeOpenAIUpstream, Script
from .processes import Instance, stop
from .test_resume_cluster import start_instance


@pytest.fixture
def pair(fake: FakeOpenAIUpstream, redis_clean: str, tmp_path: Any,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Instance]]:
    monkeypatch.setenv(MOCK_KEY_ENV, MOCK_KEY)
    extra = "cache:\n  enabled: true\n  mode: semantic\n  preload: true\n"
    instances = [start_instance(tmp_path / f"g{i}", fake.base_url, redis_clean, extra)
                 for i in range(2)]
    yield instances
    for instance in instances:
        stop(instance)


def entries(redis_url: str) -> int:
    with redis.Redis.from_url(redis_url) as client:
        return len(list(client.scan_iter(match="{sg:c:*}:e")))


def ask(instance: Instance, text: str) -> tuple[str, str, dict[str, str]]:
    client = openai.OpenAI(base_url=instance.url + "/v1", api_key="k", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
            model="mock/m", temperature=0, stream=True,
            messages=[{"role": "system", "content": "FAQ"},
                      {"role": "user", "content": text}]) as response:
        headers = dict(response.headers)
        text_out = "".join(c.choices[0].delta.content or "" for c in response.parse()
                           if c.choices)
    return headers.get("x-sluicegate-cache", ""), text_out, headers


@pytest.mark.timeout(90)
def test_two_processes_share_exact_and_semantic_hits(pair: list[Instance],
                                                     fake: FakeOpenAIUpstream,
                                                     redis_clean: str) -> None:
    a, b = pair
    fake.script = Script(texts=["Use", " the", " reset", " link", "."])
    label, answer, _ = ask(a, "How do I reset my password?")
    assert (label, answer) == ("miss", "Use the reset link.")
    deadline = time.monotonic() + 5
    while entries(redis_clean) < 1:
        assert time.monotonic() < deadline, "the entry never reached Redis"
        time.sleep(0.05)
    label, answer, headers = ask(b, "How do I reset my password?")
    assert (label, answer) == ("hit", "Use the reset link.")
    assert headers["x-sluicegate-provider"] == "cache"
    label, answer, headers = ask(b, "How can I reset my password?")
    assert (label, answer) == ("semantic-hit", "Use the reset link.")
    assert float(headers["x-sluicegate-cache-similarity"]) >= 0.95
    label, _, _ = ask(a, "What are your opening hours?")
    assert label == "miss"
    assert len(fake.received) == 2
