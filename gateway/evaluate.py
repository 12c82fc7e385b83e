"""``modgate eval``: score a policy on a labelled CSV or JSONL file.

Reading, label parsing and the figures are plain functions over plain data, so tests call them
directly; only :func:`screen_rows` touches the policy. Each text is screened as its own request,
up to ``concurrency`` at once, so a model classifier's micro-batcher sees the load it sees in
the gateway and the latency figures mean what they mean there.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from classifiers.confusion import Confusion, metrics
from gateway.policy import ACTIONS, Action, Policy, severity
from gateway.screening import ERROR_CODE, Decision, Direction, Segment, screen

__all__ = [
    "Confusion", "EvalError", "Fields", "Labels", "Outcome", "Row", "metrics", "percentile", "read_rows",
    "render", "run", "screen_rows", "settings", "summarize",
]  # fmt: skip

#: Label values, comma-separated as ``--positive`` and ``--negative`` take them.
DEFAULT_POSITIVE = "1,true,yes,harmful,unsafe,toxic,offensive,hate,positive"
DEFAULT_NEGATIVE = "0,false,no,benign,safe,neither,negative,non-toxic"
#: The group of rows that lack the ``--group-field``.
NO_GROUP = "(none)"
Format = Literal["csv", "jsonl"]
_FORMATS: dict[str, Format] = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
#: Screened before the clock starts, so model loading and first-call set-up are not timed; fixed
#: texts rather than the file's, so the warm-up does not pre-fill the caches for one row.
_WARMUP = ("Hello, how are you today?", "你好，今天天气怎么样？")


class EvalError(ValueError):
    """The file or a row cannot be evaluated; the message names the file and, for a row, the line."""


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Labels:
    """Which label values mean harmful (positive) and which benign (negative).

    A number in neither set counts as a score (non-zero: harmful), unless the sets name numbers
    other than 0 and 1: then numbers are class ids (``--positive 0,1 --negative 2``) and an unlisted
    one is an error, not silently harmful.
    """

    positive: frozenset[str] = frozenset(DEFAULT_POSITIVE.split(","))
    negative: frozenset[str] = frozenset(DEFAULT_NEGATIVE.split(","))

    @classmethod
    def parse_lists(cls, positive: str, negative: str) -> Labels:
        pos, neg = (
            frozenset(v.strip().lower() for v in s.split(",") if v.strip()) for s in (positive, negative)
        )
        if not pos:
            raise EvalError("--positive names no label value")
        return cls(pos, neg)

    def parse(self, value: object) -> bool | None:
        """True (harmful), False (benign), or None when the value is neither."""
        if value is None or isinstance(value, dict | list):
            return None
        text = str(value).strip().lower()
        number = _number(text)
        keys = {text, str(int(number))} if number is not None and number.is_integer() else {text}
        if keys & self.positive:
            return True
        if keys & self.negative:
            return False
        class_ids = any(_number(v) not in (None, 0, 1) for v in self.positive | self.negative)
        return None if number is None or class_ids else number != 0


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    text: str
    positive: bool
    group: str | None = None


def detect_format(path: Path, fmt: str = "auto") -> Format:
    """``csv`` or ``jsonl``: as ``fmt`` says or, for ``auto``, as the file's extension says."""
    if fmt not in ("auto", "csv", "jsonl"):
        raise EvalError(f"--format must be auto, csv or jsonl, not {fmt!r}")
    found = _FORMATS.get(path.suffix.lower() if fmt == "auto" else f".{fmt}")
    if found is None:
        raise EvalError(f"{path}: cannot tell the format from the extension; pass --format csv or jsonl")
    return found


def get_field(record: Mapping[str, Any], name: str) -> Any:
    """``record[name]``, or with dots a nested value (``meta.lang``, ``labels.0``); KeyError if absent."""
    if name in record:
        return record[name]
    value: Any = record
    for part in name.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(name)
    return value


def _required(where: str, record: Mapping[str, Any], name: str) -> Any:
    try:
        value = get_field(record, name)
    except KeyError:
        fields = ", ".join(map(str, record)) or "nothing"
        raise EvalError(f"{where}: no field {name!r} (the row has: {fields})") from None
    if value is None:
        raise EvalError(f"{where}: field {name!r} is empty")
    return value


