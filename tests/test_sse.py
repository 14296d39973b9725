"""Tests for the SSE codec in ``sluicegate.sse`` (WHATWG HTML §9.2 event-stream interpretation)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import pytest

from sluicegate.sse import DONE, KEEP_ALIVE, ServerSentEvent, SSEDecoder, encode_data

BOM = b"\xef\xbb\xbf"


def decode(chunks: Iterable[bytes]) -> list[ServerSentEvent]:
    """Feed each chunk to one fresh decoder; return every event produced, in order."""
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


def decode_whole(stream: bytes) -> list[ServerSentEvent]:
    return decode([stream])


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def data_of(events: list[ServerSentEvent]) -> list[bytes]:
    return [e.data for e in events]


# A realistic OpenAI chat-completions stream.
_CHUNKS = [
    {
        "id": "chatcmpl-abc123",
        "object": "chat.completion.chunk",
        "created": 1732579200,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        ],
    },
    {
        "id": "chatcmpl-abc123",
        "object": "chat.completion.chunk",
        "created": 1732579200,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "Café "}, "finish_reason": None}],
    },
    {
        "id": "chatcmpl-abc123",
        "object": "chat.completion.chunk",
        "created": 1732579200,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "au lait 🙂"}, "finish_reason": None}],
    },
    {
        "id": "chatcmpl-abc123",
        "object": "chat.completion.chunk",
        "created": 1732579200,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    },
]
_PAYLOADS = [
    json.dumps(c, ensure_ascii=False, separators=(",", ":")).encode("utf-8") for c in _CHUNKS
]
OPENAI_STREAM = b"".join(b"data: " + p + b"\n\n" for p in _PAYLOADS) + b"data: [DONE]\n\n"
OPENAI_EXPECTED = [*_PAYLOADS, b"[DONE]"]


# --------------------------------------------------------------------------- line endings


def test_lf_line_endings() -> None:
    events = decode_whole(b"event: a\ndata: one\ndata: two\n\ndata: three\n\n")
    assert data_of(events) == [b"one\ntwo", b"three"]
    assert [e.event for e in events] == ["a", "message"]


def test_crlf_line_endings() -> None:
    events = decode_whole(b"event: a\r\ndata: one\r\ndata: two\r\n\r\ndata: three\r\n\r\n")
    assert data_of(events) == [b"one\ntwo", b"three"]
    assert [e.event for e in events] == ["a", "message"]


def test_lone_cr_line_endings() -> None:
    events = decode_whole(b"event: a\rdata: one\rdata: two\r\rdata: three\r\r")
    assert data_of(events) == [b"one\ntwo", b"three"]
    assert [e.event for e in events] == ["a", "message"]


def test_mixed_line_endings() -> None:
    events = decode_whole(b"data: a\rdata: b\r\ndata: c\n\r\ndata: d\r\r\n")
    # CR, CRLF, LF then CRLF (blank line) -> one event; "d" CR then CRLF (blank) -> second.
    assert data_of(events) == [b"a\nb\nc", b"d"]


def test_cr_then_crlf_is_two_line_endings() -> None:
    # "\r\r\n" is a lone CR followed by a CRLF: the second terminator ends the event.
    assert data_of(decode_whole(b"data: x\r\r\n")) == [b"x"]


def test_crlf_split_across_reads() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # The LF completing the CRLF must not be taken as a blank line (which would dispatch "a").
    assert decoder.feed(b"\ndata: b\r") == []
    events = decoder.feed(b"\n\r\n")
    assert data_of(events) == [b"a\nb"]


def test_crlf_split_blank_line_across_reads() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\n\r") == [
        ServerSentEvent(data=b"a", event="message", id=None, retry=None)
    ]
    # The LF of the blank line's CRLF must not produce a second (empty) line/event.
    assert decoder.feed(b"\n") == []
    assert data_of(decoder.feed(b"data: b\r\n\r\n")) == [b"b"]


def test_lone_cr_at_end_of_read_followed_by_non_lf() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # "d" is not an LF: the CR was a complete line terminator and "d..." starts a new line.
    assert decoder.feed(b"data: b\r") == []
    events = decoder.feed(b"\r")
    assert data_of(events) == [b"a\nb"]


def test_lone_cr_at_end_of_read_followed_by_cr() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # A second CR at the start of the next read is a blank line, not part of a CRLF.
    assert data_of(decoder.feed(b"\r")) == [b"a"]


@pytest.mark.parametrize(
    "stream",
    [
        b"data: a\r\ndata: b\r\n\r\nid: 7\r\ndata: c\r\n\r\n",
        b"data: a\rdata: b\r\rid: 7\rdata: c\r\r",
        b"data: a\ndata: b\n\nid: 7\ndata: c\n\n",
    ],
)
def test_every_split_point_of_line_endings(stream: bytes) -> None:
    expected = decode_whole(stream)
    assert data_of(expected) == [b"a\nb", b"c"]
    assert expected[1].id == "7"
    for i in range(len(stream) + 1):
        assert decode([stream[:i], stream[i:]]) == expected, i
    assert decode(bytewise(stream)) == expected


# --------------------------------------------------------------------------- UTF-8


@pytest.mark.parametrize("char", ["é", "€", "🙂"])
def test_multibyte_utf8_split_at_every_offset(char: str) -> None:
    text = f"x{char}y{char}"
    stream = f"data: {text}\n\n".encode()
    encoded = char.encode()
    start = stream.index(encoded)
    for i in range(start, start + len(encoded) + 1):
        events = decode([stream[:i], stream[i:]])
        assert len(events) == 1, i
        assert events[0].data == text.encode(), i
        assert events[0].text() == text, i
    events = decode(bytewise(stream))
    assert [e.text() for e in events] == [text]


@pytest.mark.parametrize("char", ["é", "🙂"])
def test_multibyte_utf8_in_event_and_id_split_bytewise(char: str) -> None:
    stream = f"event: ev{char}\nid: id{char}\ndata: {char}\n\n".encode()
    events = decode(bytewise(stream))
    assert events == [ServerSentEvent(data=char.encode(), event=f"ev{char}", id=f"id{char}")]


def test_text_decodes_utf8() -> None:
    assert ServerSentEvent(data="héllo 🙂".encode()).text() == "héllo 🙂"
    assert ServerSentEvent(data=b"").text() == ""


def test_text_replaces_invalid_utf8() -> None:
    assert ServerSentEvent(data=b"a\xffb").text() == "a\ufffdb"


# --------------------------------------------------------------------------- OpenAI stream


def test_openai_stream_whole() -> None:
    events = decode_whole(OPENAI_STREAM)
    assert data_of(events) == OPENAI_EXPECTED
    assert all(e.event == "message" and e.id is None and e.retry is None for e in events)
    assert [json.loads(e.data) for e in events[:-1]] == _CHUNKS
    assert events[2].text().endswith('"au lait 🙂"},"finish_reason":null}]}')


def test_openai_stream_every_two_way_split() -> None:
    expected = decode_whole(OPENAI_STREAM)
    for i in range(len(OPENAI_STREAM) + 1):
        assert decode([OPENAI_STREAM[:i], OPENAI_STREAM[i:]]) == expected, i


def test_openai_stream_every_three_way_split_near_boundaries() -> None:
    expected = decode_whole(OPENAI_STREAM)
    # Second cut just after the first, at every position: covers 1- and 2-byte middle reads.
    for i in range(len(OPENAI_STREAM) - 1):
        for j in (i + 1, i + 2):
            chunks = [OPENAI_STREAM[:i], OPENAI_STREAM[i:j], OPENAI_STREAM[j:]]
            assert decode(chunks) == expected, (i, j)


def test_openai_stream_byte_by_byte() -> None:
    assert decode(bytewise(OPENAI_STREAM)) == decode_whole(OPENAI_STREAM)
    assert data_of(decode(bytewise(OPENAI_STREAM))) == OPENAI_EXPECTED


def test_openai_stream_with_crlf_byte_by_byte() -> None:
    stream = OPENAI_STREAM.replace(b"\n", b"\r\n")
    assert data_of(decode_whole(stream)) == OPENAI_EXPECTED
    assert data_of(decode(bytewise(stream))) == OPENAI_EXPECTED
    for i in range(len(stream) + 1):
        assert data_of(decode([stream[:i], stream[i:]])) == OPENAI_EXPECTED, i


def test_openai_stream_with_keep_alives_interleaved() -> None:
    stream = KEEP_ALIVE + OPENAI_STREAM.replace(b"\n\n", b"\n\n" + KEEP_ALIVE)
    assert data_of(decode_whole(stream)) == OPENAI_EXPECTED
    assert data_of(decode(bytewise(stream))) == OPENAI_EXPECTED


def test_events_returned_by_the_feed_that_completes_them() -> None:
    decoder = SSEDecoder()
    first = b"data: " + _PAYLOADS[0] + b"\n"
    assert decoder.feed(first) == []
    assert data_of(decoder.feed(b"\ndata: " + _PAYLOADS[1] + b"\n\ndata: [DO")) == _PAYLOADS[:2]
    assert data_of(decoder.feed(b"NE]\n\n")) == [b"[DONE]"]


# --------------------------------------------------------------------------- comments


def test_comment_only_stream_produces_no_events() -> None:
    assert decode_whole(b": keep-alive\n\n: another\n\n:\n\n") == []


def test_comment_between_data_lines_does_not_break_event() -> None:
    events = decode_whole(b"data: a\n: keep-alive\ndata: b\n:\ndata: c\n\n")
    assert data_of(events) == [b"a\nb\nc"]


def test_comment_looking_like_a_field_is_ignored() -> None:
    events = decode_whole(b":data: nope\n:event: nope\ndata: yes\n\n")
    assert events == [ServerSentEvent(data=b"yes")]


# --------------------------------------------------------------------------- data field


def test_multi_line_data_joined_with_lf() -> None:
    assert data_of(decode_whole(b"data: line1\ndata: line2\n\n")) == [b"line1\nline2"]


def test_multi_line_data_with_empty_lines() -> None:
    assert data_of(decode_whole(b"data:\ndata: x\ndata:\n\n")) == [b"\nx\n"]


def test_data_without_space_equals_data_with_space() -> None:
    assert decode_whole(b"data:x\n\n") == decode_whole(b"data: x\n\n")
    assert data_of(decode_whole(b"data:x\n\n")) == [b"x"]


def test_only_one_leading_space_stripped() -> None:
    assert data_of(decode_whole(b"data:  x\n\n")) == [b" x"]
    assert data_of(decode_whole(b"data: x \n\n")) == [b"x "]


def test_tab_after_colon_not_stripped() -> None:
    assert data_of(decode_whole(b"data:\tx\n\n")) == [b"\tx"]


def test_colon_in_value_kept() -> None:
    assert data_of(decode_whole(b'data: {"a": "b:c"}\n\n')) == [b'{"a": "b:c"}']


def test_data_with_no_colon_gives_empty_data_line() -> None:
    events = decode_whole(b"data\n\n")
    assert events == [ServerSentEvent(data=b"", event="message", id=None, retry=None)]


def test_data_with_no_colon_joins_as_empty_line() -> None:
    assert data_of(decode_whole(b"data: a\ndata\ndata: b\n\n")) == [b"a\n\nb"]


def test_data_colon_empty_value_dispatches_empty_event() -> None:
    assert data_of(decode_whole(b"data:\n\n")) == [b""]
    assert data_of(decode_whole(b"data: \n\n")) == [b""]


def test_field_names_are_case_sensitive() -> None:
    assert decode_whole(b"Data: x\n\nDATA: y\n\n") == []


def test_field_name_with_trailing_space_is_unknown() -> None:
    assert decode_whole(b"data : x\n\n") == []


# --------------------------------------------------------------------------- other fields


def test_unknown_fields_ignored() -> None:
    events = decode_whole(b"foo: bar\ndata: x\nbaz\nqux:\n\n")
    assert events == [ServerSentEvent(data=b"x")]


def test_unknown_field_alone_dispatches_nothing() -> None:
    assert decode_whole(b"foo: bar\n\nbaz\n\n") == []


def test_line_without_colon_is_field_name_with_empty_value() -> None:
    # "event" with no colon sets an empty event type -> default "message".
    events = decode_whole(b"event: custom\nevent\ndata: x\n\n")
    assert [e.event for e in events] == ["message"]
    # "id" with no colon sets the id to "".
    decoder = SSEDecoder()
    events = decoder.feed(b"id: 1\ndata: a\n\nid\ndata: b\n\n")
    assert [e.id for e in events] == ["1", ""]
    assert decoder.last_event_id == ""


def test_event_name_carried() -> None:
    events = decode_whole(b"event: ping\ndata: 1\n\n")
    assert events == [ServerSentEvent(data=b"1", event="ping")]


def test_default_event_name_is_message() -> None:
    assert decode_whole(b"data: 1\n\n")[0].event == "message"


def test_event_name_does_not_persist_across_events() -> None:
    events = decode_whole(b"event: a\ndata: 1\n\ndata: 2\n\n")
    assert [e.event for e in events] == ["a", "message"]


def test_last_event_name_wins() -> None:
    assert decode_whole(b"event: a\nevent: b\ndata: 1\n\n")[0].event == "b"


def test_empty_event_name_is_message() -> None:
    assert decode_whole(b"event:\ndata: 1\n\n")[0].event == "message"


def test_event_name_from_undispatched_event_does_not_leak() -> None:
    # "event: ping" with no data is discarded at the blank line, including its type.
    events = decode_whole(b"event: ping\n\ndata: 1\n\n")
    assert events == [ServerSentEvent(data=b"1", event="message")]


def test_id_sets_id_and_persists() -> None:
    decoder = SSEDecoder()
    assert decoder.last_event_id is None
    events = decoder.feed(b"id: 42\ndata: a\n\ndata: b\n\n")
    assert [e.id for e in events] == ["42", "42"]
    assert decoder.last_event_id == "42"
    events = decoder.feed(b"id: 43\ndata: c\n\ndata: d\n\n")
    assert [e.id for e in events] == ["43", "43"]
    assert decoder.last_event_id == "43"


def test_id_after_data_in_same_event_applies() -> None:
    assert decode_whole(b"data: a\nid: 9\n\n")[0].id == "9"


def test_empty_id_resets_last_event_id() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"id: 1\ndata: a\n\nid:\ndata: b\n\n")
    assert [e.id for e in events] == ["1", ""]
    assert decoder.last_event_id == ""


def test_id_containing_nul_is_ignored() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert [e.id for e in events] == ["1", "1"]
    assert decoder.last_event_id == "1"


def test_id_containing_nul_ignored_on_fresh_decoder() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: \x00\ndata: a\n\n")[0].id is None
    assert decoder.last_event_id is None


def test_id_without_data_still_updates_last_event_id() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 5\n\n") == []
    assert decoder.last_event_id == "5"
    assert decoder.feed(b"data: x\n\n")[0].id == "5"


def test_retry_with_digits_sets_retry() -> None:
    events = decode_whole(b"retry: 1500\ndata: x\n\n")
    assert events == [ServerSentEvent(data=b"x", retry=1500)]


@pytest.mark.parametrize("value", [b"abc", b"15s", b"-1", b"1.5", b" 10", b"10 ", b"", b"\xd9\xa1"])
def test_retry_with_non_digits_ignored(value: bytes) -> None:
    events = decode_whole(b"retry: " + value + b"\ndata: x\n\n")
    assert events == [ServerSentEvent(data=b"x", retry=None)]


def test_invalid_retry_keeps_previous_value() -> None:
    events = decode_whole(b"retry: 100\ndata: a\n\nretry: x\ndata: b\n\n")
    assert [e.retry for e in events] == [100, 100]


def test_retry_zero() -> None:
    assert decode_whole(b"retry:0\ndata: x\n\n")[0].retry == 0


# --------------------------------------------------------------------------- dispatch rules


@pytest.mark.parametrize(
    "stream",
    [
        b"id: 5\n\n",
        b"event: ping\n\n",
        b"retry: 100\n\n",
        b"id: 5\nevent: ping\nretry: 100\n\n",
        b"foo: bar\n\n",
        b": comment\n\n",
    ],
)
def test_event_without_data_not_dispatched(stream: bytes) -> None:
    assert decode_whole(stream) == []
    assert decode(bytewise(stream)) == []


def test_extra_blank_lines_produce_no_events() -> None:
    assert decode_whole(b"\n\n\n\r\n\r\r") == []
    events = decode_whole(b"\n\ndata: a\n\n\n\n\ndata: b\n\n\n")
    assert data_of(events) == [b"a", b"b"]


def test_blank_line_resets_data_buffer() -> None:
    events = decode_whole(b"data: a\n\n\ndata: b\n\n")
    assert data_of(events) == [b"a", b"b"]


def test_unterminated_last_event_not_dispatched() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"data: a\n\ndata: b\n")
    assert data_of(events) == [b"a"]
    # Nothing more arrives: "b" never gets its blank line.
    events = decoder.feed(b"")
    assert events == []


def test_unterminated_partial_line_not_dispatched() -> None:
    assert data_of(decode_whole(b"data: a\n\ndata: b")) == [b"a"]


def test_unterminated_event_completes_on_later_read() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: b\n") == []
    assert data_of(decoder.feed(b"\n")) == [b"b"]


def test_empty_feed_returns_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"") == []
    assert data_of(decoder.feed(b"data: a\n\n")) == [b"a"]
    assert decoder.feed(b"") == []


def test_many_events_in_one_read() -> None:
    stream = b"".join(encode_data(str(i).encode()) for i in range(100))
    assert data_of(decode_whole(stream)) == [str(i).encode() for i in range(100)]


# --------------------------------------------------------------------------- BOM


def test_leading_bom_stripped() -> None:
    events = decode_whole(BOM + b"data: x\n\n")
    assert events == [ServerSentEvent(data=b"x")]


def test_leading_bom_split_byte_by_byte() -> None:
    stream = BOM + b"data: x\n\n"
    assert decode(bytewise(stream)) == [ServerSentEvent(data=b"x")]


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5])
def test_leading_bom_split_at_every_offset(cut: int) -> None:
    stream = BOM + b"data: x\n\n"
    assert decode([stream[:cut], stream[cut:]]) == [ServerSentEvent(data=b"x")]


def test_leading_bom_alone_then_stream() -> None:
    assert decode([BOM, b"data: x\n\n"]) == [ServerSentEvent(data=b"x")]


def test_bom_split_with_empty_feeds() -> None:
    chunks = [b"", BOM[:1], b"", BOM[1:2], b"", BOM[2:], b"", b"data: x\n\n"]
    assert decode(chunks) == [ServerSentEvent(data=b"x")]


def test_only_one_leading_bom_stripped() -> None:
    # The second BOM is part of the first line's field name -> "\ufeffdata" -> ignored.
    assert decode_whole(BOM + BOM + b"data: x\n\ndata: y\n\n") == [ServerSentEvent(data=b"y")]


def test_bom_not_at_start_not_stripped() -> None:
    stream = b"data: a\n\n" + BOM + b"data: x\n\ndata: y\n\n"
    assert data_of(decode_whole(stream)) == [b"a", b"y"]
    assert data_of(decode(bytewise(stream))) == [b"a", b"y"]


def test_bom_in_second_read_not_stripped() -> None:
    assert data_of(decode([b"\n", BOM + b"data: x\n\ndata: y\n\n"])) == [b"y"]


def test_bom_inside_data_value_kept() -> None:
    assert data_of(decode_whole(b"data: " + BOM + b"x\n\n")) == [BOM + b"x"]


def test_partial_bom_prefix_that_is_not_a_bom() -> None:
    # Bytes that start like a BOM but are not one are kept as part of the first line.
    stream = b"\xef\xbbdata: x\n\ndata: y\n\n"
    assert data_of(decode_whole(stream)) == [b"y"]
    assert data_of(decode(bytewise(stream))) == [b"y"]


def test_first_read_too_short_for_bom_check() -> None:
    assert data_of(decode([b"d", b"a", b"ta: x\n\n"])) == [b"x"]
    assert data_of(decode([b"\n", b"\n", b"data: x\n\n"])) == [b"x"]


# --------------------------------------------------------------------------- encoding


def test_encode_data() -> None:
    assert encode_data(b'{"a":1}') == b'data: {"a":1}\n\n'


def test_done_constant() -> None:
    assert DONE == b"data: [DONE]\n\n"
    assert decode_whole(DONE) == [ServerSentEvent(data=b"[DONE]")]


def test_keep_alive_decodes_to_no_events() -> None:
    assert decode_whole(KEEP_ALIVE) == []
    assert decode(bytewise(KEEP_ALIVE * 3)) == []


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a":1}',
        '{"content":"héllo 🙂"}'.encode(),
        b" leading space",
        b"  two leading spaces",
        b":starts with colon",
        b"[DONE]",
        *_PAYLOADS,
    ],
)
def test_encode_roundtrip(payload: bytes) -> None:
    encoded = encode_data(payload)
    assert encoded.startswith(b"data: ") and encoded.endswith(b"\n\n")
    assert decode_whole(encoded) == [ServerSentEvent(data=payload)]
    assert decode(bytewise(encoded)) == [ServerSentEvent(data=payload)]


def test_encoded_stream_roundtrip_with_keep_alives_and_done() -> None:
    stream = KEEP_ALIVE + b"".join(encode_data(p) + KEEP_ALIVE for p in _PAYLOADS) + DONE
    events = decode(bytewise(stream))
    assert data_of(events) == OPENAI_EXPECTED
    assert stream.replace(KEEP_ALIVE, b"") == OPENAI_STREAM


def test_server_sent_event_defaults_and_slots() -> None:
    ev = ServerSentEvent(data=b"x")
    assert (ev.event, ev.id, ev.retry) == ("message", None, None)
    with pytest.raises(AttributeError):
        ev.other = 1  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- regressions


def test_empty_feed_between_split_crlf() -> None:
    events = decode([b"data: a\r", b"", b"\ndata: b\r\n\r\n"])
    assert data_of(events) == [b"a\nb"]


def test_unterminated_event_id_does_not_update_last_event_id() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n")
    # The event with id 2 was never completed; reconnection must resume after id 1.
    assert decoder.last_event_id == "1"


_PIECES = [
    b"data: a\n\n", b"data: {\"x\": 1}\n\n", b"event: e\ndata: b\n\n", b": comment\n\n",
    b"id: 7\n\n", b"data: x\ndata: y\n\n", b"\n", b"retry: 5\n", b"data:z\n\n",
    b"id: 9\ndata: q\n\n", b"data: \n\n", b"data: crlf\r\n\r\n", b"data: cr\r\r", b"id\n",
    b"data: \xc3\xa9t\xc3\xa9\n\n", b"data: unterminated",
]


@pytest.mark.parametrize("seed", range(40))
def test_feed_data_matches_feed_on_random_streams(seed: int) -> None:
    """The data-only fast path gives the same payloads and Last-Event-ID as ``feed``, for any
    mix of fields and line endings, split at random offsets."""
    import random

    rng = random.Random(seed)
    for _ in range(50):
        stream = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 10)))
        if rng.random() < 0.2:
            stream = b"\xef\xbb\xbf" + stream
        reference = SSEDecoder()
        expected = [event.data for event in reference.feed(stream)]
        decoder = SSEDecoder()
        got: list[bytes] = []
        i = 0
        while i < len(stream):
            j = i + rng.randint(1, 12)
            got += decoder.feed_data(stream[i:j])
            i = j
        assert got == expected, stream
        assert decoder.last_event_id == reference.last_event_id, stream


def test_feed_data_one_event_per_read() -> None:
    decoder = SSEDecoder()
    assert decoder.feed_data(b'data: {"a":1}\n\n') == [b'{"a":1}']
    assert decoder.feed_data(b'data: {"b"') == []
    assert decoder.feed_data(b':2}\n\ndata: [DONE]\n\n') == [b'{"b":2}', b"[DONE]"]
