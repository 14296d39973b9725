"""The official JavaScript SDKs against the gateway: openai-node (``responses.stream()``,
``chat.completions.create({stream: true})``) and the Vercel AI SDK (``streamText`` on
``createOpenAI({baseURL, apiKey})(model)``, whose default model speaks the Responses API), run
by ``tests/node/sdk_client.mjs`` in a Node subprocess, from the fake upstream and from the
embedded model.

The packages are pinned in ``tests/node/package-lock.json`` (openai 6, ai 6 with @ai-sdk/openai 3:
the newest majors that run on Node 20; openai 7 and ai 7 need Node 22). ``make test`` installs
them (``npm ci --prefix tests/node``), and the ``node_sdks`` fixture does it itself when
``node_modules`` is missing or out of date. Without node or npm, or offline, the tests fail
saying so.
"""

from __future__ import annotations

import asyncio
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from bench.procs import die_with_parent

from .fakes import FakeOpenAIUpstream, Script, ServerThread, tool_call_chunks

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
README = ROOT / "README.md"
LOCK = NODE_DIR / "package-lock.json"
INSTALLED = NODE_DIR / "node_modules" / ".package-lock.json"  # npm writes it on every install
SCRIPT = NODE_DIR / "sdk_client.mjs"
INSTALL = "npm ci --prefix tests/node --no-audit --no-fund"
MODEL = "mock/some-model"
WAIT_S = 120  # for one line of a client's output (a bound, never an assertion)

TEXTS = ["Once", " upon", " a", " time", " there", " was", " a", " stream."]
"""What the fake upstream streams in the text cases: eight content chunks."""

RESPONSES_CLIENTS = ["openai-responses", "ai-sdk-text"]
TEXT_CLIENTS = [*RESPONSES_CLIENTS, "openai-chat"]


def _installed() -> bool:
    """``node_modules`` is there and no older than ``package.json`` and the lock file (the
    Makefile's rule)."""
    newest = max(LOCK.stat().st_mtime, (NODE_DIR / "package.json").stat().st_mtime)
    return INSTALLED.exists() and INSTALLED.stat().st_mtime >= newest


@pytest.fixture(scope="session")
def node_sdks() -> str:
    """The ``node`` binary, with ``tests/node``'s packages installed (``npm ci`` once, when
    ``node_modules`` is missing or out of date)."""
    node = shutil.which("node")
    assert node is not None, "node (20 or newer) is needed for the JavaScript SDK tests"
    if not _installed():
        npm = shutil.which("npm")
        assert npm is not None, f"npm is needed to install the JavaScript SDKs: {INSTALL}"
        result = subprocess.run([npm, *INSTALL.split()[1:]], cwd=ROOT, capture_output=True,
                                text=True, timeout=600, check=False)
        if result.returncode != 0 or not _installed():
            pytest.fail(f"the JavaScript SDKs are not installed and `{INSTALL}` failed "
                        f"(it needs the npm registry); run it, then the tests again:\n"
                        f"{result.stdout[-2000:]}{result.stderr[-4000:]}")
    return node


class NodeClient:
    """``sdk_client.mjs CASE`` in a subprocess; its JSON lines are read as they arrive."""

    def __init__(self, node: str, case: str, base_url: str, model: str,
                 **options: Any) -> None:
        self.proc = subprocess.Popen(
            [node, str(SCRIPT), case, base_url + "/v1", model, orjson.dumps(options).decode()],
            cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.deltas: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(b"")

    def next(self) -> dict[str, Any]:
        """The client's next line (a delta is also kept in ``deltas``)."""
        try:
            line = self.lines.get(timeout=WAIT_S)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"no output from the node client in {WAIT_S} s") from None
        if not line:
            self.proc.wait(30)
            stderr = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"the node client ended ({self.proc.returncode}) without a "
                                 f"summary:\n{stderr[-4000:]}")
        out: dict[str, Any] = orjson.loads(line)
        if "delta" in out:
            self.deltas.append(out["delta"])
        return out

    def finish(self) -> dict[str, Any]:
        """Read to the end: the ``summary`` or ``error`` line (the exit code checked)."""
        while "delta" in (last := self.next()):
            pass
        self.proc.wait(30)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        assert self.proc.returncode == (0 if "summary" in last else 1), last
        return last

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def run_node(node_sdks: str) -> Iterator[Any]:
    """``run_node(case, base_url, model, **options)`` → a started ``NodeClient``; all are
    killed after the test."""
    started: list[NodeClient] = []

    def run(case: str, base_url: str, model: str = MODEL, **options: Any) -> NodeClient:
        client = NodeClient(node_sdks, case, base_url, model, **options)
        started.append(client)
        return client

    yield run
    for client in started:
        client.close()


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    assert "summary" in result, f"the SDK failed: {result}"
    summary: dict[str, Any] = result["summary"]
    return summary