def _csv_records(handle: IO[str], path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(handle)
    try:
        for record in reader:
            # Values past the header land under the key None; they are no field of the row.
            yield reader.line_num, {k: v for k, v in record.items() if k is not None}
    except csv.Error as exc:
        raise EvalError(f"{path}:{reader.line_num}: bad CSV: {exc}") from exc


def _jsonl_records(handle: IO[str], path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{path}:{line_no}: not a JSON line ({exc.msg}); one JSON object a line") from exc
        if not isinstance(record, dict):
            raise EvalError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
        yield line_no, record


@dataclass(frozen=True)
class Fields:
    """Where a row keeps its text, label and (optional) group; dots reach into JSON objects."""

    text: str = "text"
    label: str = "label"
    group: str | None = None
    labels: Labels = Labels()

    def row(self, where: str, line: int, record: Mapping[str, Any]) -> Row:
        text = _required(where, record, self.text)
        if not isinstance(text, str):
            raise EvalError(f"{where}: field {self.text!r} is not a string but {type(text).__name__}")
        label = _required(where, record, self.label)
        positive = self.labels.parse(label)
        if positive is None:
            pos, neg = (", ".join(sorted(s)) for s in (self.labels.positive, self.labels.negative))
            raise EvalError(
                f"{where}: label {label!r} in {self.label!r} is neither positive ({pos}) nor negative "
                f"({neg}); see --label-field, --positive, --negative"
            )
        try:
            group = get_field(record, self.group) if self.group else None
        except KeyError:
            group = None
        return Row(line, text, positive, None if group is None else str(group))


def read_rows(
    path: Path, fields: Fields = Fields(), *, fmt: str = "auto", limit: int | None = None
) -> list[Row]:
    """The first ``limit`` rows of a CSV (header row) or JSON Lines file, labels parsed."""
    kind = detect_format(path, fmt)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            records = (_csv_records if kind == "csv" else _jsonl_records)(handle, path)
            rows = [fields.row(f"{path}:{line}", line, record) for line, record in islice(records, limit)]
    except FileNotFoundError:
        raise EvalError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise EvalError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise EvalError(f"{path}: cannot read: {exc.strerror}") from None
    if not rows:
        raise EvalError(f"{path}: no rows to evaluate")
    if fields.group and all(r.group is None for r in rows):
        # A typo in --group-field would otherwise put every row in one group, quietly.
        raise EvalError(f"{path}: no row has the group field {fields.group!r}")
    return rows


# --- screening ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    latency_s: float
    #: Each risk code that fired, with the most severe action it asked for.
    codes: Mapping[str, Action] = field(default_factory=dict)

    @classmethod
    def of(cls, decision: Decision, latency_s: float) -> Outcome:
        by_severity = sorted(decision.hits, key=lambda h: severity(h.action))  # the most severe one last
        return cls(decision.action, latency_s, {h.code: h.action for h in by_severity})


async def screen_rows(
    policy: Policy,
    rows: Sequence[Row],
    direction: Direction,
    *,
    concurrency: int = 16,
    on_done: Callable[[], object] = lambda: None,
) -> tuple[list[Outcome], float]:
    """Each row screened as its own request, ``concurrency`` at a time; outcomes and wall seconds."""
    await screen(policy, [Segment(t, "user") for t in _WARMUP], direction, cache=False)
    outcomes: list[Outcome | None] = [None] * len(rows)
    todo = iter(range(len(rows)))

    async def worker() -> None:
        for i in todo:  # one iterator shared by the workers: each row is taken exactly once
            start = time.perf_counter()
            decision = await screen(policy, [Segment(rows[i].text, "user")], direction)
            outcomes[i] = Outcome.of(decision, time.perf_counter() - start)
            on_done()

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(concurrency, len(rows)))):
            group.create_task(worker())
    return [o for o in outcomes if o is not None], time.perf_counter() - start


def run(
    policy: Policy, rows: Sequence[Row], direction: Direction, concurrency: int, console: Console
) -> tuple[list[Outcome], float]:
    """:func:`screen_rows` in its own event loop with a progress bar on ``console`` (a terminal)."""
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal, transient=True) as bar:
        task = bar.add_task("screening", total=len(rows))

        async def main() -> tuple[list[Outcome], float]:
            try:
                return await screen_rows(
                    policy, rows, direction, concurrency=concurrency, on_done=lambda: bar.advance(task)
                )
            finally:  # model classifiers hold a batcher task and a thread pool bound to this loop
                for classifier in policy.classifiers.values():
                    close = getattr(classifier, "aclose", None)
                    if close is not None:
                        await close()

        return asyncio.run(main())


