"""Which load generator disturbs the 2-core machine least? Measures each against the floor.

Starts the mock upstream and the floor, then over R rounds (clients in rotated order each round)
drives the floor at c=32, plain and streamed, with each client: ``raw`` (asyncio + httptools),
``aiohttp`` and ``wrk`` (if installed). Reported per client: median req/s the floor reached (a
client that steals less CPU lets the floor go faster), spread of req/s over rounds (steadiness,
as max/min - 1), the client's own CPU per request, and p50.

CLI: ``python -m benchmarks.clients [--seconds 3] [--rounds 5]``; the outcome is recorded in
``benchmarks/loadgen.py`` and ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks import _procs
from benchmarks.loadgen import LoadResult, LoadSpec, run_load

__all__ = ["main"]


def _start_floor(children: _procs.Children) -> str:
    upstream = _procs.start_mock_upstream(children)
    port = _procs.free_port()
    child = children.start(
        "floor", _procs.python_module("benchmarks.floor", "--upstream", upstream, "--port", str(port))
    )
    base = f"http://{_procs.HOST}:{port}"
    _procs.wait_ready(child, f"{base}/readyz")
    return f"{base}/v1/chat/completions"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    if not (0 < args.seconds <= 30 and 1 <= args.rounds <= 10):
        parser.error("need 0 < --seconds <= 30 and 1 <= --rounds <= 10")
    clients = ["raw", "aiohttp"] + (["wrk"] if shutil.which("wrk") else [])
    results: dict[tuple[str, bool], list[LoadResult]] = {}
    others: dict[tuple[str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="modgate-clients-") as tmp, _procs.Children(Path(tmp)) as kids:
        url = _start_floor(kids)
        for index in range(args.rounds):
            order = clients[index % len(clients) :] + clients[: index % len(clients)]
            for stream in (False, True):
                for client in order:
                    spec = LoadSpec(url, args.concurrency, args.seconds, warmup=1.0, stream=stream)
                    meter = _procs.CpuMeter(kids.pids())
                    results.setdefault((client, stream), []).append(run_load(spec, client))
                    others.setdefault((client, stream), []).append(meter.stop()["others_cores"])
            sys.stderr.write(f"round {index + 1}/{args.rounds} done\n")
    lines = [
        f"## load generators against the floor, c={args.concurrency}, {args.rounds} rounds x "
        f"{args.seconds:g} s (medians)\n",
        "| client | mode | floor req/s | spread (max/min - 1) | client CPU µs/req | p50 ms | errors "
        "| others' CPU (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (client, stream), runs in results.items():
        rps = [r.rps for r in runs]
        spread = max(rps) / min(rps) - 1 if min(rps) else float("inf")
        lines.append(
            f"| {client} | {'stream' if stream else 'plain'} | {statistics.median(rps):,.0f} | {spread:.1%} "
            f"| {statistics.median(r.cpu_us_per_req for r in runs):.0f} "
            f"| {statistics.median(r.p50_ms for r in runs):.2f} | {sum(r.errors for r in runs)} "
            f"| {statistics.median(others[client, stream]):.2f} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
