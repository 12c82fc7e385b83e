"""A scripted streaming upstream for the stream-guard benchmark; it records when it sent what.

``POST /v1/chat/completions`` (any body) answers an SSE stream of ``chat.completion.chunk``
events: a role chunk at once, then content deltas on a fixed schedule (delta ``i`` is due
``(i + 1) * interval`` after the request arrived, so sleeps do not drift), a ``stop`` chunk and
``data: [DONE]``. Request headers shape it:

* ``x-bench-id`` (int, required): names the trace, and seeds the text (:func:`script`);
* ``x-bench-deltas`` (default 300), ``x-bench-interval-ms`` (default 20);
* ``x-bench-stop-at`` (default -1, none): the delta that completes a lexicon term (see
  :data:`TERMS`); the stream goes on with benign text after it, until the client goes away.

For every stream it records, with ``time.monotonic_ns()`` (CLOCK_MONOTONIC, shared by all
processes of the host), when each delta was handed to the socket and when the client side of
the connection closed (EOF or reset while the stream was still running). ``GET /bench/traces``
returns the traces of finished streams as JSON ``{id: {"sent": [ns, ...], "closed": ns | null,
"completed": bool}}`` and forgets them; ``GET /v1/models`` answers for readiness checks.

CLI: ``python -m benchmarks.stream_upstream --port N [--host 127.0.0.1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import cast

import httptools
import uvloop

__all__ = ["TERMS", "Trace", "main", "script", "term_span"]

_ID = "chatcmpl-bench"
_MODEL = "bench-gpt"
_CREATED = 1_700_000_000
# Benign prose for the deltas: English words for even stream ids, two-character Chinese pieces
# for odd ones. No digits (PII patterns) and no lexicon terms.
_EN_TEXT = (
    "Spring in Hangzhou is mild and often rainy, so pack a light jacket and comfortable shoes. "
    "The paths around the lake are flat and shaded by willows, which makes them pleasant for "
    "children and grandparents alike. In the morning, the tea villages in the western hills are "
    "quiet; you can watch the leaves being dried by hand and taste a cup of fresh green tea. "
    "For lunch, small family restaurants near the market serve noodles, dumplings and fish "
    "cooked with vinegar. On a rainy afternoon, the silk museum and the tea museum are both "
    "free, close to each other, and have gardens where you can rest under a roof. In the "
    "evening, a slow boat across the lake shows the pagoda lit against the hills, and the night "
    "market sells sweet rice cakes, roasted chestnuts and lanterns that children love."
)
_EN_SENTENCES = [t + "." for t in _EN_TEXT.rstrip(".").split(". ")]
_ZH_TEXT = (
    "杭州的春天气候温和，经常下小雨，所以请带一件薄外套和一双舒服的鞋。西湖边的小路平坦，"
    "柳树成荫，老人和孩子都可以慢慢散步。早上，西边山里的茶村很安静，可以看茶农手工炒茶，"
    "再喝一杯新鲜的绿茶。中午，市场附近的小饭馆有面条、饺子和醋鱼。下雨的下午，丝绸博物馆"
    "和茶叶博物馆都免费开放，离得也近，馆里有可以避雨休息的庭院。傍晚坐船游湖，能看到山前"
    "亮起灯的宝塔，夜市里还有甜年糕、糖炒栗子和孩子们喜欢的灯笼。"
)
_ZH_SENTENCES = [t + "。" for t in _ZH_TEXT.rstrip("。").split("。")]
#: (first part, rest) of a term the bundled default policy blocks on output (A.1.d), per
#: language; the rest ends with a boundary character, so that the delta carrying it completes
#: the term (a term at the very end of the text may still grow into a longer word, and a
#: lexicon check waits for one more character before it decides).
TERMS = {"en": (" build a pi", "pe bomb,"), "zh": ("制作管", "状炸弹，")}

DEFAULT_DELTAS = 300
DEFAULT_INTERVAL_MS = 20.0
MAX_DELTAS = 100_000


def script(stream_id: int, deltas: int, stop_at: int = -1) -> list[str]:
    """The content deltas of stream ``stream_id``; with ``stop_at >= 1``, deltas ``stop_at - 1``
    and ``stop_at`` carry the two parts of :data:`TERMS` in the stream's language."""
    lang = "en" if stream_id % 2 == 0 else "zh"
    pieces = _pieces(stream_id, lang, deltas + (stream_id * 7) % 64)
    out = pieces[(stream_id * 7) % 64 :][:deltas]
    if lang == "en":
        out = [w if i == 0 else " " + w for i, w in enumerate(out)]
    if 1 <= stop_at < deltas:
        out[stop_at - 1], out[stop_at] = TERMS[lang]
    return out


def _pieces(stream_id: int, lang: str, count: int) -> list[str]:
    """English words or two-character Chinese pieces of the paragraph, its sentences in a new
    order on each pass (seeded by stream and pass): a text that repeated would let a model's
    cache answer for its windows, which real answers do not."""
    sentences = _EN_SENTENCES if lang == "en" else _ZH_SENTENCES
    out: list[str] = []
    cycle = 0
    while len(out) < count:
        order = list(sentences)
        random.Random(f"{stream_id}:{cycle}").shuffle(order)
        if lang == "en":
            out += " ".join(order).split(" ")
        else:
            text = "".join(order)
            out += [text[i : i + 2] for i in range(0, len(text), 2)]
        cycle += 1
    return out[:count]


