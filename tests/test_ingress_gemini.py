"""``/v1/messages`` and ``/v1/responses`` from a Gemini-dialect fake upstream: the ingress
translation, then the Gemini provider's own."""

from __future__ import annotations

from typing import Any

import anthropic
import openai

from .fakes import ServerThread
from .fakes_gemini import FakeGeminiUpstream

MODEL = "gemini/gemini-test"


def test_messages_stream_from_gemini(
        gemini_ingress: tuple[ServerThread, FakeGeminiUpstream]) -> None:
    gateway, fake = gemini_ingress
    fake.reset()
    with anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0) as client, \
            client.messages.stream(model=MODEL, max_tokens=30, system="Be brief.",
                                   messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello, world!"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (7, 3)
    assert final.stop_reason == "end_turn"
    sent: Any = fake.received[-1].body
    assert sent["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert sent["generationConfig"]["maxOutputTokens"] == 30


def test_responses_stream_from_gemini(
        gemini_ingress: tuple[ServerThread, FakeGeminiUpstream]) -> None:
    gateway, fake = gemini_ingress
    fake.reset()
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client, \
            client.responses.stream(model=MODEL, input="hi", instructions="Be brief.") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Hello, world!"
    assert final.usage is not None and final.usage.output_tokens == 3
