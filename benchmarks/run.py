"""The benchmark, in one command: ``python -m benchmarks.run [--seconds S] [--rounds R] [--out FILE]``.

Starts, on free loopback ports, the mock upstream, the floor (bare FastAPI + aiohttp proxy) and
two gateways (``benchmarks/policies/passthrough.yaml``: no classifiers; the bundled default
policy: lexicon + patterns, no hit); waits for each to be ready; then, over R rounds, measures
every scenario -- target x {plain, stream} x {c=1, c=32} -- in a shuffled order per round
(interleaving spreads the drift of a shared machine over all targets). It prints a markdown
table with medians over rounds, the derived figures with PASS/FAIL against the targets, and
writes JSON to ``benchmarks/results/<UTC time>.json``. Children are stopped on exit, Ctrl-C,
SIGTERM and errors, and die with this process (PDEATHSIG) even if it is killed.

Targets (issue): gateway with lexicon + patterns, no hit, one worker, on this 2-core machine:
throughput at c=32 >= 0.75x the floor's; added latency p50 at c=1 <= 0.5 ms; streams at c=32
>= 0.6x the floor's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import _procs, _report
from benchmarks.loadgen import LoadSpec, run_load

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGETS = ("direct", "floor", "gw-pass", "gw-default")
POLICIES = {
    "gw-pass": HERE / "policies" / "passthrough.yaml",
    # The issue-2 targets are for "a lexicon + patterns policy": the default without its model.
    "gw-default": HERE / "policies" / "lexicon-patterns.yaml",
}
#: Per-scenario overhead besides warm-up and measuring (loop start, connects), for the time budget.
_OVERHEAD_S = 0.3


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_before": list(os.getloadavg()),
    }


def _code_version() -> dict[str, Any]:
    """The commit measured, and whether the gateway's code differed from it (uncommitted edits)."""

    def git(*argv: str) -> str:
        try:
            proc = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return proc.stdout.strip()

    dirty = git("status", "--porcelain", "--", "gateway", "classifiers", "policies")
    return {
        "git_head": git("rev-parse", "--short", "HEAD"),
        "gateway_uncommitted_files": len(dirty.splitlines()),
    }


def _start_targets(children: _procs.Children, args: argparse.Namespace, tmp: Path) -> dict[str, str]:
    """Start everything the chosen targets need; return target name -> chat completions URL."""
    upstream = _procs.start_mock_upstream(children)
    urls = {"direct": f"{upstream}/chat/completions"}
    started: list[tuple[str, _procs.Child, str]] = []
    if "floor" in args.targets:
        port = _procs.free_port()
        argv = _procs.python_module("benchmarks.floor", "--upstream", upstream, "--port", str(port))
        started.append(("floor", children.start("floor", argv), f"http://{_procs.HOST}:{port}"))
    env = {"MODGATE_LOG_LEVEL": "warning"}
    for name in ("gw-pass", "gw-default"):
        if name not in args.targets:
            continue
        policy = args.default_policy if name == "gw-default" else POLICIES[name]
        if not Path(policy).is_file():
            raise SystemExit(f"policy file for {name} not found: {policy}")
        port = _procs.free_port()
        argv = _procs.python_module(
            "gateway",
            "serve",
            "--upstream",
            upstream,
            "--policy",
            str(policy),
            "--host",
            _procs.HOST,
            "--port",
            str(port),
            "--store",
            f"sqlite:///{tmp / name}.db",
        )
        started.append((name, children.start(name, argv, env), f"http://{_procs.HOST}:{port}"))
    for name, child, base in started:  # started together, so their start-up times overlap
        _procs.wait_ready(child, f"{base}/readyz", timeout_s=args.ready_timeout)
        urls[name] = f"{base}/v1/chat/completions"
    return {t: urls[t] for t in args.targets}


def _scenarios(targets: list[str], concurrencies: tuple[int, ...]) -> list[tuple[str, bool, int]]:
    return [(t, stream, c) for t in targets for stream in (False, True) for c in concurrencies]


