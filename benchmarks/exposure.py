"""Exposure of the stream guard on the streamed adversarial set: ``python -m benchmarks.exposure``.

Streams every case of ``data/stream_adversarial/cases.jsonl`` in ``hold`` and ``async`` mode,
split at every chunk boundary inside its harmful passage and once a character a chunk (see
``benchmarks/_exposure.py``), and prints per language x kind x mode: cases, streams, cut rate,
streams that delivered violating characters, the most delivered, and cases the policy flags on
the whole text that some stream did not stop. Writes JSON to
``benchmarks/results/exposure-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._exposure import (
    CASES,
    PIECE,
    Case,
    Mode,
    Outcome,
    WholeText,
    control,
    load_cases,
    run_case,
    whole_text,
)
from gateway.policy import Policy
from gateway.policy_loader import load_policy

RESULTS = Path(__file__).parent / "results"
POLICIES = {
    "default": "default",
    "lexicon": str(Path(__file__).parent / "policies" / "lexicon-patterns.yaml"),
    "model-block": str(Path(__file__).parent / "policies" / "model-output-block.yaml"),
}
MODES: tuple[Mode, ...] = ("hold", "async")


def case_summary(
    case: Case, whole: WholeText, mode: Mode, outcomes: Sequence[Outcome], controls: Sequence[bool]
) -> dict[str, Any]:
    # What is violating comes from the policy's verdict on the whole text: none when it passes.
    exposing = [o for o in outcomes if o.violating_exposed] if whole.flagged else []
    return {
        "case": case.id, "lang": case.lang, "kind": case.kind, "trick": case.trick, "mode": mode,
        "whole_action": whole.action, "whole_codes": list(whole.codes), "streams": len(outcomes),
        "cut": sum(o.cut for o in outcomes), "masked": sum(o.redacted and not o.cut for o in outcomes),
        "missed": [o.split for o in outcomes if whole.missed_by(o)],
        "exposing": {o.split: o.violating_exposed for o in exposing},
        "max_violating_exposed": max((o.violating_exposed for o in exposing), default=0),
        "max_harmful_exposed": max((o.harmful_exposed for o in outcomes), default=0),
        "max_guard_exposed": max((o.guard_exposed or 0 for o in outcomes), default=0),
        "retract_misses": [o.split for o in outcomes if o.retract_covers is False],
        "benign_control_cut": sum(controls),
    }  # fmt: skip


def table(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["lang"], row["kind"], row["mode"]), []).append(row)
    summary = []
    for (lang, kind, mode), rs in sorted(groups.items()):
        streams = sum(r["streams"] for r in rs)
        summary.append({
            "lang": lang, "kind": kind, "mode": mode, "cases": len(rs),
            "flagged": sum(r["whole_action"] in ("block", "refuse", "redact") for r in rs),
            "streams": streams, "cut_rate": sum(r["cut"] for r in rs) / streams,
            "masked_rate": sum(r["masked"] for r in rs) / streams,
            "streams_exposing": sum(len(r["exposing"]) for r in rs),
            "max_violating_exposed": max(r["max_violating_exposed"] for r in rs),
            "max_harmful_exposed": max(r["max_harmful_exposed"] for r in rs),
            "max_guard_exposed": max(r["max_guard_exposed"] for r in rs),
            "flagged_not_stopped": sum(bool(r["missed"]) for r in rs),
            "retract_misses": sum(len(r["retract_misses"]) for r in rs),
            "benign_control_cut": sum(bool(r["benign_control_cut"]) for r in rs),
        })  # fmt: skip
    head = (
        "| lang | kind | mode | cases | flagged | streams | cut | masked | streams exposing | max exposed"
        " | max harmful delivered | max guard-counted | flagged cases not stopped | retract misses"
        " | benign text cut |"
    )
    lines = [head, "|---|---|---|" + "---:|" * 12]
    for s in summary:
        lines.append(
            f"| {s['lang']} | {s['kind']} | {s['mode']} | {s['cases']} | {s['flagged']} | {s['streams']} "
            f"| {s['cut_rate']:.1%} | {s['masked_rate']:.1%} | {s['streams_exposing']} "
            f"| {s['max_violating_exposed']} | {s['max_harmful_exposed']} | {s['max_guard_exposed']} "
            f"| {s['flagged_not_stopped']} | {s['retract_misses']} | {s['benign_control_cut']} |"
        )
    return summary, "\n".join(lines)


async def measure(policy: Policy, cases: Sequence[Case], every: int) -> list[dict[str, Any]]:
    rows = []
    for case in cases:
        whole = await whole_text(policy, case)
        for mode in MODES:
            outcomes = await run_case(policy, case, mode, whole, every=every)
            rows.append(case_summary(case, whole, mode, outcomes, await control(policy, case, mode)))
    return rows


def _commit() -> str:
    run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return run.stdout.strip()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.exposure", description=__doc__.splitlines()[0])
    p.add_argument("--policy", default="default", help="default, lexicon (keywords + patterns) or a file")
    p.add_argument("--cases", type=Path, default=CASES)
    p.add_argument("--every", type=int, default=1, help="stream every N-th split position only")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    started = time.perf_counter()
    policy = load_policy(POLICIES.get(args.policy, args.policy))
    loaded = time.perf_counter() - started
    rows = asyncio.run(measure(policy, load_cases(args.cases), args.every))
    summary, markdown = table(rows)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "commit": _commit(),
        "policy": args.policy, "policy_version": policy.version, "piece_chars": PIECE,
        "every": args.every, "load_seconds": round(loaded, 1),
        "run_seconds": round(time.perf_counter() - started - loaded, 1),
        "summary": summary, "cases": rows,
    }  # fmt: skip
    out = args.out or RESULTS / f"exposure-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(markdown)
    print(f"\n{sum(s['streams'] for s in summary)} streams in {result['run_seconds']} s; wrote {out}")


if __name__ == "__main__":
    main()
