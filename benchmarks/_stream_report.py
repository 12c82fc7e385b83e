"""The stream benchmark's targets (issue 5), checked against pooled figures, and its markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks._report import Figure

__all__ = ["derive", "figures_markdown", "flow_markdown", "stop_markdown"]

Summary = Mapping[str, Mapping[str, Any]]  # scenario name -> pooled summary


def _get(summary: Summary, scenario: str, *path: str) -> float | None:
    node: Any = summary.get(scenario)
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return float(node) if isinstance(node, int | float) else None


def _added(summary: Summary, gw: str, ref: str, *path: str) -> float | None:
    a, b = _get(summary, gw, *path), _get(summary, ref, *path)
    return None if a is None or b is None else a - b


def _at_most(name: str, value: float | None, limit: float, unit: str = "ms") -> Figure:
    passed = None if value is None else value <= limit
    return Figure(name, value, unit, f"<= {limit:g}", passed)


def derive(summary: Summary, streams: int = 32) -> list[Figure]:
    """Added lag and TTFT against the pass-through at the same concurrency, stop timing,
    exposure and integrity, each with its target where the issue sets one (its concurrent
    targets are for 32 streams: with another ``--streams`` they are shown without a verdict)."""
    many = f"c{streams}"
    judged = streams == 32
    lag_targets = {"default/c1": {"p50": 15.0}}
    if judged:
        lag_targets |= {"lex/c32": {"p50": 5.0, "p99": 20.0}, "default/c32": {"p50": 120.0, "p99": 300.0}}
    figures: list[Figure] = []
    for scenario in ("lex/c1", f"lex/{many}", "default/c1", f"default/{many}"):
        if scenario not in summary:
            continue
        ref = "pass/" + scenario.split("/")[1]
        for pct in ("p50", "p99"):
            value = _added(summary, scenario, ref, "lag_ms", pct)
            limit = lag_targets.get(scenario, {}).get(pct)
            name = f"{scenario} hold-back lag {pct}, added vs {ref}"
            figures.append(_at_most(name, value, limit) if limit is not None else Figure(name, value, "ms"))
        value = _added(summary, scenario, ref, "ttft_ms", "p50")
        name = f"{scenario} TTFT p50, added vs {ref}"
        figures.append(_at_most(name, value, 25.0) if scenario == "default/c1" else Figure(name, value, "ms"))
    for scenario in ("stop/lex", "stop/default"):
        if scenario not in summary:
            continue
        close = _get(summary, scenario, "close_ms", "p99")
        name = f"{scenario} violating delta sent -> upstream closed, p99"
        figures.append(_at_most(name, close, 5.0) if scenario == "stop/lex" else Figure(name, close, "ms"))
        exposed = _get(summary, scenario, "exposed_chars_total")
        figures.append(_at_most(f"{scenario} term characters that reached clients", exposed, 0, "chars"))
        misses = (_get(summary, scenario, "streams") or 0) - (_get(summary, scenario, "cut") or 0)
        figures.append(_at_most(f"{scenario} streams not cut", misses, 0, "streams"))
    benign = [s for s in summary if not s.startswith("stop/")]
    failed = sum(_get(summary, s, "failed_deltas") or 0 for s in benign)
    broken = sum(_get(summary, s, "broken_streams") or 0 for s in benign)
    figures.append(_at_most("deltas lost or out of order (all benign streams)", failed, 0, "deltas"))
    figures.append(_at_most("benign streams not ending in stop + [DONE]", broken, 0, "streams"))
    return figures


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def flow_markdown(summary: Summary) -> str:
    lines = [
        "| scenario | streams | deltas received | lost/out of order | broken streams | lag p50 ms "
        "| lag p99 ms | lag max ms | TTFT p50 ms | TTFT p99 ms | others' CPU (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        if name.startswith("stop/"):
            continue
        lag, ttft = s["lag_ms"], s["ttft_ms"]
        lines.append(
            f"| {name} | {s['streams']} | {s['deltas_received']:,} | {s['failed_deltas']:,} "
            f"| {s['broken_streams']} | {_fmt(lag['p50'])} | {_fmt(lag['p99'])} | {_fmt(lag['max'])} "
            f"| {_fmt(ttft['p50'])} | {_fmt(ttft['p99'])} | {_fmt(s.get('others_cores'))} |"
        )
    broken = [
        f"{name}: " + ", ".join(f"{why} x{n}" for why, n in s["broken_by"].items())
        for name, s in summary.items()
        if s.get("broken_by")
    ]
    if broken:
        lines += ["", "Broken streams, by what the gateway said: " + "; ".join(broken) + "."]
    return "\n".join(lines)


def stop_markdown(summary: Summary) -> str:
    lines = [
        "| scenario | streams | cut | upstream finished before the cut | close p50 ms | close p99 ms "
        "| final chunk p50 ms | final chunk p99 ms | term chars exposed | deltas sent after p50 | garbled |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        if not name.startswith("stop/"):
            continue
        close, final = s["close_ms"], s["final_ms"]
        lines.append(
            f"| {name} | {s['streams']} | {s['cut']} | {s['not_closed']} | {_fmt(close['p50'])} "
            f"| {_fmt(close['p99'])} | {_fmt(final['p50'])} | {_fmt(final['p99'])} "
            f"| {s['exposed_chars_total']} | {_fmt(s['sent_after_p50'], 0)} | {s['garbled']} |"
        )
    return "\n".join(lines)


def figures_markdown(figures: Sequence[Figure]) -> str:
    lines = ["| figure (pooled over rounds) | value | target | result |", "|---|---:|---:|---|"]
    for f in figures:
        result = "" if not f.target else ("n/a" if f.passed is None else "PASS" if f.passed else "FAIL")
        digits = 2 if f.unit == "ms" else 0
        lines.append(f"| {f.name} | {_fmt(f.value, digits)} {f.unit} | {f.target} | {result} |")
    return "\n".join(lines)