def _progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _measure(
    args: argparse.Namespace, urls: dict[str, str], pids: list[int], deadline: float
) -> list[dict[str, Any]]:
    rng = random.Random(args.seed)
    headers = {"x-mock-deltas": str(args.deltas)} if args.deltas is not None else {}
    if args.delay_ms is not None:
        headers["x-mock-delay-ms"] = f"{args.delay_ms:g}"
    rounds: list[dict[str, Any]] = []
    for index in range(args.rounds):
        order = _scenarios(list(urls), args.concurrency)
        rng.shuffle(order)
        per_round = len(order) * (args.seconds + args.warmup + _OVERHEAD_S)
        if rounds and time.monotonic() + per_round > deadline:
            _progress(f"time budget reached: stopping after {len(rounds)} rounds\n")
            break
        results: dict[str, Any] = {}
        for target, stream, conc in order:
            spec = LoadSpec(
                url=urls[target],
                concurrency=conc,
                seconds=args.seconds,
                warmup=args.warmup,
                stream=stream,
                headers=headers,
                timeout=args.request_timeout,
            )
            meter = _procs.CpuMeter(pids)
            result = run_load(spec, args.client)
            results[_report.scenario_key(target, stream, conc)] = {**asdict(result), **meter.stop()}
        rounds.append(results)
        _progress(f"round {index + 1}/{args.rounds} done\n")
    return rounds


def _client(requested: str) -> str:
    if requested == "wrk" and shutil.which("wrk") is None:
        _progress("wrk not found: falling back to the raw Python load generator\n")
        return "raw"
    return requested


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per scenario")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="JSON file (default: benchmarks/results/<UTC time>.json)")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    parser.add_argument("--client", choices=("raw", "aiohttp", "wrk"), default="raw", help="load generator")
    parser.add_argument("--default-policy", type=Path, default=POLICIES["gw-default"])
    parser.add_argument("--concurrency", default="1,32", help="comma-separated levels (targets use 1 and 32)")
    parser.add_argument("--deltas", type=int, help="x-mock-deltas for streams (mock default: 20)")
    parser.add_argument("--delay-ms", type=float, help="x-mock-delay-ms between deltas (mock default: 0)")
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="hard budget for the whole run")
    parser.add_argument("--seed", type=int, default=1, help="scenario order shuffle seed")
    args = parser.parse_args(argv)
    args.targets = [t for t in TARGETS if t in args.targets.split(",")]
    bad = set(args.targets) - set(TARGETS)
    if bad or not args.targets:
        parser.error(f"--targets: choose from {', '.join(TARGETS)}")
    if not (0 < args.seconds <= 60 and 0 <= args.warmup <= 10 and 1 <= args.rounds <= 20):
        parser.error("need 0 < --seconds <= 60, 0 <= --warmup <= 10, 1 <= --rounds <= 20")
    try:
        args.concurrency = tuple(sorted({int(c) for c in args.concurrency.split(",")}))
    except ValueError:
        parser.error("--concurrency: comma-separated integers")
    if not all(1 <= c <= 1024 for c in args.concurrency):
        parser.error("--concurrency: each level in 1..1024")
    args.client = _client(args.client)
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    started_at = datetime.now(UTC)
    deadline = time.monotonic() + args.max_seconds
    meta: dict[str, Any] = {
        "started_utc": started_at.isoformat(timespec="seconds"),
        "machine": _machine(),
        "code": _code_version(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="modgate-bench-") as tmp, _procs.Children(Path(tmp)) as children:
        urls = _start_targets(children, args, Path(tmp))
        count = len(_scenarios(list(urls), args.concurrency))
        _progress(f"ready: {', '.join(urls)}; {args.rounds} rounds x {count} scenarios\n")
        rounds = _measure(args, urls, children.pids(), deadline)
    meta["elapsed_s"] = round((datetime.now(UTC) - started_at).total_seconds(), 1)
    order = [_report.scenario_key(*sc) for sc in _scenarios(list(urls), args.concurrency)]
    summary = _report.summarize(rounds, order)
    gateways = [t for t in urls if t.startswith("gw-")]
    figures = _report.derive(rounds, gateways) if "floor" in urls else []
    out = args.out or HERE / "results" / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {**meta, "summary": summary, "figures": [f.as_dict() for f in figures], "rounds": rounds}
    out.write_text(json.dumps(document, indent=2) + "\n")
    m = meta["machine"]
    sys.stdout.write(
        f"## modgate benchmark, {meta['started_utc']}, {m['cpus']} CPUs ({m['cpu_model']}), "
        f"{len(rounds)} rounds x {args.seconds:g} s, client {args.client}\n\n"
        f"{_report.summary_markdown(summary)}\n\n"
    )
    if figures:
        sys.stdout.write(_report.figures_markdown(figures) + "\n\n")
    sys.stdout.write(f"JSON: {out}\n")


if __name__ == "__main__":
    _procs.run_main(main)
