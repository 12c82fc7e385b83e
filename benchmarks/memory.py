"""Resident memory of the gateway with a policy, at rest and under concurrent screening:
``python -m benchmarks.memory``.

Starts ``modgate serve`` (the bundled default policy unless ``--policy``; its model loaded and
warmed) as a child process, reads its RSS once ready, then sends ``--rounds`` rounds of
``--concurrency`` concurrent ``/v1/moderations`` requests, each with one long English and one long
Chinese text (windowed by the model, so every request runs several forward passes), and reads
the peak (``VmHWM`` of ``/proc/PID/status``). The issue's target: under 1.5 GB. Writes
``benchmarks/results/memory-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks import _procs

RESULTS = Path(__file__).parent / "results"
TARGET_GB = 1.5

EN = (
    "I want to understand how the city council's budget process works, why the library hours were "
    "cut again this year, and what residents can do to be heard before the next vote. "
)
ZH = "我想了解一下我们小区的垃圾分类规定，以及为什么最近物业费又涨了，有没有什么办法可以和物业协商解决。"


def memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, in kB, from ``/proc/PID/status``."""
    return parse_status(Path(f"/proc/{pid}/status").read_text())


def parse_status(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            number, unit = value.split()
            if unit != "kB":
                raise ValueError(f"unexpected unit {unit!r} for {key}")
            out[key] = int(number)
    if set(out) != {"VmRSS", "VmHWM"}:
        raise ValueError("no VmRSS/VmHWM in the status text")
    return out


def texts(chars: int) -> list[str]:
    """One English and one Chinese benign text of ``chars`` characters."""
    return [(base * (chars // len(base) + 1))[:chars] for base in (EN, ZH)]


async def load(base: str, rounds: int, concurrency: int, chars: int) -> dict[str, int]:
    """Send the rounds; count texts flagged by a classifier (none should be: benign texts) and
    texts failed closed (``X.classifier_error``: the model missed the policy's timeout)."""
    counts = {"texts": 0, "flagged": 0, "classifier_errors": 0}
    pair = texts(chars)
    async with httpx.AsyncClient(timeout=300) as client:
        for r in range(rounds):
            replies = await asyncio.gather(*[
                client.post(f"{base}/v1/moderations", json={"input": [f"{r}-{i} {t}" for t in pair]})
                for i in range(concurrency)
            ])  # fmt: skip
            for reply in replies:
                reply.raise_for_status()
                for result in reply.json()["results"]:
                    codes = {risk["code"] for risk in result.get("modgate", {}).get("risks", [])}
                    counts["texts"] += 1
                    counts["classifier_errors"] += "X.classifier_error" in codes
                    counts["flagged"] += bool(codes - {"X.classifier_error"})
    return counts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.splitlines()[0])
    p.add_argument("--policy", type=Path, help="a policy file (default: the bundled default policy)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--chars", type=int, default=1500, help="characters of each text")
    p.add_argument(
        "--ready-timeout", type=float, default=600.0, help="seconds (a first start builds the model)"
    )
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modgate-mem-") as tmp, _procs.Children(Path(tmp)) as children:
        port = _procs.free_port()
        argv_ = ["gateway", "serve", "--upstream", "http://127.0.0.1:9/v1", "--host", _procs.HOST,
                 "--port", str(port), "--store", f"sqlite:///{tmp}/mem.db"]  # fmt: skip
        if args.policy:
            argv_ += ["--policy", str(args.policy)]
        child = children.start("gateway", _procs.python_module(*argv_), {"MODGATE_LOG_LEVEL": "warning"})
        base = f"http://{_procs.HOST}:{port}"
        _procs.wait_ready(child, f"{base}/readyz", timeout_s=args.ready_timeout)
        rest = memory_kb(child.proc.pid)
        counts = asyncio.run(load(base, args.rounds, args.concurrency, args.chars))
        after = memory_kb(child.proc.pid)
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "policy": str(args.policy or "default"),
        "rounds": args.rounds, "concurrency": args.concurrency,
        "chars_per_text": args.chars,
        "rest_rss_gb": round(rest["VmRSS"] / 2**20, 3), "peak_rss_gb": round(after["VmHWM"] / 2**20, 3),
        **counts, "target_gb": TARGET_GB,
    }  # fmt: skip
    print(
        f"RSS at rest {record['rest_rss_gb']} GB, peak {record['peak_rss_gb']} GB "
        f"(target < {TARGET_GB}: {'met' if record['peak_rss_gb'] < TARGET_GB else 'MISSED'}); "
        f"of {counts['texts']} benign texts, {counts['flagged']} flagged by a classifier and "
        f"{counts['classifier_errors']} failed closed on a classifier timeout or error"
    )
    path = args.out or RESULTS / f"memory-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    _procs.run_main(main)
