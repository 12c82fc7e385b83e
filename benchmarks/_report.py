"""Turning per-round load results into medians, derived figures, target checks and markdown.

Ratios and differences are taken *within* each round (gateway and floor measured minutes, not
hours, apart) and the median over rounds is reported, so slow drift of a shared machine cancels.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Figure", "derive", "figures_markdown", "scenario_key", "summarize", "summary_markdown"]

Round = Mapping[str, Mapping[str, Any]]  # scenario key -> LoadResult as a dict

#: The gateway configuration the targets are judged on (lexicon + patterns, no hit).
JUDGED = "gw-default"


def scenario_key(target: str, stream: bool, concurrency: int) -> str:
    return f"{target}/{'stream' if stream else 'plain'}/c{concurrency}"


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(rounds: Sequence[Round], order: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per scenario (in ``order``): medians over rounds, plus summed errors and missing [DONE]."""
    keys = [k for k in order if any(k in r for r in rounds)]
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        runs = [r[key] for r in rounds if key in r]
        summary: dict[str, Any] = {"rounds": len(runs)}
        for name in ("rps", "p50_ms", "p90_ms", "p99_ms", "ttfb_p50_ms", "cpu_us_per_req", "others_cores"):
            summary[name] = _median(run.get(name) for run in runs)
        summary["rps_min"] = min(run["rps"] for run in runs)
        summary["rps_max"] = max(run["rps"] for run in runs)
        summary["errors"] = sum(run["errors"] for run in runs)
        summary["requests"] = sum(run["requests"] for run in runs)
        missing = [run["missing_done"] for run in runs if run.get("missing_done") is not None]
        summary["missing_done"] = sum(missing) if missing else None
        out[key] = summary
    return out


@dataclass(frozen=True)
class Figure:
    """A derived figure: median over rounds of a within-round ratio or difference."""

    name: str
    value: float | None
    unit: str
    target: str = ""
    passed: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "passed": self.passed,
        }


def _per_round(rounds: Sequence[Round], a: str, b: str, field: str, op: str) -> float | None:
    values = []
    for r in rounds:
        if a in r and b in r and r[a].get(field) is not None and r[b].get(field) is not None:
            x, y = float(r[a][field]), float(r[b][field])
            if op == "ratio":
                values.append(x / y if y else 0.0)
            else:
                values.append(x - y)
    return statistics.median(values) if values else None


def _check(value: float | None, limit: float, at_least: bool) -> bool | None:
    if value is None:
        return None
    return value >= limit if at_least else value <= limit


def derive(rounds: Sequence[Round], gateways: Sequence[str]) -> list[Figure]:
    """Throughput ratios gateway/floor at c=32 and added latency at c=1, targets on :data:`JUDGED`."""
    figures: list[Figure] = []
    for gw in gateways:
        judged = gw == JUDGED
        for stream, limit in ((False, 0.75), (True, 0.6)):
            mode = "stream" if stream else "plain"
            value = _per_round(
                rounds, scenario_key(gw, stream, 32), scenario_key("floor", stream, 32), "rps", "ratio"
            )
            target = f">= {limit}" if judged else ""
            passed = _check(value, limit, at_least=True) if judged else None
            figures.append(Figure(f"{gw} {mode} c=32 throughput / floor", value, "x", target, passed))
        for stream in (False, True):
            mode = "stream" if stream else "plain"
            for base in ("direct", "floor"):
                for pct in ("p50", "p99"):
                    a, b = scenario_key(gw, stream, 1), scenario_key(base, stream, 1)
                    value = _per_round(rounds, a, b, f"{pct}_ms", "diff")
                    has_target = judged and pct == "p50" and not stream
                    target = "<= 0.5" if has_target else ""
                    passed = _check(value, 0.5, at_least=False) if has_target else None
                    figures.append(
                        Figure(f"{gw} {mode} c=1 added {pct} vs {base}", value, "ms", target, passed)
                    )
    floor_vs_direct = _per_round(rounds, "floor/plain/c1", "direct/plain/c1", "p50_ms", "diff")
    figures.append(Figure("floor plain c=1 added p50 vs direct (for scale)", floor_vs_direct, "ms"))
    return figures


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def summary_markdown(summary: Mapping[str, Mapping[str, Any]]) -> str:
    lines = [
        "| scenario | req/s (median) | req/s min–max | p50 ms | p90 ms | p99 ms | TTFB p50 ms "
        "| loadgen µs/req | others' CPU (cores) | errors | missing [DONE] |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, s in summary.items():
        missing = "–" if s["missing_done"] is None else str(s["missing_done"])
        lines.append(
            f"| {key} | {_fmt(s['rps'], 0)} | {_fmt(s['rps_min'], 0)}–{_fmt(s['rps_max'], 0)} "
            f"| {_fmt(s['p50_ms'])} | {_fmt(s['p90_ms'])} | {_fmt(s['p99_ms'])} | {_fmt(s['ttfb_p50_ms'])} "
            f"| {_fmt(s['cpu_us_per_req'], 0)} | {_fmt(s['others_cores'])} | {s['errors']} | {missing} |"
        )
    return "\n".join(lines)


def figures_markdown(figures: Sequence[Figure]) -> str:
    lines = ["| figure (median of per-round values) | value | target | result |", "|---|---:|---:|---|"]
    for f in figures:
        result = "" if f.passed is None and not f.target else ("PASS" if f.passed else "FAIL")
        if f.target and f.passed is None:
            result = "n/a"
        digits = 3 if f.unit == "x" else 2
        lines.append(f"| {f.name} | {_fmt(f.value, digits)} {f.unit} | {f.target} | {result} |")
    return "\n".join(lines)
