"""Tests for gateway.stream.sse: the incremental SSE parser, fed lists of byte chunks."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator, Iterable

import pytest

from gateway.errors import UpstreamUnavailable
from gateway.stream.sse import SSEEvent, SSEParser, encode_data, sse_batches

Fields = tuple[str | None, str | None, str | None]  # (data, event, comment)


def delta(text: str) -> str:
    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}
    return json.dumps(chunk, ensure_ascii=False)


#: Events of a stream as a client would see them, with Chinese text in every field kind.
EVENTS: list[Fields] = [
    (delta("你好，"), None, None),
    (None, None, "keep-alive 保活"),
    (delta("世界！Hello"), None, None),
    ("第一行\n second line\n第三行", "message", None),
    (delta(" world"), "delta", None),
    ("[DONE]", None, None),
]


def encode(events: Iterable[Fields], eol: str = "\n") -> bytes:
    out = []
    for data, event, comment in events:
        lines = []
        if comment is not None:
            lines.append(f": {comment}")
        if event is not None:
            lines.append(f"event: {event}")
        if data is not None:
            lines.extend(f"data: {line}" for line in data.split("\n"))
        out.append(eol.join(lines) + eol + eol)
    return "".join(out).encode("utf-8")


def fields(events: Iterable[SSEEvent]) -> list[Fields]:
    return [(e.data, e.event, e.comment) for e in events]


def parse(chunks: Iterable[bytes]) -> tuple[list[list[SSEEvent]], list[SSEEvent]]:
    """Feed every chunk; returns what each feed returned, and what close() returned."""
    parser = SSEParser()
    fed = [parser.feed(chunk) for chunk in chunks]
    return fed, parser.close()


def split(data: bytes, *points: int) -> list[bytes]:
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def complete_before(data: bytes, eol: str, at: int) -> int:
    """How many events of ``data`` are terminated within ``data[:at]``. A CR ends a line at
    once, so with CRLF an event is complete at the blank line's CR, before its LF."""
    terminator = "\r\n\r" if eol == "\r\n" else eol * 2
    return data[:at].count(terminator.encode())


# --- splitting -------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_one_feed(eol: str) -> None:
    fed, tail = parse([encode(EVENTS, eol)])
    assert [fields(batch) for batch in fed] == [EVENTS]
    assert tail == []


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_every_single_split_point(eol: str) -> None:
    data = encode(EVENTS, eol)
    assert len(data) > len(encode(EVENTS, eol).decode())  # multibyte characters are in there
    for at in range(len(data) + 1):
        fed, tail = parse(split(data, at))
        assert fields([*fed[0], *fed[1], *tail]) == EVENTS, at
        # Events come out of the feed that completes them, not later.
        assert len(fed[0]) == complete_before(data, eol, at), at
        assert tail == [], at


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_every_pair_of_split_points(eol: str) -> None:
    events: list[Fields] = [("你好", None, None), (None, None, "保活"), ("第一行\n第二行", "message", None)]
    data = encode(events, eol)
    for first in range(len(data) + 1):
        for second in range(first, len(data) + 1):
            fed, tail = parse(split(data, first, second))
            assert fields([e for batch in fed for e in batch]) == events, (first, second)
            assert tail == []


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_one_byte_at_a_time(eol: str) -> None:
    data = encode(EVENTS, eol)
    fed, tail = parse(data[i : i + 1] for i in range(len(data)))
    assert fields([e for batch in fed for e in batch]) == EVENTS
    assert tail == []
    # Each event surfaces on the byte that ends its terminator.
    ends = [i for i, batch in enumerate(fed) if batch]
    last = 2 if eol == "\r\n" else 1  # CRLF: the blank line's CR completes the event
    assert ends == [m.end() - last for m in _terminators(data, eol)]


def _terminators(data: bytes, eol: str) -> list[re.Match[bytes]]:
    return list(re.finditer(re.escape((eol * 2).encode()), data))


def test_utf8_character_split_across_feeds() -> None:
    data = encode([(delta("炸药配方"), None, None)])
    start = data.index("炸".encode())
    for at in range(start + 1, start + 3):  # inside the three bytes of 炸
        fed, _ = parse(split(data, at))
        assert fed[0] == []
        assert fields(fed[1]) == [(delta("炸药配方"), None, None)]


def test_raw_is_the_normalised_event() -> None:
    fed, _ = parse([b"event: x\r\ndata: \xe4\xbd\xa0\xe5\xa5\xbd\r\n\r\n"])
    [event] = fed[0]
    assert event.raw == "event: x\ndata: 你好\n\n".encode()
    assert event.data == "你好"


# --- line endings ----------------------------------------------------------------------------


def test_crlf_split_between_cr_and_lf() -> None:
    data = b"data: a\r\n\r\ndata: b\r\n\r\n"
    for at in [i + 1 for i, byte in enumerate(data) if byte == ord("\r")]:
        fed, tail = parse(split(data, at))
        assert fields([e for batch in fed for e in batch]) == [("a", None, None), ("b", None, None)], at
        assert tail == [], at


def test_bare_cr_line_endings() -> None:
    data = encode(EVENTS, "\r")
    for at in range(len(data) + 1):
        fed, tail = parse(split(data, at))
        assert fields([*fed[0], *fed[1], *tail]) == EVENTS, at


def test_mixed_line_endings() -> None:
    fed, tail = parse([b"event: e\rdata: 1\r\ndata: 2\n\r\ndata: \xe4\xb8\xad\n\r"])
    assert fields([*fed[0], *tail]) == [("1\n2", "e", None), ("中", None, None)]


