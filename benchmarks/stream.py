"""The stream guard's benchmark (issue 5): ``python -m benchmarks.stream [--rounds R] [--streams 32]``.

Starts, on free loopback ports, the scripted upstream (``stream_upstream.py``: 300 content
deltas, one every 20 ms, each send stamped with CLOCK_MONOTONIC), the floor (``floor.py``, a
bare pass-through: the reference) and two gateways in ``hold`` mode: ``lex`` with the bundled
default's keyword lists and PII patterns (``policies/lexicon-patterns.yaml``) and ``default``
with the bundled default policy, model classifier ``modgate-guard`` included. Over R rounds, in
a shuffled order per round, it runs:

* ``pass/c1``, ``pass/c32``, ``lex/c32``, ``default/c1``, ``default/c32``: S concurrent benign
  streams (started out of phase over one delta interval); per delta the hold-back lag (client
  arrival - upstream send), per stream the time to first token, and whether every delta
  arrived intact and in order;
* ``stop/lex``, ``stop/default``: S concurrent streams whose delta N completes a blocked
  term split across two deltas: time from that delta's send to the upstream seeing its
  connection closed and to the client's ``content_filter`` chunk, and the characters of the term
  that reached the client.

Figures are pooled over rounds; "added" figures subtract the pass-through's at the same
concurrency. It prints markdown tables with PASS/FAIL against the issue's targets and writes JSON
to ``benchmarks/results/stream-<UTC time>.json``. Children die with this process (see _procs).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from benchmarks import _procs, _stream_report
from benchmarks._stream_client import StreamRecord, run_streams
from benchmarks._stream_stats import flow_result, stop_result, summarize_flow, summarize_stop
from benchmarks.run import _code_version, _machine
from benchmarks.stream_upstream import script, term_span

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGETS = ("pass", "lex", "default")
POLICIES = {"lex": HERE / "policies" / "lexicon-patterns.yaml", "default": REPO / "policies" / "default.yaml"}


@dataclass(frozen=True)
class Scenario:
    name: str
    target: str
    streams: int
    stop: bool = False


def _scenarios(targets: Sequence[str], streams: int) -> list[Scenario]:
    out = []
    for target in targets:
        for conc in sorted({1, streams}):
            if target != "lex" or conc == streams:  # the issue sets no lexicon-only c=1 target
                out.append(Scenario(f"{target}/c{conc}", target, conc))
        if target != "pass":
            out.append(Scenario(f"stop/{target}", target, streams, stop=True))
    return out


def _progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _start(children: _procs.Children, args: argparse.Namespace, tmp: Path) -> tuple[str, dict[str, str]]:
    """Start the upstream and the targets; return the upstream's base URL and target -> chat URL."""
    port = _procs.free_port()
    upstream_child = children.start(
        "upstream", _procs.python_module("benchmarks.stream_upstream", "--port", str(port))
    )
    upstream = f"http://{_procs.HOST}:{port}"
    started: list[tuple[str, _procs.Child, str]] = []
    for target in args.targets:
        port = _procs.free_port()
        if target == "pass":
            argv = _procs.python_module(
                "benchmarks.floor", "--upstream", f"{upstream}/v1", "--port", str(port)
            )
        else:
            argv = _procs.python_module(
                "gateway", "serve", "--upstream", f"{upstream}/v1", "--policy", str(POLICIES[target]),
                "--host", _procs.HOST, "--port", str(port), "--store", f"sqlite:///{tmp / target}.db",
            )  # fmt: skip
        env = {"MODGATE_LOG_LEVEL": "warning"}
        started.append((target, children.start(target, argv, env), f"http://{_procs.HOST}:{port}"))
    _procs.wait_ready(upstream_child, f"{upstream}/v1/models")
    urls = {}
    for target, child, base in started:  # started together, so the model's load overlaps the rest
        _progress(f"waiting for {target} ...\n")
        _procs.wait_ready(child, f"{base}/readyz", timeout_s=args.ready_timeout)
        urls[target] = f"{base}/v1/chat/completions"
    return upstream, urls


def _fetch_traces(upstream: str, ids: set[int], wait_s: float) -> dict[int, dict[str, Any]]:
    """Traces of the given streams; polls while the upstream still runs some of them."""
    traces: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + wait_s
    while True:
        with urllib.request.urlopen(f"{upstream}/bench/traces", timeout=5) as resp:
            traces.update({int(k): v for k, v in json.loads(resp.read()).items()})
        if ids <= traces.keys() or time.monotonic() > deadline:
            return traces
        time.sleep(0.05)


