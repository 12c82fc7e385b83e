"""Server-sent events: bytes → events (batched per network read) and events → bytes.

Events are yielded in lists, one list per upstream read, so that the stream guard can check
everything that arrived together in one classifier pass instead of one pass per delta.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import UpstreamUnavailable

__all__ = [
    "MAX_EVENT_BYTES",
    "SSEEvent",
    "SSEParser",
    "encode_data",
    "event_bytes",
    "jsonl_batches",
    "next_batch",
    "sse_batches",
]

MAX_EVENT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One event. ``data`` joins multi-line data with ``\\n``; ``comment`` holds keep-alives."""

    data: str | None = None
    event: str | None = None
    comment: str | None = None
    raw: bytes = b""


class SSEParser:
    """Incremental parser: feed bytes, get complete events; ``close()`` flushes a final one."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buf = b""
        self._max = max_event_bytes
        self._skip_lf = False
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not self._started and chunk:
            self._started = True
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")  # the SSE spec strips a leading BOM
        if self._skip_lf and chunk:
            # The previous read ended in CR, already taken as a line end: this LF completes it.
            chunk = chunk[1:] if chunk.startswith(b"\n") else chunk
            self._skip_lf = False
        if b"\r" in chunk:
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + chunk
        events = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            block = buf[start:end]
            start = end + 2
            if block:
                events.append(_parse_block(block))
        self._buf = buf[start:]
        if len(self._buf) > self._max:
            raise UpstreamUnavailable("the upstream sent an oversized or unterminated stream event")
        return events

    def close(self) -> list[SSEEvent]:
        """End of input: an unterminated last event is still delivered (lenient upstreams)."""
        block, self._buf = self._buf.strip(b"\n"), b""
        return [_parse_block(block)] if block else []


def _parse_block(block: bytes) -> SSEEvent:
    data: list[str] = []
    event = comment = None
    for line in block.split(b"\n"):
        if line.startswith(b":"):
            comment = line[1:].decode("utf-8", "replace").strip()
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            try:
                data.append(value.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise UpstreamUnavailable("the upstream sent a stream event that is not UTF-8") from exc
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    return SSEEvent("\n".join(data) if data else None, event, comment, block + b"\n\n")


async def sse_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[SSEEvent]]:
    """Group the events of each upstream read; the final (maybe unterminated) one at EOF."""
    parser = SSEParser()
    async for chunk in chunks:
        events = parser.feed(chunk)
        if events:
            yield events
    tail = parser.close()
    if tail:
        yield tail


async def jsonl_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[SSEEvent]]:
    """JSON lines (``application/x-ndjson``): each non-blank line is one event's data, so the
    guard reads them as it reads SSE events."""
    buf = b""
    async for chunk in chunks:
        buf += chunk
        *lines, buf = buf.split(b"\n")
        if len(buf) > MAX_EVENT_BYTES:
            raise UpstreamUnavailable("the upstream sent an oversized or unterminated JSON line")
        events = [_line(line) for line in lines if line.strip()]
        if events:
            yield events
    if buf.strip():
        yield [_line(buf)]


def _line(line: bytes) -> SSEEvent:
    try:
        data = line.rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UpstreamUnavailable("the upstream sent a JSON line that is not UTF-8") from exc
    return SSEEvent(data, None, None, line.rstrip(b"\r") + b"\n")


async def next_batch(batches: AsyncIterator[list[SSEEvent]]) -> list[SSEEvent] | None:
    """The next batch, or None at the end (a value a task can return, unlike StopAsyncIteration)."""
    with contextlib.suppress(StopAsyncIteration):
        return await anext(batches)
    return None


def event_bytes(chunk: Mapping[str, Any]) -> bytes:
    """One typed event (Anthropic's, the Responses API's): the ``event:`` line names the data's
    ``type``."""
    return b"event: " + str(chunk.get("type", "")).encode() + b"\ndata: " + orjson.dumps(chunk) + b"\n\n"


def encode_data(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"