def test_bare_cr_event_is_delivered_by_the_feed_that_ends_it() -> None:
    parser = SSEParser()
    assert fields(parser.feed("data: 你好\r\r".encode())) == [("你好", None, None)]


# --- fields ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"data: one\ndata: two\ndata: three\n\n", ("one\ntwo\nthree", None, None)),
        ("data: 第一行\ndata: 第二行\n\n".encode(), ("第一行\n第二行", None, None)),
        (b"data:nospace\n\n", ("nospace", None, None)),
        (b"data:  two spaces\n\n", (" two spaces", None, None)),
        (b"data\n\n", ("", None, None)),
        (b"data:\ndata:\n\n", ("\n", None, None)),
        (b": ping\n\n", (None, None, "ping")),
        (b":\n\n", (None, None, "")),
        (": 心跳\n\n".encode(), (None, None, "心跳")),
        (b"event: completion\ndata: {}\n\n", ("{}", "completion", None)),
        ("event: 事件\ndata: x\n\n".encode(), ("x", "事件", None)),
        (b"id: 7\nretry: 100\ndata: x\nunknown: y\n\n", ("x", None, None)),
        (b": keep-alive\ndata: x\n\n", ("x", None, "keep-alive")),
    ],
)
def test_fields(raw: bytes, expected: Fields) -> None:
    fed, _ = parse([raw])
    assert fields(fed[0]) == [expected]


def test_comments_surface_between_data_events() -> None:
    fed, _ = parse([b": ping\n\ndata: a\n\n: ping\n\n: ping\n\ndata: b\n\n"])
    assert fields(fed[0]) == [
        (None, None, "ping"),
        ("a", None, None),
        (None, None, "ping"),
        (None, None, "ping"),
        ("b", None, None),
    ]


def test_extra_blank_lines_are_not_events() -> None:
    fed, tail = parse([b"\n\n\n\ndata: a\n\n\n\n\ndata: b\n\n"])
    assert fields(fed[0]) == [("a", None, None), ("b", None, None)]
    assert tail == []


# --- end of input, limits, bad bytes ---------------------------------------------------------


@pytest.mark.parametrize(
    "tail_bytes", ["data: 最后一个", "data: 最后一个\n", "data: 最后一个\r\n", "data: 最后一个\r"]
)
def test_unterminated_final_event_is_returned_by_close(tail_bytes: str) -> None:
    fed, tail = parse([b"data: a\n\n", tail_bytes.encode()])
    assert fields(fed[0]) == [("a", None, None)]
    assert fed[1] == []
    assert fields(tail) == [("最后一个", None, None)]


def test_close_with_nothing_left() -> None:
    fed, tail = parse([b"data: a\n\n"])
    assert fields(fed[0]) == [("a", None, None)]
    assert tail == []
    assert parse([])[1] == []


def test_oversized_unterminated_event_raises() -> None:
    parser = SSEParser(max_event_bytes=64)
    assert parser.feed("data: 你好".encode()) == []
    with pytest.raises(UpstreamUnavailable) as info:
        for _ in range(20):
            parser.feed("世界".encode())
    assert info.value.status == 502


def test_oversized_in_one_read_raises() -> None:
    with pytest.raises(UpstreamUnavailable):
        SSEParser(max_event_bytes=64).feed(b"data: " + b"x" * 100)


def test_events_up_to_the_limit_pass() -> None:
    parser = SSEParser(max_event_bytes=64)
    body = "data: " + "字" * 19  # 6 + 57 bytes
    for _ in range(3):
        assert parser.feed(body.encode()) == []
        assert fields(parser.feed(b"\n\n")) == [("字" * 19, None, None)]


@pytest.mark.parametrize(
    "raw",
    [
        b"data: \xff\xfe\n\n",
        b"data: \xe4\xb8\n\n",  # a Chinese character cut short
        "data: 你好".encode("gbk") + b"\n\n",
    ],
)
def test_non_utf8_data_raises(raw: bytes) -> None:
    with pytest.raises(UpstreamUnavailable, match="UTF-8"):
        SSEParser().feed(raw)


def test_non_utf8_unterminated_data_raises_at_close() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: \xff") == []
    with pytest.raises(UpstreamUnavailable):
        parser.close()


def test_leading_bom_is_ignored() -> None:
    fed, _ = parse(["\ufeffdata: 你好\n\n".encode()])
    assert fields(fed[0]) == [("你好", None, None)]


# --- sse_batches and encode_data -------------------------------------------------------------


async def _aiter(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_sse_batches_group_events_per_read() -> None:
    data = encode(EVENTS[:3]) + b"data: tail"
    first_end = data.index(b"\n\n") + 2
    chunks = [data[: first_end + 3], data[first_end + 3 :]]
    batches = [fields(b) async for b in sse_batches(_aiter(chunks))]
    assert batches == [[EVENTS[0]], EVENTS[1:3], [("tail", None, None)]]


async def test_sse_batches_skip_reads_without_a_whole_event() -> None:
    data = encode(EVENTS[:2])
    chunks = [data[i : i + 1] for i in range(len(data))]
    batches = [fields(b) async for b in sse_batches(_aiter(chunks))]
    assert batches == [[EVENTS[0]], [EVENTS[1]]]


def test_encode_data_round_trips() -> None:
    payload = delta("你好 world").encode()
    fed, _ = parse([encode_data(payload)])
    assert [e.data for e in fed[0]] == [payload.decode()]