# --- figures ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linearly interpolated between closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def settings(
    path: Path, policy: Policy, direction: Direction, min_action: Action, labels: Labels, **rest: Any
) -> dict[str, Any]:
    """What a run was: the head of the report, so a saved figure can be traced to its inputs."""
    return {
        "file": str(path),
        "policy": {"name": policy.name, "version": policy.version, "source": policy.source},
        "direction": direction,
        "min_action": min_action,
        "positive_labels": sorted(labels.positive),
        "negative_labels": sorted(labels.negative),
        **rest,
    }


def summarize(
    rows: Sequence[Row], outcomes: Sequence[Outcome], min_action: Action, wall_s: float
) -> dict[str, Any]:
    """Every figure of a run, JSON-ready. Codes are counted once per text, and only those whose
    own action reached ``min_action``: the codes that made the prediction."""
    overall, groups = Confusion(), dict[str, Confusion]()
    on_fp, on_tp, actions = Counter[str](), Counter[str](), Counter[str]()
    for row, outcome in zip(rows, outcomes, strict=True):
        predicted = severity(outcome.action) >= severity(min_action)
        overall.add(row.positive, predicted)
        if any(r.group is not None for r in rows):
            groups.setdefault(row.group or NO_GROUP, Confusion()).add(row.positive, predicted)
        actions[outcome.action] += 1
        causes = [c for c, a in outcome.codes.items() if severity(a) >= severity(min_action)]
        if predicted:
            (on_tp if row.positive else on_fp).update(causes)
    latencies = [o.latency_s * 1000 for o in outcomes]
    return {
        "overall": metrics(overall),
        "groups": {name: metrics(groups[name]) for name in sorted(groups)},
        "latency_ms": {f"p{q}": percentile(latencies, q) for q in (50, 95, 99)},
        "throughput_per_s": len(outcomes) / wall_s if wall_s > 0 else None,
        "wall_s": wall_s,
        "actions": {a: actions[a] for a in ACTIONS},
        "classifier_errors": sum(1 for o in outcomes if ERROR_CODE in o.codes),
        "codes_on_false_positives": [{"code": c, "count": k} for c, k in on_fp.most_common(10)],
        "codes_on_true_positives": [{"code": c, "count": k} for c, k in on_tp.most_common(10)],
    }


def _fmt(value: int | float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def render(report: Mapping[str, Any], console: Console) -> None:
    """The report as text: confusion and rates (overall, then per group), latency, risk codes."""
    keys = ("n", "positives", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1", "fpr")
    if "file" in report:
        policy = report["policy"]
        # Paths and group names come from the user: escaped, so a '[' is text, not rich markup.
        console.print(
            escape(f"{report['file']}: policy {policy['name']}@{policy['version']}, {report['direction']}, ")
            + f"harmful when action >= {report['min_action']}",
            soft_wrap=True,
        )
    table = Table()
    for head in ("group", "n", "pos", "TP", "FP", "TN", "FN", "acc", "prec", "recall", "F1", "FPR"):
        table.add_column(head, justify="left" if head == "group" else "right")
    for name, figures in [("all", report["overall"]), *report["groups"].items()]:
        table.add_row(escape(name), *(_fmt(figures[k]) for k in keys), end_section=name == "all")
    console.print(table)
    lat = report["latency_ms"]
    lines = [
        f"latency per text: p50 {_fmt(lat['p50'], 2)} ms, p95 {_fmt(lat['p95'], 2)} ms, "
        f"p99 {_fmt(lat['p99'], 2)} ms; throughput {_fmt(report['throughput_per_s'], 1)} texts/s",
        "actions: " + ", ".join(f"{a} {k}" for a, k in report["actions"].items()),
    ]
    if report["classifier_errors"]:
        lines.append(f"[bold]classifier errors: {report['classifier_errors']} texts (on_error decided)[/]")
    for key, which in (("codes_on_false_positives", "false"), ("codes_on_true_positives", "true")):
        codes = ", ".join(f"{e['code']} {e['count']}" for e in report[key]) or "none"
        lines.append(f"risk codes on {which} positives (texts, top 10): {codes}")
    for line in lines:
        console.print(line, soft_wrap=True)
