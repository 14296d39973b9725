"""Property-based fuzzing of what hostile peers control: the SSE decoder (upstream bytes) and the
request parser (client bodies). Either the input is accepted or a typed error comes out; nothing
else escapes, and the work done is bounded by the input and the configured limits.

Examples are derandomized, so every run checks the same inputs.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluicegate.errors import InvalidRequestError
from sluicegate.policy import request_overrides
from sluicegate.schemas import parse_chat_request, parse_completion_request
from sluicegate.sse import EventTooLargeError, SSEDecoder

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

# Bytes shaped like SSE, so the decoder's branches are reached, mixed with arbitrary bytes.
_SSE_PIECES = st.sampled_from([b"data: ", b"data:", b"event: x", b"id: 1", b"id: \x00",
                               b"retry: 10", b"retry: x", b": comment", b"\n", b"\r", b"\r\n",
                               b"\n\n", b"\xef\xbb\xbf", b"[DONE]", b'{"a": 1}', b"\xff\xfe"])
SSE_BYTES = st.lists(st.one_of(_SSE_PIECES, st.binary(max_size=40)), max_size=60).map(b"".join)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@FUZZ
@given(SSE_BYTES, st.lists(st.integers(0, 10_000), max_size=8))
def test_sse_decoder_never_raises_and_both_paths_agree(data: bytes, cuts: list[int]) -> None:
    full, fast = SSEDecoder(), SSEDecoder()
    events = [e.data for piece in _split(data, cuts) for e in full.feed(piece)]
    payloads = [p for piece in _split(data, cuts) for p in fast.feed_data(piece)]
    assert payloads == events
    assert fast.last_event_id == full.last_event_id
    whole = [e.data for e in SSEDecoder().feed(data)]
    assert whole == events, "where the reads split never changes the events"


@FUZZ
@given(SSE_BYTES, st.lists(st.integers(0, 10_000), max_size=8), st.integers(1, 64))
def test_sse_decoder_with_a_limit_raises_only_its_typed_error(data: bytes, cuts: list[int],
                                                              limit: int) -> None:
    for method in ("feed", "feed_data"):
        decoder = SSEDecoder(max_event_bytes=limit)
        try:
            for piece in _split(data, cuts):
                getattr(decoder, method)(piece)
        except EventTooLargeError:
            held = len(decoder._buf) + sum(len(d) for d in decoder._data)
            assert held > limit


@pytest.mark.parametrize("method", ["feed", "feed_data"])
def test_a_line_that_never_ends_is_refused_after_the_limit(method: str) -> None:
    """64 MiB without a newline, in 64 KiB reads: the decoder gives up once it holds more than
    1 MiB, having seen at most the limit plus one read: work bounded by the limit, not by the
    peer."""
    decoder = SSEDecoder(max_event_bytes=1024 * 1024)
    piece = b"data: " + b"x" * (64 * 1024 - 6)
    fed = 0
    with pytest.raises(EventTooLargeError):
        for _ in range(1024):
            getattr(decoder, method)(piece)
            fed += len(piece)
    assert fed <= 1024 * 1024 + len(piece)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=20)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "bogus"]) | JSON},
    optional={"content": st.text(max_size=30) | JSON, "name": JSON, "tool_calls": JSON})
BODY = st.fixed_dictionaries(
    {"model": st.text(max_size=30) | JSON},
    optional={"messages": st.lists(MESSAGE, max_size=3) | JSON, "prompt": JSON,
              "stream": JSON, "stream_options": JSON, "temperature": JSON, "top_p": JSON,
              "n": JSON, "max_tokens": JSON, "stop": JSON, "seed": JSON, "timeouts": JSON,
              "models": JSON, "tools": JSON, "extra": JSON})


@FUZZ
@given(st.one_of(BODY, JSON))
def test_request_parser_accepts_or_raises_invalid_request(body: Any) -> None:
    for parse in (parse_chat_request, parse_completion_request):
        try:
            request = parse(body)
        except InvalidRequestError as exc:
            assert exc.status == 400 and exc.message
            continue
        assert request.raw is body
        try:
            request_overrides(request.raw)
        except InvalidRequestError as exc:
            assert exc.param in ("timeouts", "models") or str(exc.param).startswith("timeouts.")
