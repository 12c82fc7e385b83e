"""Closed-loop load generator: C workers, each sending its next request when the last one is read.

After ``warmup`` seconds, every response *completed* in the next ``seconds`` is counted: req/s,
p50/p90/p99 of its latency (request written -> whole body read), errors (non-200, reset,
timeout); for streams also time to first body byte and whether ``data: [DONE]`` arrived.

Three clients, same numbers out:

* ``raw`` (default): asyncio protocol + httptools on uvloop, one keep-alive connection per worker,
  the request pre-encoded once. Cheapest Python client there is; it reports TTFB and [DONE].
* ``aiohttp``: one ``aiohttp.ClientSession``, the usual Python choice, for comparison.
* ``wrk``: the C tool (``apt-get install -y wrk``) with a Lua POST script; no TTFB / [DONE]
  check. Used only when asked for; when it is missing the harness falls back to ``raw``.

Why ``raw`` is the default (``python -m benchmarks.clients``, floor at c=32, 6 rounds x 3 s,
clients rotated per round, medians; 2-core AMD EPYC, 2026-11-22, other users' tests running):

    client   mode    floor req/s  spread  client CPU/req
    raw      plain   2,536        25 %    59 us
    aiohttp  plain   1,984        84 %    188 us
    wrk      plain   2,504        23 %    37 us
    raw      stream  1,109        20 %    91 us
    aiohttp  stream  1,004        73 %    242 us
    wrk      stream  1,042        12 %    56 us

The floor reached the same req/s under ``raw`` and ``wrk`` (within noise); ``wrk`` costs
~20 us/req less, i.e. ~0.05 of a core at the floor's rate, but cannot time the first byte or
check ``[DONE]``. ``aiohttp`` costs 3x the CPU, which shows as a slower, less steady floor.

CLI: ``python -m benchmarks.loadgen URL [-c 32] [-t 3] [--warmup 0.5] [--stream] [--client raw]
[--json]``; URL is the full ``.../v1/chat/completions`` address.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop

__all__ = ["LoadResult", "LoadSpec", "Window", "chat_request_body", "percentile", "raw_post", "run_load"]

SYSTEM_PROMPT = "You are a helpful travel assistant. Answer briefly, politely and in plain language."
USER_PROMPT = (
    "Could you suggest a relaxed three-day plan for a family trip to Hangzhou in spring? We enjoy "
    "parks, tea houses and small museums. 我们想在西湖边散步，也想去茶园喝龙井茶。"
    "Please include lunch breaks, short walks and one rainy-day idea."
)
DONE_MARK = b"data: [DONE]"
#: Replaced by a request counter in every request, so that each user prompt is new to the
#: gateway (only the system prompt repeats, as in real traffic) and no cache flatters it.
UNIQUE_MARK = b"000000000"
_counter = itertools.count(1)


def unique(request: bytes) -> bytes:
    """The request with its marker replaced by the next counter value (same length)."""
    return request.replace(UNIQUE_MARK, b"%09d" % next(_counter), 1)


def chat_request_body(stream: bool) -> bytes:
    """A typical chat request: a system and a user message (~300 chars, English and Chinese)."""
    user = f"[ref {UNIQUE_MARK.decode()}] {USER_PROMPT}"
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
    payload: dict[str, object] = {
        "model": "mock-gpt",
        "messages": messages,
        "temperature": 0.7,
        "max_tokens": 256,
    }
    if stream:
        payload["stream"] = True
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class LoadSpec:
    """What to send, how hard and for how long."""

    url: str
    concurrency: int = 32
    seconds: float = 3.0
    warmup: float = 0.5
    stream: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 10.0


@dataclass
class LoadResult:
    """Figures over the measured window (latencies in ms; ``None`` where the client cannot tell)."""

    client: str
    concurrency: int
    stream: bool
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    ttfb_p50_ms: float | None = None
    ttfb_p99_ms: float | None = None
    missing_done: int | None = None
    cpu_s: float = 0.0
    cpu_us_per_req: float = 0.0


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Window:
    """Collects completions inside [start, end) (perf_counter_ns) and the CPU used meanwhile."""

    def __init__(self, spec: LoadSpec) -> None:
        now = time.perf_counter_ns()
        self.start = now + int(spec.warmup * 1e9)
        self.end = self.start + int(spec.seconds * 1e9)
        self.latencies: list[int] = []
        self.ttfbs: list[int] = []
        self.errors = 0
        self.missing_done = 0
        self.cpu_start = time.process_time()
        loop = asyncio.get_running_loop()
        loop.call_later(spec.warmup, self._mark_cpu)

    def _mark_cpu(self) -> None:
        self.cpu_start = time.process_time()

    def record(self, t0: int, t1: int, ok: bool, ttfb: int = 0, done: bool = True) -> None:
        if not self.start <= t1 < self.end:
            return
        if not ok:
            self.errors += 1
            return
        self.latencies.append(t1 - t0)
        if ttfb:
            self.ttfbs.append(ttfb - t0)
        if not done:
            self.missing_done += 1

    def result(self, client: str, spec: LoadSpec, cpu_s: float) -> LoadResult:
        lat = sorted(v / 1e6 for v in self.latencies)
        ttfb = sorted(v / 1e6 for v in self.ttfbs)
        n = len(lat)
        return LoadResult(
            client=client,
            concurrency=spec.concurrency,
            stream=spec.stream,
            seconds=spec.seconds,
            requests=n,
            rps=n / spec.seconds,
            p50_ms=percentile(lat, 50),
            p90_ms=percentile(lat, 90),
            p99_ms=percentile(lat, 99),
            errors=self.errors,
            ttfb_p50_ms=percentile(ttfb, 50) if spec.stream else None,
            ttfb_p99_ms=percentile(ttfb, 99) if spec.stream else None,
            missing_done=self.missing_done if spec.stream else None,
            cpu_s=cpu_s,
            cpu_us_per_req=cpu_s / n * 1e6 if n else 0.0,
        )


# --- raw client: asyncio protocol + httptools --------------------------------------------------


class _RawConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[int] | None = None
        self.first_body = 0
        self.tail = b""
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionResetError("connection closed"))

    @property
    def usable(self) -> bool:
        return self._transport is not None and self.keep_alive

    def send(self, data: bytes) -> asyncio.Future[int]:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.first_body = 0
        self.tail = b""
        self._transport.write(data)
        return self._waiter

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(exc)
            self.abort()

    def on_body(self, body: bytes) -> None:
        if not self.first_body:
            self.first_body = time.perf_counter_ns()
        self.tail = (self.tail + body)[-64:]

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._parser.get_status_code())


def raw_post(url: str, body: bytes, headers: Mapping[str, str], accept: str) -> tuple[str, int, bytes]:
    """Host, port and the bytes of an HTTP/1.1 JSON POST to ``url``, for a raw connection."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"host: {host}:{port}",
        "content-type: application/json",
        f"accept: {accept}",
        f"content-length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return host, port, ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _raw_connect(host: str, port: int) -> _RawConnection:
    _, conn = await asyncio.get_running_loop().create_connection(_RawConnection, host, port)
    return conn


