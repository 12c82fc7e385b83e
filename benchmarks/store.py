"""Incidents per second each store backend sustains: ``python -m benchmarks.store``.

``--writers`` concurrent coroutines (requests being answered at once) each record incidents
as the gateway does (one awaited write per decision, durable before the response; ``+report``:
an incident with its report and outbox event in one atomic write), for
``--seconds`` per round; medians over ``--rounds``. SQLite runs on a file in a temporary
folder on this machine's disk (WAL, synchronous=FULL); Redis on 127.0.0.1:6379, database 14,
under a key prefix deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from gateway.incidents import Incident, new_id
from gateway.records import Report
from gateway.store.base import Store
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SQLiteStore

RESULTS = Path(__file__).parent / "results"
REDIS_URL = "redis://127.0.0.1:6379/14"


def sample() -> Incident:
    return Incident(
        id=new_id("inc"),
        created_at=time.time(),
        request_id=new_id("req"),
        tenant="default",
        route="default",
        model="qwen-max",
        direction="output",
        channel="content",
        action="block",
        risks=[{"code": "A.1.d", "score": 0.97, "classifier": "guard", "action": "block"}],
        policy="default",
        policy_version="0123456789abcdef",
        excerpt="好的，下面是……[一段约两百字的节选，电话138****5678] " * 4,
        offsets=[[12, 40]],
    )


async def write_one(store: Store, with_report: bool) -> None:
    incident = sample()
    if not with_report:
        await store.incidents.record(incident)
        return
    report = Report(
        new_id("rpt"), incident.id, "queued", time.time(), time.time(), {"excerpt": incident.excerpt}
    )
    await store.reports.enqueue(report, incident)


async def sustain(store: Store, writers: int, seconds: float, with_report: bool) -> dict[str, float]:
    done = 0
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def writer() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await write_one(store, with_report)
            latencies.append(time.perf_counter() - t0)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "incidents_per_s": done / wall,
        "write_p50_ms": latencies[len(latencies) // 2] * 1000,
        "write_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def run_backend(
    name: str, writers: int, seconds: float, rounds: int, with_report: bool
) -> dict[str, Any]:
    results = []
    for _ in range(rounds):
        if name == "sqlite":
            folder = tempfile.mkdtemp(prefix="modgate-bench-")
            store: Store = SQLiteStore(f"sqlite:///{folder}/bench.db")
            prefix = ""
        else:
            prefix = f"modgate-bench-{uuid.uuid4().hex}:"
            store = RedisStore(REDIS_URL, prefix=prefix)
        await store.open()
        try:
            results.append(await sustain(store, writers, seconds, with_report))
        finally:
            await store.close()
            if prefix:
                client = aioredis.from_url(REDIS_URL)
                keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
                if keys:
                    await client.delete(*keys)
                await client.aclose()
    return {k: round(statistics.median(r[k] for r in results), 2) for k in results[0]} | {"rounds": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,redis")
    args = parser.parse_args()
    report: dict[str, Any] = {"benchmark": "store", "writers": args.writers, "seconds": args.seconds}
    for name in args.backends.split(","):
        for with_report in (False, True):
            key = f"{name}+report" if with_report else name
            report[key] = asyncio.run(run_backend(name, args.writers, args.seconds, args.rounds, with_report))
            summary = {k: v for k, v in report[key].items() if k != "rounds"}
            print(key, json.dumps(summary))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"store-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()
