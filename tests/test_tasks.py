"""Task routing (sluicegate.tasks): the explicit forms, each inference rule, the headers, the
task's models as the fallback chain, and the SDK's ``task_type``, against the fake upstream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sluicegate.client import AsyncClient, Client, TaskType, stream_llm
from sluicegate.config import GatewayConfig
from sluicegate.errors import InvalidRequestError
from sluicegate.server import Gateway
from sluicegate.tasks import choose_task, code_heavy, infer_task

from .conftest import MOCK_KEY, MOCK_KEY_ENV, mock_config
from .fakes import FakeOpenAIUpstream, Script, ServerThread, start_gateway

TASKS = {
    "text": ["mock/text-model"],
    "code": ["mock/code-model", "mock/code-fallback"],
    "vision": ["mock/vision-model"],
    "audio": ["mock/audio-model"],
    "long_context": ["mock/long-model"],
    "summarize": ["mock/summary-model"],  # a user-defined task
}

CODE = "Why does this fail?\n\ndef f(x):\n    return x +\nprint(f(1))\nfor i in range(3):"


@pytest.fixture(scope="module")
def task_gateway(upstream: FakeOpenAIUpstream) -> Iterator[tuple[ServerThread, Gateway]]:
    mp = pytest.MonkeyPatch()
    mp.setenv(MOCK_KEY_ENV, MOCK_KEY)
    config = mock_config(upstream.base_url)
    config.tasks = {name: list(models) for name, models in TASKS.items()}
    config.task_inference.long_context_tokens = 200
    server, gateway = start_gateway(config)
    yield server, gateway
    server.stop()
    mp.undo()


@pytest.fixture
def tgw(task_gateway: tuple[ServerThread, Gateway], fake: FakeOpenAIUpstream) -> ServerThread:
    return task_gateway[0]


def post(server: ServerThread, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)


def user(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


@pytest.mark.parametrize(("body", "task", "reason", "model"), [
    ({"model": "task/code", "messages": user("hi")}, "code", "explicit", "code-model"),
    ({"model": "auto", "task": "summarize", "messages": user("hi")}, "summarize", "explicit",
     "summary-model"),
    ({"model": "task/auto", "messages": user([
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])},
     "vision", "image-part", "vision-model"),
    ({"model": "auto", "messages": user([
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}])},
     "audio", "audio-part", "audio-model"),
    ({"model": "auto", "messages": user("word " * 200)}, "long_context", "long-prompt",
     "long-model"),
    ({"model": "auto", "messages": user("Fix this:\n```python\nprint(1\n```")}, "code",
     "code-fence", "code-model"),
    ({"model": "auto", "messages": user(CODE)}, "code", "code-lines", "code-model"),
    ({"model": "auto", "messages": user("Tell me about otters.")}, "text", "default",
     "text-model"),
])
@pytest.mark.parametrize("stream", [True, False])
def test_task_headers_and_model(tgw: ServerThread, fake: FakeOpenAIUpstream,
                                body: dict[str, Any], task: str, reason: str, model: str,
                                stream: bool) -> None:
    response = post(tgw, {**body, "stream": stream})
    assert response.status_code == 200, response.text
    assert response.headers["X-Sluicegate-Task"] == task
    assert response.headers["X-Sluicegate-Task-Reason"] == reason
    assert response.headers["X-Sluicegate-Model"] == model
    sent = fake.received[-1].body
    assert sent["model"] == model
    assert "task" not in sent  # the gateway's own field


def test_the_task_models_are_the_fallback_chain(tgw: ServerThread,
                                                fake: FakeOpenAIUpstream) -> None:
    fake.queue.append(Script(status=500))
    response = post(tgw, {"model": "task/code", "messages": user("hi"), "stream": True})
    assert response.status_code == 200
    assert '"content":"world"' not in response.text  # sanity: the fake's pieces are split
    assert '" world"' in response.text and response.text.endswith("data: [DONE]\n\n")
    assert [r.body["model"] for r in fake.received] == ["code-model", "code-fallback"]
    assert response.headers["X-Sluicegate-Model"] == "code-fallback"
    assert response.headers["X-Sluicegate-Attempts"] == "2"


def test_a_plain_model_name_is_not_task_routed(tgw: ServerThread,
                                               fake: FakeOpenAIUpstream) -> None:
    response = post(tgw, {"model": "mock/plain", "messages": user(CODE)})
    assert response.status_code == 200
    assert "X-Sluicegate-Task" not in response.headers
    assert fake.received[-1].body["model"] == "plain"


def test_an_unknown_task_is_a_400(tgw: ServerThread) -> None:
    response = post(tgw, {"model": "task/poetry", "messages": user("hi")})
    assert response.status_code == 400
    assert "poetry" in response.json()["error"]["message"]
    response = post(tgw, {"model": "mock/x", "task": 3, "messages": user("hi")})
    assert response.status_code == 400


def test_an_unconfigured_inferred_task_falls_back_to_text() -> None:
    choice = choose_task({"messages": user([{"type": "image_url", "image_url": {}}])}, "auto",
                         {"text": ["a"]}, auto_claimed=False)
    assert choice is not None
    assert (choice.task, choice.reason, choice.models) == ("text", "vision-not-configured",
                                                           ("a",))
    with pytest.raises(InvalidRequestError):
        choose_task({"messages": user("hi")}, "auto", {"code": ["a"]}, auto_claimed=False)
    # "auto" claimed by an alias: routed by name; "task/auto" still infers
    assert choose_task({"messages": user("hi")}, "auto", TASKS, auto_claimed=True) is None
    assert choose_task({"messages": user("hi")}, "task/auto", TASKS, auto_claimed=True)


def test_inference_rules_in_order() -> None:
    kwargs: dict[str, Any] = {"long_context_tokens": 10, "code_line_ratio": 0.4,
                              "configured": {}}
    both = user([{"type": "image_url"}, {"type": "input_audio"}])
    assert infer_task({"messages": both}, **kwargs) == ("vision", "image-part")
    assert infer_task({"messages": user([{"type": "input_audio"}])}, **kwargs) == (
        "audio_transcription", "audio-part")
    assert infer_task({"prompt": "x" * 41}, **kwargs) == ("long_context", "long-prompt")
    assert infer_task({"prompt": "x" * 40}, **kwargs) == ("text", "default")
    # only the last user message counts for code
    messages = [{"role": "user", "content": "```py\nx\n```"},
                {"role": "assistant", "content": "ok"}, {"role": "user", "content": "thanks"}]
    assert infer_task({"messages": messages}, **{**kwargs, "long_context_tokens": 1000}) == (
        "text", "default")


def test_code_lines_threshold() -> None:
    prose = "I went out.\nIt rained a lot\nThen it stopped\nThe end"
    assert code_heavy(prose, 0.4) is None
    assert code_heavy("x = 1;\ny = 2;\nhello there", 0.4) == "code-lines"  # 2/3 > 0.4
    assert code_heavy("x = 1;\nhello\nthere", 0.4) is None  # 1/3
    assert code_heavy("a;\nb;", 0.0) is None  # fewer than 3 lines


def test_config_rejects_bad_tasks() -> None:
    with pytest.raises(ValueError, match="tasks"):
        GatewayConfig(tasks={"code": []})
    with pytest.raises(ValueError, match="tasks"):
        GatewayConfig(tasks={"a/b": ["x"]})


def test_sdk_task_type(tgw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    with Client(tgw.url + "/v1") as client:
        with client.chat.stream("auto", user("hi"), task_type=TaskType.CODE) as stream:
            text = "".join(stream.text_stream)
        assert text == "Hello, world!"
        assert fake.received[-1].body["model"] == "code-model"
        completion = client.chat.create("auto", user("hi"), task_type="summarize")
        assert completion.choices[0].message.content == "Hello, world!"
        assert fake.received[-1].body["model"] == "summary-model"


async def test_decorator_task_type(tgw: ServerThread, fake: FakeOpenAIUpstream) -> None:
    async with AsyncClient(tgw.url + "/v1") as client:
        @stream_llm("auto", task_type=TaskType.VISION, client=client)
        def describe(topic: str) -> str:
            return f"Describe {topic}"

        text = "".join([piece async for piece in describe("a cat")])
    assert text == "Hello, world!"
    assert fake.received[-1].body["model"] == "vision-model"