class _Runner:
    def __init__(self, args: argparse.Namespace, upstream: str, urls: Mapping[str, str]) -> None:
        self.args = args
        self.upstream = upstream
        self.urls = urls
        self._ids = itertools.count(1)

    async def streams(
        self, target: str, count: int, deltas: int, stop_at: int = -1
    ) -> tuple[list[StreamRecord], dict[int, Any]]:
        """Run ``count`` concurrent streams through ``target``; their records and upstream traces."""
        a = self.args
        ids = [next(self._ids) for _ in range(count)]
        headers = {
            "x-bench-deltas": str(deltas),
            "x-bench-interval-ms": f"{a.interval_ms:g}",
            "x-bench-stop-at": str(stop_at),
        }
        timeout = deltas * a.interval_ms / 1000 + a.stream_timeout
        records = await run_streams(self.urls[target], ids, headers, a.stagger_ms / 1000, timeout)
        wait = a.stop_tail * a.interval_ms / 1000 + 2.0
        traces = await asyncio.to_thread(_fetch_traces, self.upstream, set(ids), wait)
        return records, traces

    async def scenario(self, s: Scenario) -> tuple[list[StreamRecord], dict[int, Any]]:
        a = self.args
        if not s.stop:
            return await self.streams(s.target, s.streams, a.deltas)
        records: list[StreamRecord] = []
        traces: dict[int, Any] = {}
        for _ in range(a.stop_batches):  # short streams: more of them, for a steadier p99
            recs, trs = await self.streams(s.target, s.streams, a.stop_at + a.stop_tail, a.stop_at)
            records += recs
            traces |= trs
        return records, traces

    def analyse(
        self, scenario: Scenario, records: list[StreamRecord], traces: dict[int, Any]
    ) -> dict[str, Any]:
        a = self.args
        if scenario.stop:
            deltas = a.stop_at + a.stop_tail
            stops = []
            for r in records:
                trace = traces.get(r.stream_id, {"sent": [], "closed": None})
                expected = script(r.stream_id, deltas, a.stop_at)
                span = term_span(r.stream_id, deltas, a.stop_at)
                stops.append(stop_result(expected, span, a.stop_at, trace["sent"], trace["closed"], r.events))
            return summarize_stop(stops)
        flows = []
        for r in records:
            sent = traces.get(r.stream_id, {"sent": []})["sent"]
            expected = script(r.stream_id, a.deltas)
            flows.append(flow_result(expected, sent, r.t_request, r.events, r.status, r.error is not None))
        by_language = {  # even stream ids are scripted in English, odd ones in Chinese
            lang: summarize_flow(
                [f for r, f in zip(records, flows, strict=True) if r.stream_id % 2 == parity]
            )
            for lang, parity in (("en", 0), ("zh", 1))
        }
        detail = {k: {"lag_ms": v["lag_ms"], "broken_by": v["broken_by"]} for k, v in by_language.items()}
        return {**summarize_flow(flows), "by_language": detail}

    async def run(self, pids: list[int], deadline: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        a = self.args
        for target in self.urls:  # connections, caches and the model's first passes
            await self.streams(target, min(4, a.streams), min(30, a.deltas))
        scenarios = _scenarios(list(self.urls), a.streams)
        rng = random.Random(a.seed)
        rounds: list[dict[str, Any]] = []
        pooled: dict[str, list[tuple[list[StreamRecord], dict[int, Any]]]] = {s.name: [] for s in scenarios}
        for index in range(a.rounds):
            if rounds and time.monotonic() + self._round_s(scenarios) > deadline:
                _progress(f"time budget reached: stopping after {len(rounds)} rounds\n")
                break
            rng.shuffle(scenarios)
            results: dict[str, Any] = {}
            for s in scenarios:
                meter = _procs.CpuMeter(pids)
                records, traces = await self.scenario(s)
                pooled[s.name].append((records, traces))
                results[s.name] = {**self.analyse(s, records, traces), **meter.stop()}
            rounds.append(results)
            _progress(f"round {index + 1}/{a.rounds} done\n")
        summary: dict[str, Any] = {}
        for s in sorted(scenarios, key=lambda s: (s.stop, TARGETS.index(s.target), s.streams)):
            records = [r for recs, _ in pooled[s.name] for r in recs]
            traces = {k: v for _, tr in pooled[s.name] for k, v in tr.items()}
            summary[s.name] = self.analyse(s, records, traces)
            others = sorted(r[s.name]["others_cores"] for r in rounds if s.name in r)
            summary[s.name]["others_cores"] = others[len(others) // 2] if others else None
        return rounds, summary

    def _round_s(self, scenarios: Sequence[Scenario]) -> float:
        a = self.args
        flow: float = a.deltas * a.interval_ms / 1000 + 1.0
        stop: float = ((a.stop_at + a.stop_tail) * a.interval_ms / 1000 + 1.0) * a.stop_batches
        return sum(stop if s.stop else flow for s in scenarios)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=32, help="concurrent streams of the c32 scenarios")
    parser.add_argument("--deltas", type=int, default=300, help="content deltas per stream")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="upstream pause between deltas")
    parser.add_argument(
        "--stagger-ms", type=float, help="spread of concurrent stream starts (default: interval)"
    )
    parser.add_argument(
        "--stop-at", type=int, default=20, help="delta that completes the term (stop scenarios)"
    )
    parser.add_argument(
        "--stop-tail", type=int, default=250, help="benign deltas scripted after it (sent until the cut)"
    )
    parser.add_argument(
        "--stop-batches", type=int, default=3, help="batches of --streams stop streams per round"
    )
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    parser.add_argument(
        "--out", type=Path, help="JSON file (default: benchmarks/results/stream-<UTC time>.json)"
    )
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="for the model's first load")
    parser.add_argument("--stream-timeout", type=float, default=60.0, help="per stream, beyond its script")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="budget for the rounds")
    parser.add_argument("--seed", type=int, default=1, help="scenario order shuffle seed")
    args = parser.parse_args(argv)
    args.targets = [t for t in TARGETS if t in args.targets.split(",")]
    if "pass" not in args.targets:
        parser.error("--targets: the pass-through is the reference, keep 'pass'")
    if not (1 <= args.rounds <= 20 and 1 <= args.streams <= 256 and 2 <= args.deltas <= 10_000):
        parser.error("need 1 <= --rounds <= 20, 1 <= --streams <= 256, 2 <= --deltas <= 10000")
    if not (
        args.stop_at >= 1 and args.stop_tail >= 1 and args.stop_batches >= 1 and 0 < args.interval_ms <= 1000
    ):
        parser.error("need --stop-at, --stop-tail, --stop-batches >= 1 and 0 < --interval-ms <= 1000")
    if args.stagger_ms is None:
        args.stagger_ms = args.interval_ms
    return args