def _usage(case: str, summary: dict[str, Any]) -> tuple[int, int, int]:
    """(input, output, total) tokens as the SDK reported them."""
    usage = summary["usage"]
    if case == "openai-chat":
        return usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]
    if case.startswith("ai-sdk"):
        return usage["inputTokens"], usage["outputTokens"], usage["totalTokens"]
    return usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]


def _completed(case: str, summary: dict[str, Any]) -> bool:
    """The SDK saw a normal end: the response's ``status`` (openai-node's Responses), else the
    finish reason."""
    if case == "openai-responses":
        return bool(summary["status"] == "completed")
    return bool(summary["finish_reason"] == "stop")


@pytest.mark.parametrize("case", TEXT_CLIENTS)
def test_text_streams_incrementally(gw: ServerThread, fake: FakeOpenAIUpstream, run_node: Any,
                                    case: str) -> None:
    """The upstream holds after two chunks: the SDK has yielded exactly those two increments
    while the rest is not yet sent; released, it gets the rest, the text, status and usage."""
    release = asyncio.Event()
    fake.script = Script(texts=TEXTS, gap_s=0.01, stall_after=2, stall_s=30, release=release)
    sent = fake.sent
    client = run_node(case, gw.url, prompt="Tell a story.", max_tokens=64)
    try:
        assert [client.next(), client.next()] == [{"delta": TEXTS[0]}, {"delta": TEXTS[1]}]
        assert fake.sent - sent <= 2  # the upstream is holding back the third chunk
    finally:
        fake.set(release)
    summary = _summary(client.finish())
    assert client.deltas == TEXTS  # one SDK increment per upstream chunk, none coalesced
    assert summary["deltas"] == len(TEXTS)
    assert summary["text"] == "".join(TEXTS)
    assert _completed(case, summary), summary
    assert _usage(case, summary) == (11, len(TEXTS), 11 + len(TEXTS))
    sent_body = fake.received[-1].body
    # openai-node sends the prompt as a string, the AI SDK as one input_text part.
    assert sent_body["messages"] in ([{"role": "user", "content": "Tell a story."}],
                                     [{"role": "user", "content": [{"type": "text",
                                                                    "text": "Tell a story."}]}])
    assert sent_body["max_tokens"] == 64 and sent_body["stream"] is True


def test_openai_node_final_response(gw: ServerThread, fake: FakeOpenAIUpstream,
                                    run_node: Any) -> None:
    """``finalResponse()`` is the completed response: one message item holding the text, the
    events in the documented order."""
    summary = _summary(run_node("openai-responses", gw.url).finish())
    assert summary["id"].startswith("resp_") and summary["model"] == MODEL
    assert summary["output"] == [{"type": "message", "status": "completed",
                                  "text": "Hello, world!"}]
    assert summary["event_types"] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * 4,
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]


@pytest.mark.parametrize("case", ["openai-responses-tool", "ai-sdk-tool"])
def test_function_call_stream(gw: ServerThread, fake: FakeOpenAIUpstream, run_node: Any,
                              case: str) -> None:
    """An upstream tool call reaches each SDK as a streamed function call: argument deltas as
    the upstream sent them, then the whole call (``call_id``, name, arguments)."""
    fake.script = Script(raw_chunks=tool_call_chunks())
    client = run_node(case, gw.url, prompt="Weather in Paris?")
    summary = _summary(client.finish())
    assert client.deltas == ['{"city": "Pa', 'ris"}']
    if case == "ai-sdk-tool":
        assert summary["tool_calls"] == [{"tool_call_id": "call_1", "tool_name": "get_weather",
                                          "input": {"city": "Paris"}, "invalid": False}]
        assert summary["finish_reason"] == "tool-calls" and summary["errors"] == []
    else:
        assert summary["status"] == "completed"
        assert summary["output"] == [{"type": "function_call", "call_id": "call_1",
                                      "name": "get_weather", "arguments": '{"city": "Paris"}',
                                      "status": "completed"}]
    assert _usage(case, summary) == (30, 9, 39)
    tools = fake.received[-1].body["tools"]
    assert [t["function"]["name"] for t in tools] == ["get_weather"]
    assert tools[0]["function"]["parameters"]["required"] == ["city"]


