"""Upstream clients compared: httpx's default transport, ``httpx_aiohttp.HttpxAiohttpClient``
(same httpx API, aiohttp below) and ``native``, the gateway's own aiohttp client.

Both clients talk to the mock upstream (a subprocess) from this process, in a closed loop at
concurrency 1, 32 and 128, plain and streamed, over several rounds; the two transports alternate
within each round (and which goes first alternates between rounds). Reported per row: medians
over rounds of req/s, p50, p99 and the client's CPU per request -- on a 2-core box the proxy's
CPU per upstream call is what limits the gateway, so that column matters most.

CLI: ``python -m benchmarks.transport [--seconds 2] [--rounds 3] [--out FILE]``.
The gateway's upstream client was picked from this table (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import uvloop
from httpx_aiohttp import HttpxAiohttpClient

from benchmarks import _procs
from benchmarks.loadgen import DONE_MARK, LoadResult, LoadSpec, Window, chat_request_body
from gateway.config import UpstreamConfig
from gateway.errors import GatewayError
from gateway.upstream import UpstreamClient

__all__ = ["main", "measure"]

TRANSPORTS = ("httpx", "aiohttp", "native")
CONCURRENCIES = (1, 32, 128)
_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=256)


def _client(transport: str, timeout: float) -> Any:
    if transport == "native":  # the gateway's own client: aiohttp without the httpx layer
        return _Native(UpstreamClient(UpstreamConfig(base_url="http://127.0.0.1/v1", max_connections=256)))
    kind = httpx.AsyncClient if transport == "httpx" else HttpxAiohttpClient
    return kind(limits=_LIMITS, timeout=httpx.Timeout(timeout))


class _Native:
    def __init__(self, client: UpstreamClient) -> None:
        self.client = client

    async def __aenter__(self) -> _Native:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()


async def _native_worker(native: _Native, spec: LoadSpec, window: Window, body: bytes) -> None:
    headers = {"content-type": "application/json"}
    while time.perf_counter_ns() < window.end:
        t0 = time.perf_counter_ns()
        first, tail = 0, b""
        try:
            resp = await native.client.send("POST", spec.url, headers, body)
            async for chunk in resp.aiter_bytes():
                first = first or time.perf_counter_ns()
                tail = (tail + chunk)[-64:]
            await resp.aclose()
        except GatewayError:
            window.record(t0, time.perf_counter_ns(), ok=False)
            continue
        done = not spec.stream or DONE_MARK in tail
        window.record(t0, time.perf_counter_ns(), ok=resp.status_code == 200, ttfb=first, done=done)


async def _worker(client: httpx.AsyncClient, spec: LoadSpec, window: Window, body: bytes) -> None:
    headers = {"content-type": "application/json"}
    while time.perf_counter_ns() < window.end:
        t0 = time.perf_counter_ns()
        first, tail, status = 0, b"", 0
        try:
            if spec.stream:
                async with client.stream("POST", spec.url, content=body, headers=headers) as resp:
                    status = resp.status_code
                    async for chunk in resp.aiter_raw():
                        first = first or time.perf_counter_ns()
                        tail = (tail + chunk)[-64:]
            else:
                resp = await client.post(spec.url, content=body, headers=headers)
                status = resp.status_code
        except httpx.HTTPError:
            window.record(t0, time.perf_counter_ns(), ok=False)
            continue
        done = not spec.stream or DONE_MARK in tail
        window.record(t0, time.perf_counter_ns(), ok=status == 200, ttfb=first, done=done)


async def measure(client: Any, name: str, spec: LoadSpec) -> LoadResult:
    """One closed-loop measurement with an existing client (its pool stays warm across calls)."""
    window = Window(spec)
    body = chat_request_body(spec.stream)
    worker: Any = _native_worker if isinstance(client, _Native) else _worker
    tasks = [asyncio.create_task(worker(client, spec, window, body)) for _ in range(spec.concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=spec.warmup + spec.seconds + spec.timeout + 2)
    cpu_s = time.process_time() - window.cpu_start
    for task in pending:
        task.cancel()
    return window.result(name, spec, cpu_s)


async def _rounds(url: str, args: argparse.Namespace) -> list[dict[str, dict[str, Any]]]:
    rounds = []
    for index in range(args.rounds):
        order = TRANSPORTS[index % 3 :] + TRANSPORTS[: index % 3]  # rotate who goes first
        results: dict[str, dict[str, Any]] = {}
        for conc in CONCURRENCIES:
            for stream in (False, True):
                for name in order:
                    spec = LoadSpec(url, conc, args.seconds, args.warmup, stream, timeout=10.0)
                    async with _client(name, spec.timeout) as client:
                        result = await measure(client, name, spec)
                    results[_key(name, stream, conc)] = asdict(result)
        rounds.append(results)
        sys.stderr.write(f"round {index + 1}/{args.rounds} done\n")
    return rounds


def _key(transport: str, stream: bool, conc: int) -> str:
    return f"{transport}/{'stream' if stream else 'plain'}/c{conc}"


def _table(rounds: list[dict[str, dict[str, Any]]]) -> tuple[str, list[dict[str, Any]]]:
    def med(key: str, field: str) -> float:
        return float(statistics.median(r[key][field] for r in rounds))

    head = " | ".join(f"{t} {f}" for f in ("req/s", "p50 ms", "CPU µs/req") for t in TRANSPORTS)
    lines = [f"| mode | c | {head} | errors |", "|---|---:|" + "---:|" * (3 * len(TRANSPORTS) + 1)]
    rows = []
    for stream in (False, True):
        for conc in CONCURRENCIES:
            keys = {t: _key(t, stream, conc) for t in TRANSPORTS}
            errors = sum(r[k]["errors"] + (r[k]["missing_done"] or 0) for r in rounds for k in keys.values())
            row: dict[str, Any] = {"mode": "stream" if stream else "plain", "c": conc, "errors": errors}
            for name, key in keys.items():
                for field in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req"):
                    row[f"{name}_{field}"] = med(key, field)
            rows.append(row)
            cells = [f"{row[f'{t}_rps']:,.0f}" for t in TRANSPORTS]
            cells += [f"{row[f'{t}_p50_ms']:.2f}" for t in TRANSPORTS]
            cells += [f"{row[f'{t}_cpu_us_per_req']:.0f}" for t in TRANSPORTS]
            lines.append(f"| {row['mode']} | {conc} | {' | '.join(cells)} | {errors} |")
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the rounds and the table as JSON")
    args = parser.parse_args(argv)
    if not (0 < args.seconds <= 30 and 0 <= args.warmup <= 10 and 1 <= args.rounds <= 10):
        parser.error("need 0 < --seconds <= 30, 0 <= --warmup <= 10, 1 <= --rounds <= 10")
    with tempfile.TemporaryDirectory(prefix="modgate-transport-") as tmp, _procs.Children(Path(tmp)) as kids:
        url = _procs.start_mock_upstream(kids) + "/chat/completions"
        rounds = uvloop.run(_rounds(url, args))
    table, rows = _table(rounds)
    sys.stdout.write(
        f"## httpx transports vs the mock upstream, {len(rounds)} rounds x {args.seconds:g} s (medians)\n\n"
        f"{table}\n"
    )
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "rounds": rounds}, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