def term_span(stream_id: int, deltas: int, stop_at: int) -> tuple[int, int]:
    """Character offsets ``[start, end)`` of the term in the stream's text (boundary excluded)."""
    texts = script(stream_id, deltas, stop_at)
    first, rest = TERMS["en" if stream_id % 2 == 0 else "zh"]
    before = sum(len(t) for t in texts[: stop_at - 1])
    start = before + len(first) - len(first.lstrip())
    return start, before + len(first) + len(rest.rstrip(" ,，"))


@dataclass
class Trace:
    sent: list[int] = field(default_factory=list)
    closed: int | None = None
    completed: bool = False


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _event(delta: dict[str, str], finish: str | None = None) -> bytes:
    chunk = {
        "id": _ID,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": _MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return _http_chunk(b"data: " + _dumps(chunk) + b"\n\n")


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _head(status: bytes, ctype: bytes, body: bytes | None) -> bytes:
    framing = b"transfer-encoding: chunked" if body is None else b"content-length: %d" % len(body)
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\n%s\r\n\r\n%s" % (status, ctype, framing, body or b"")


class _Request:
    __slots__ = ("headers", "method", "url")

    def __init__(self) -> None:
        self.url = b""
        self.method = b""
        self.headers: dict[bytes, str] = {}


class _Connection(asyncio.Protocol):
    """One client connection; requests on it are answered in order."""

    def __init__(self, traces: dict[int, Trace], done: dict[int, Trace]) -> None:
        self._traces = traces
        self._done = done
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._req = _Request()
        self._pending: deque[_Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._current: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def eof_received(self) -> bool | None:
        self._client_gone()
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._client_gone()
        self._transport = None
        if self._task is not None:
            self._task.cancel()

    def _client_gone(self) -> None:
        now = time.monotonic_ns()
        if self._current is not None:
            trace = self._traces.pop(self._current, None)
            if trace is not None and trace.closed is None:
                trace.closed = now
                self._done[self._current] = trace
            self._current = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(_head(b"400 Bad Request", b"application/json", b"{}"))
            if self._transport is not None:
                self._transport.close()

    def on_message_begin(self) -> None:
        self._req = _Request()

    def on_url(self, url: bytes) -> None:
        self._req.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname.startswith(b"x-bench-"):
            self._req.headers[lname] = value.decode("latin-1")

    def on_message_complete(self) -> None:
        self._req.method = self._parser.get_method()
        if self._task is None:
            self._handle(self._req)
        else:
            self._pending.append(self._req)

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _handle(self, req: _Request) -> None:
        path = req.url.split(b"?", 1)[0]
        if req.method == b"POST" and path == b"/v1/chat/completions":
            try:
                shape = _shape(req.headers)
            except (KeyError, ValueError):
                self._write(_head(b"400 Bad Request", b"application/json", b'{"error":"x-bench-*"}'))
                return
            self._task = asyncio.get_running_loop().create_task(self._stream(*shape))
            return
        if req.method == b"GET" and path == b"/bench/traces":
            body = _dumps({str(k): vars(t) for k, t in self._done.items()})
            self._done.clear()
            self._write(_head(b"200 OK", b"application/json", body))
        elif req.method == b"GET" and path == b"/v1/models":
            body = _dumps({"object": "list", "data": [{"id": _MODEL, "object": "model"}]})
            self._write(_head(b"200 OK", b"application/json", body))
        else:
            self._write(_head(b"404 Not Found", b"application/json", b"{}"))

    async def _stream(self, stream_id: int, deltas: int, interval_s: float, stop_at: int) -> None:
        loop = asyncio.get_running_loop()
        trace = self._traces[stream_id] = Trace()
        self._current = stream_id
        start = loop.time()
        self._write(_head(b"200 OK", b"text/event-stream", None) + _event({"role": "assistant"}))
        for i, text in enumerate(script(stream_id, deltas, stop_at)):
            await asyncio.sleep(max(0.0, start + (i + 1) * interval_s - loop.time()))
            if self._transport is None or self._current != stream_id:
                return
            payload = _event({"content": text})
            trace.sent.append(time.monotonic_ns())
            self._write(payload)
        self._write(_event({}, "stop") + _http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        trace.completed = True
        self._done[stream_id] = self._traces.pop(stream_id, trace)
        self._current = None
        self._task = None
        while self._pending and self._task is None and self._transport is not None:
            self._handle(self._pending.popleft())


def _shape(headers: dict[bytes, str]) -> tuple[int, int, float, int]:
    deltas = int(headers.get(b"x-bench-deltas", DEFAULT_DELTAS))
    interval_ms = float(headers.get(b"x-bench-interval-ms", DEFAULT_INTERVAL_MS))
    stop_at = int(headers.get(b"x-bench-stop-at", -1))
    return int(headers[b"x-bench-id"]), min(max(deltas, 0), MAX_DELTAS), max(interval_ms, 0.0) / 1000, stop_at


async def serve(host: str, port: int, lifetime_s: float = 3600.0) -> None:
    """Serve until SIGTERM/SIGINT or ``lifetime_s`` elapses (a safety net against orphans)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(lifetime_s, stop.set)
    traces: dict[int, Trace] = {}
    done: dict[int, Trace] = {}
    server = await loop.create_server(lambda: _Connection(traces, done), host, port, backlog=1024)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lifetime", type=float, default=3600.0, help="exit after this many seconds")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port, args.lifetime))


if __name__ == "__main__":
    main()
