"""A cheap streaming client that stamps every SSE event with its arrival time.

One asyncio protocol per stream (httptools, as ``loadgen``'s raw client): the arrival time is
``time.monotonic_ns()`` taken in ``data_received``, before any parsing, so it is the moment the
bytes left the socket buffer, and the clock is the one the scripted upstream stamps its sends
with. Events are kept as raw ``data:`` payloads; JSON is decoded after the stream, outside the
timed path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import httptools

from benchmarks.loadgen import UNIQUE_MARK, chat_request_body, raw_post

__all__ = ["StreamRecord", "run_streams"]


@dataclass
class StreamRecord:
    """What one stream delivered, as it arrived."""

    stream_id: int
    #: monotonic ns when the request was handed to the socket (the connection already open).
    t_request: int = 0
    #: (arrival monotonic ns, payload of one ``data:`` line) per event, in order.
    events: list[tuple[int, bytes]] = field(default_factory=list)
    status: int = 0
    error: str | None = None


class _StreamConnection(asyncio.Protocol):
    def __init__(self, record: StreamRecord) -> None:
        self.record = record
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._now = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self.done.done():
            self.done.set_exception(exc or ConnectionResetError("connection closed mid-stream"))

    def send(self, data: bytes) -> None:
        assert self._transport is not None
        self.record.t_request = time.monotonic_ns()
        self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._now = time.monotonic_ns()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.done.done():
                self.done.set_exception(exc)

    def on_headers_complete(self) -> None:
        self.record.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._buf += body
        *blocks, self._buf = self._buf.split(b"\n\n")
        for block in blocks:
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    self.record.events.append((self._now, line[5:].strip()))

    def on_message_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _one(
    url: str, record: StreamRecord, headers: Mapping[str, str], delay_s: float, timeout_s: float
) -> None:
    await asyncio.sleep(delay_s)
    # A new user prompt per stream, so the gateway's input check never answers from a cache.
    body = chat_request_body(stream=True).replace(UNIQUE_MARK, b"%09d" % record.stream_id, 1)
    host, port, request = raw_post(url, body, headers, "text/event-stream")
    loop = asyncio.get_running_loop()
    conn: _StreamConnection | None = None
    try:
        async with asyncio.timeout(timeout_s):
            _, conn = await loop.create_connection(lambda: _StreamConnection(record), host, port)
            conn.send(request)
            await conn.done
    except (TimeoutError, OSError, httptools.HttpParserError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        if conn is not None:
            conn.close()


async def run_streams(
    url: str,
    ids: Sequence[int],
    headers: Mapping[str, str],
    stagger_s: float,
    timeout_s: float,
) -> list[StreamRecord]:
    """Open one stream per id at once (stream ``k`` starts ``k * stagger_s / len(ids)`` late,
    so that concurrent streams are out of phase as real ones are) and wait for all of them."""
    records = [StreamRecord(i) for i in ids]
    step = stagger_s / max(len(ids), 1)
    await asyncio.gather(
        *(
            _one(url, r, {**headers, "x-bench-id": str(r.stream_id)}, k * step, timeout_s)
            for k, r in enumerate(records)
        )
    )
    return records