@pytest.mark.parametrize("case", RESPONSES_CLIENTS)
def test_token_limit_ends_incomplete(gw: ServerThread, fake: FakeOpenAIUpstream,
                                     run_node: Any, case: str) -> None:
    fake.script = Script(finish_reason="length")
    summary = _summary(run_node(case, gw.url, max_tokens=4).finish())
    assert summary["text"] == "Hello, world!"
    if case == "ai-sdk-text":
        assert summary["finish_reason"] == "length"
        assert summary["raw_finish_reason"] == "max_output_tokens"
    else:
        assert summary["status"] == "incomplete"
        assert summary["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize("case", TEXT_CLIENTS)
def test_midstream_failure_reaches_the_sdk(gw: ServerThread, fake: FakeOpenAIUpstream,
                                           run_node: Any, case: str) -> None:
    """An upstream error after two chunks: the SDK got those two increments, then an error
    naming the failure (openai-node rejects; the AI SDK reports it and finishes ``error``)."""
    fake.script = Script(error_after=2)
    client = run_node(case, gw.url)
    result = client.finish()
    assert client.deltas == ["Hello", ","]
    if case == "ai-sdk-text":
        summary = _summary(result)
        assert summary["finish_reason"] == "error" and len(summary["errors"]) == 1
        error = summary["errors"][0]["value"]
        assert error["code"] == "502" and error["isRetryable"] is True
    elif case == "openai-responses":  # the `error` event itself, as ResponseStream rejects
        error = result["error"]["value"]
        assert error["type"] == "error" and error["code"] == "502"
    else:
        error = result["error"]
    assert "Provider disconnected" in error["message"]


@pytest.mark.parametrize("case", [*RESPONSES_CLIENTS, "openai-chat"])
def test_embedded_model(local_gateway: tuple[ServerThread, Any], run_node: Any,
                        case: str) -> None:
    server, _ = local_gateway
    client = run_node(case, server.url, "default", prompt="Say hi.", max_tokens=16,
                      temperature=0)
    summary = _summary(client.finish())
    assert summary["text"].strip() and summary["deltas"] >= 1
    assert "".join(client.deltas) == summary["text"]
    assert _completed(case, summary), summary
    prompt, completion, total = _usage(case, summary)
    assert prompt > 0 and 1 <= completion <= 16 and total == prompt + completion


def test_readme_javascript_example_runs(local_gateway: tuple[ServerThread, Any],
                                        node_sdks: str) -> None:
    """The README's JavaScript example, as written, against the embedded model."""
    blocks = re.findall(r"```js\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    example = next(block for block in blocks if "streamText" in block)
    server, _ = local_gateway
    code = example.replace("http://localhost:8400/v1", server.url + "/v1")
    assert code != example
    # An --eval module resolves its imports from the working directory: tests/node's packages.
    result = subprocess.run([node_sdks, "--input-type=module", "--eval", code], cwd=NODE_DIR,
                            capture_output=True, text=True, timeout=240, check=False,
                            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "output_tokens:" in result.stdout and "outputTokens:" in result.stdout, result.stdout
    assert re.search(r"^usage: \{", result.stdout, re.M), result.stdout
    assert re.search(r"^finish: (stop|length) \{", result.stdout, re.M), result.stdout


def test_ai_sdk_tool_loop(gw: ServerThread, fake: FakeOpenAIUpstream, run_node: Any) -> None:
    """An agent step loop: the AI SDK runs the streamed call's tool and sends the first step
    back (its text as an ``item_reference``, the call as a ``function_call``, the tool's
    result as a ``function_call_output``); the upstream gets them as one assistant turn and
    the tool message, and the answer streams."""
    fake.queue = [Script(raw_chunks=tool_call_chunks("Let me check.")),
                  Script(texts=["It is", " 12 C."])]
    client = run_node("ai-sdk-steps", gw.url, prompt="Weather in Paris?")
    summary = _summary(client.finish())
    assert client.deltas == ["Let me check.", "It is", " 12 C."]  # textStream: both steps
    assert summary["text"] == "Let me check.It is 12 C." and summary["finish_reason"] == "stop"
    assert summary["steps"] == [
        {"finish_reason": "tool-calls", "text": "Let me check.",
         "tool_calls": [{"tool_name": "get_weather", "input": {"city": "Paris"}}],
         "tool_results": [{"tool_name": "get_weather",
                           "output": {"city": "Paris", "celsius": 12}}]},
        {"finish_reason": "stop", "text": "It is 12 C.", "tool_calls": [], "tool_results": []}]
    total = summary["total_usage"]
    assert (total["inputTokens"], total["outputTokens"]) == (30 + 11, 9 + 2)
    assert fake.received[-1].body["messages"][1:] == [
        {"role": "assistant", "content": "Let me check.", "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1",
         "content": '{"city":"Paris","celsius":12}'}]


def test_ai_sdk_second_turn_references_the_first_answer(gw: ServerThread,
                                                       fake: FakeOpenAIUpstream,
                                                       run_node: Any) -> None:
    """The AI SDK sends its earlier answer back as ``{"type": "item_reference", "id": <the
    message item's id>}`` (``store`` is on by default): the gateway puts the stored answer
    there, and the upstream gets the whole conversation."""
    fake.queue = [Script(), Script(texts=["Still", " here."])]
    summary = _summary(run_node("ai-sdk-multiturn", gw.url, prompt="Hi",
                                follow_up="And then?").finish())
    assert summary["first_text"] == "Hello, world!"
    assert summary["text"] == "Still here." and summary["finish_reason"] == "stop"
    answer = summary["sent_messages"][1]
    assert answer["role"] == "assistant"
    assert answer["content"][0]["providerOptions"]["openai"]["itemId"].startswith("msg_")
    assert fake.received[-1].body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": [{"type": "text", "text": "And then?"}]}]