async def _raw_worker(spec: LoadSpec, window: Window, host: str, port: int, request: bytes) -> None:
    loop = asyncio.get_running_loop()
    conn: _RawConnection | None = None
    while time.perf_counter_ns() < window.end:
        t0 = time.perf_counter_ns()
        if conn is None or not conn.usable:
            if conn is not None:
                conn.abort()
            try:
                async with asyncio.timeout(spec.timeout):
                    conn = await _raw_connect(host, port)
            except (TimeoutError, OSError):
                window.record(t0, time.perf_counter_ns(), ok=False)
                conn = None
                await asyncio.sleep(0.05)
                continue
        timer = loop.call_later(spec.timeout, conn.abort)
        try:
            status = await conn.send(unique(request))
        except (OSError, httptools.HttpParserError):
            window.record(t0, time.perf_counter_ns(), ok=False)
            conn = None
            continue
        finally:
            timer.cancel()
        done = not spec.stream or DONE_MARK in conn.tail
        window.record(t0, time.perf_counter_ns(), ok=status == 200, ttfb=conn.first_body, done=done)
    if conn is not None:
        conn.abort()


# --- aiohttp client ------------------------------------------------------------------------------


async def _aiohttp_worker(spec: LoadSpec, window: Window, session: object, body: bytes) -> None:
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)
    headers = {"content-type": "application/json", **spec.headers}
    while time.perf_counter_ns() < window.end:
        t0 = time.perf_counter_ns()
        first, tail, status = 0, b"", 0
        try:
            async with session.post(spec.url, data=unique(body), headers=headers) as resp:
                status = resp.status
                async for chunk in resp.content.iter_any():
                    first = first or time.perf_counter_ns()
                    tail = (tail + chunk)[-64:]
        except (TimeoutError, aiohttp.ClientError, OSError):
            window.record(t0, time.perf_counter_ns(), ok=False)
            continue
        done = not spec.stream or DONE_MARK in tail
        window.record(t0, time.perf_counter_ns(), ok=status == 200, ttfb=first, done=done)


async def _run_python(spec: LoadSpec, client: str) -> LoadResult:
    body = chat_request_body(spec.stream)
    window = Window(spec)
    budget = spec.warmup + spec.seconds + spec.timeout + 2
    if client == "raw":
        host, port, request = raw_post(spec.url, body, spec.headers, "application/json, text/event-stream")
        tasks = [
            asyncio.create_task(_raw_worker(spec, window, host, port, request))
            for _ in range(spec.concurrency)
        ]
        _, pending = await asyncio.wait(tasks, timeout=budget)
    else:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=spec.concurrency)
        timeout = aiohttp.ClientTimeout(total=spec.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks = [
                asyncio.create_task(_aiohttp_worker(spec, window, session, body))
                for _ in range(spec.concurrency)
            ]
            _, pending = await asyncio.wait(tasks, timeout=budget)
    cpu_s = time.process_time() - window.cpu_start
    for task in pending:
        task.cancel()
    return window.result(client, spec, cpu_s)


def run_load(spec: LoadSpec, client: str = "raw") -> LoadResult:
    """Run one closed-loop measurement in this process (starts its own uvloop event loop)."""
    if client == "wrk":
        from benchmarks._wrk import run_wrk

        return run_wrk(spec)
    return uvloop.run(_run_python(spec, client))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="full URL, e.g. http://127.0.0.1:8000/v1/chat/completions")
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("-t", "--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("-H", "--header", action="append", default=[], help="'name: value', repeatable")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument("--client", choices=("raw", "aiohttp", "wrk"), default="raw")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    spec = LoadSpec(
        url=args.url,
        concurrency=args.concurrency,
        seconds=min(args.seconds, 600.0),
        warmup=args.warmup,
        stream=args.stream,
        headers={k.strip(): v.strip() for k, v in headers.items()},
        timeout=args.timeout,
    )
    result = run_load(spec, args.client)
    if args.json:
        sys.stdout.write(json.dumps(asdict(result)) + "\n")
    else:
        r = result
        sys.stdout.write(
            f"{r.client} c={r.concurrency} stream={r.stream}: {r.rps:.0f} req/s, p50 {r.p50_ms:.2f} ms, "
            f"p90 {r.p90_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, errors {r.errors}, "
            f"cpu {r.cpu_us_per_req:.0f} us/req\n"
        )


if __name__ == "__main__":
    main()