def _write(
    args: argparse.Namespace, meta: dict[str, Any], rounds: list[Any], summary: dict[str, Any]
) -> Path:
    figures = _stream_report.derive(summary, args.streams)
    out = args.out or HERE / "results" / f"stream-{meta['started_at'].strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = meta["started_at"].isoformat(timespec="seconds")
    meta = {"started_utc": started, **{k: v for k, v in meta.items() if k != "started_at"}}
    document = {**meta, "summary": summary, "figures": [f.as_dict() for f in figures], "rounds": rounds}
    out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    m = meta["machine"]
    sys.stdout.write(
        f"## modgate stream benchmark, {meta['started_utc']}, {m['cpus']} CPUs ({m['cpu_model']}), "
        f"{len(rounds)} rounds, {args.streams} streams x {args.deltas} deltas "
        f"every {args.interval_ms:g} ms\n\n"
        f"{_stream_report.flow_markdown(summary)}\n\n{_stream_report.stop_markdown(summary)}\n\n"
        f"{_stream_report.figures_markdown(figures)}\n\nJSON: {out}\n"
    )
    return out


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    meta: dict[str, Any] = {
        "started_at": datetime.now(UTC),
        "machine": _machine(),
        "code": _code_version(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="modgate-sbench-") as tmp, _procs.Children(Path(tmp)) as children:
        upstream, urls = _start(children, args, Path(tmp))
        deadline = time.monotonic() + args.max_seconds
        rounds, summary = uvloop.run(_Runner(args, upstream, urls).run(children.pids(), deadline))
    _write(args, meta, rounds, summary)


if __name__ == "__main__":
    _procs.run_main(main)
