"""From recorded timestamps to the stream benchmark's figures; pure functions, lists in, lists out.

Times are ``time.monotonic_ns()`` values from two processes on one host (the upstream's send
stamps, the client's arrival stamps): CLOCK_MONOTONIC is one clock for the whole machine.

A delta counts as *received* when the last of its characters reached the client, in whatever
chunk the gateway put it (a guard may hold text back and release several deltas in one chunk).
Deltas are identified by position: the scripted text is known to the client, so delta ``i`` is
the characters ``[end(i-1), end(i))`` of it, and text that arrived out of order, twice or not at
all shows as a difference from the script from that point on.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.loadgen import percentile

__all__ = [
    "Delivered",
    "FlowResult",
    "StopResult",
    "delivered",
    "delta_arrivals",
    "flow_result",
    "stop_result",
    "summarize_flow",
    "summarize_stop",
]

Events = Sequence[tuple[int, bytes]]


@dataclass(frozen=True)
class Delivered:
    """The assistant text a client saw, and when."""

    #: Content before any ``content_filter`` chunk (whose canned reply is not the answer).
    content: str
    #: (arrival ns, characters of ``content`` received so far), one per chunk with content.
    pieces: tuple[tuple[int, int], ...]
    finish: str | None
    finish_t: int | None
    done: bool
    #: Why the stream ended early, as the gateway said: the risk codes of a cut, or an error.
    note: str | None = None


def delivered(events: Events) -> Delivered:
    parts: list[str] = []
    pieces: list[tuple[int, int]] = []
    total = 0
    finish: str | None = None
    finish_t: int | None = None
    done = False
    note: str | None = None
    for t, payload in events:
        if payload == b"[DONE]":
            done = True
            continue
        try:
            chunk: Any = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(chunk, dict):
            continue
        if isinstance(chunk.get("error"), dict):
            note = note or f"error: {chunk['error'].get('type') or chunk['error'].get('code')}"
        if isinstance(chunk.get("modgate"), dict):
            note = note or f"cut: {','.join(chunk['modgate'].get('risks') or ()) or '?'}"
        for choice in chunk.get("choices") or ():
            reason = choice.get("finish_reason")
            text = (choice.get("delta") or {}).get("content")
            if reason is not None and finish is None:
                finish, finish_t = reason, t
            if reason == "content_filter" or not isinstance(text, str) or not text:
                continue
            parts.append(text)
            total += len(text)
            pieces.append((t, total))
    return Delivered("".join(parts), tuple(pieces), finish, finish_t, done, note)


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def delta_arrivals(expected: Sequence[str], got: Delivered) -> list[int | None]:
    """Arrival time of each scripted delta, None for one that never arrived intact in place."""
    intact = _common_prefix(got.content, "".join(expected))
    out: list[int | None] = []
    end = 0
    j = 0
    for text in expected:
        end += len(text)
        if end > intact:
            out.append(None)
            continue
        while got.pieces[j][1] < end:
            j += 1
        out.append(got.pieces[j][0])
    return out


@dataclass(frozen=True)
class FlowResult:
    """One stream that should pass whole: lag per delta, time to first token, what went wrong."""

    lags_ms: list[float]
    ttft_ms: float | None
    #: Scripted deltas that did not arrive intact and in order (sent or not).
    failed: int
    #: Not a clean end: non-200, transport error, a cut, or no ``[DONE]``.
    broken: bool
    #: Why it broke (None when it did not).
    reason: str | None = None


def flow_result(
    expected: Sequence[str], sent: Sequence[int], t_request: int, events: Events, status: int, error: bool
) -> FlowResult:
    got = delivered(events)
    arrivals = delta_arrivals(expected, got)
    lags = [(a - s) / 1e6 for a, s in zip(arrivals, sent, strict=False) if a is not None]
    failed = sum(a is None for a in arrivals)
    ttft = (got.pieces[0][0] - t_request) / 1e6 if got.pieces else None
    broken = error or status != 200 or got.finish != "stop" or not got.done
    reason = None
    if broken:
        reason = got.note or (
            "transport error"
            if error
            else f"status {status}"
            if status != 200
            else f"finish {got.finish}, [DONE] {'yes' if got.done else 'missing'}"
        )
    return FlowResult(lags, ttft, failed, broken, reason)


@dataclass(frozen=True)
class StopResult:
    """One stream whose delta ``stop_at`` completes a blocked term."""

    cut: bool
    #: Violating delta sent -> upstream saw its connection closed (None: never closed).
    close_ms: float | None
    #: Violating delta sent -> the client's ``content_filter`` chunk arrived.
    final_ms: float | None
    #: Characters of the term that reached the client.
    exposed: int
    #: Deltas the upstream still sent after the violating one.
    sent_after: int
    #: What reached the client is a prefix of the script (nothing garbled or reordered).
    clean: bool


def stop_result(
    expected: Sequence[str],
    term: tuple[int, int],
    stop_at: int,
    sent: Sequence[int],
    closed: int | None,
    events: Events,
) -> StopResult:
    got = delivered(events)
    script = "".join(expected)
    violate = sent[stop_at] if len(sent) > stop_at else None
    cut = got.finish == "content_filter"

    def since(t: int | None) -> float | None:
        return (t - violate) / 1e6 if t is not None and violate is not None else None

    start, end = term
    return StopResult(
        cut=cut,
        close_ms=since(closed),
        final_ms=since(got.finish_t) if cut else None,
        exposed=max(0, min(len(got.content), end) - start),
        sent_after=max(0, len(sent) - stop_at - 1),
        clean=script.startswith(got.content),
    )


def _pcts(values: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": percentile(ordered, 50), "p99": percentile(ordered, 99), "max": ordered[-1]}


def summarize_flow(results: Sequence[FlowResult]) -> dict[str, Any]:
    """Pooled figures over streams: lag and TTFT percentiles (ms), failures, broken streams."""
    lags = [v for r in results for v in r.lags_ms]
    ttfts = [r.ttft_ms for r in results if r.ttft_ms is not None]
    return {
        "streams": len(results),
        "deltas_received": len(lags),
        "failed_deltas": sum(r.failed for r in results),
        "broken_streams": sum(r.broken for r in results),
        "broken_by": dict(Counter(r.reason for r in results if r.reason is not None).most_common()),
        "lag_ms": _pcts(lags),
        "ttft_ms": _pcts(ttfts),
    }


def summarize_stop(results: Sequence[StopResult]) -> dict[str, Any]:
    """Pooled figures over cut streams: close and final-chunk times (ms), exposure, misses."""
    closes = [r.close_ms for r in results if r.close_ms is not None]
    finals = [r.final_ms for r in results if r.final_ms is not None]
    sent_after = sorted(float(r.sent_after) for r in results)
    return {
        "streams": len(results),
        "cut": sum(r.cut for r in results),
        "not_closed": sum(r.close_ms is None for r in results),
        "garbled": sum(not r.clean for r in results),
        "exposed_chars_total": sum(r.exposed for r in results),
        "exposed_chars_max": max((r.exposed for r in results), default=0),
        "sent_after_p50": percentile(sent_after, 50) if sent_after else None,
        "close_ms": _pcts(closes),
        "final_ms": _pcts(finals),
    }
