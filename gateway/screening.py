"""Screening: texts → classifier scores → policy rules → one :class:`Decision`.

The screener knows nothing about HTTP or API dialects: adapters turn requests and responses
into :class:`Segment` lists and apply the decision back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from classifiers.base import Direction, InlineClassifier, Scores, Span
from classifiers.guarded import failure_kind
from classifiers.lru import LRU
from gateway.cascade import Member
from gateway.metrics import Metrics
from gateway.policy import STOPPING, Action, Policy, severity

__all__ = ["ERROR_CODE", "Decision", "Direction", "Hit", "Segment", "redact", "screen"]

log = logging.getLogger(__name__)

#: Risk code recorded when a classifier fails and ``on_error`` turns the failure into a decision.
ERROR_CODE = "X.classifier_error"


@dataclass(frozen=True, slots=True)
class Segment:
    """One text to screen, with the channel it came from and where it sits in the payload."""

    text: str
    channel: str
    where: tuple[str | int, ...] = ()


@dataclass(frozen=True, slots=True)
class Hit:
    """A risk code that scored at or above its rule's threshold in one segment."""

    code: str
    score: float
    classifier: str
    action: Action
    segment: int
    spans: tuple[Span, ...] = ()

    @property
    def stops(self) -> bool:
        """True when this hit's rule keeps its content from the destination (refuse or block)."""
        return self.action in STOPPING


@dataclass(frozen=True)
class Decision:
    action: Action
    direction: Direction
    policy: str
    policy_version: str
    hits: tuple[Hit, ...] = ()
    #: Per segment: the highest score of each risk code over all classifiers.
    scores: tuple[dict[str, float], ...] = field(default=(), repr=False)

    @property
    def stops(self) -> bool:
        """True when the content must not reach its destination (refuse or block)."""
        return self.action in STOPPING

    def note(self, incident_id: str | None) -> dict[str, Any]:
        """The ``modgate`` object a response carries: what was done, why, and the incident to
        cite in a complaint (codes only: scores and spans stay in the incident record)."""
        return {
            "action": self.action,
            "incident_id": incident_id,
            "risks": [r["code"] for r in self.risks()],
            "policy_version": self.policy_version,
        }

    def risks(self) -> list[dict[str, Any]]:
        """The fired risks for records and error bodies: code, score, classifier, action."""
        best: dict[str, Hit] = {}
        for hit in self.hits:
            if hit.code not in best or hit.score > best[hit.code].score:
                best[hit.code] = hit
        return [
            {"code": h.code, "score": round(h.score, 4), "classifier": h.classifier, "action": h.action}
            for h in sorted(best.values(), key=lambda h: (-severity(h.action), h.code))
        ]


def _failed(name: str, exc: Exception, metrics: Metrics | None) -> Exception:
    log.warning("classifier failed classifier=%s error=%s", name, type(exc).__name__)
    if metrics:
        metrics.classifier_errors.labels(name).inc()
    return exc


#: Texts longer than this are scanned every time rather than kept in the per-policy cache.
CACHE_MAX_CHARS = 4096


def _run_inline(
    classifiers: Sequence[InlineClassifier],
    texts: list[str],
    cache: LRU[str, tuple[Scores, ...]] | None,
    metrics: Metrics | None,
) -> list[Any]:
    """Per classifier, its verdicts on ``texts`` (or the exception it raised).

    A text seen before (the system prompt and the chat history are re-sent on every turn) is
    answered from the policy's cache, one look-up for all inline classifiers: a scan is a pure
    function of the text.
    """
    cached = [cache.get(text) for text in texts] if cache is not None else [None] * len(texts)
    todo = [i for i, hit in enumerate(cached) if hit is None]
    out: list[Any] = []
    for j, clf in enumerate(classifiers):
        verdicts: list[Any] = [hit[j] if hit is not None else None for hit in cached]
        if todo:
            start = time.perf_counter()
            try:
                for i in todo:
                    verdicts[i] = clf.scan(texts[i])
            except Exception as exc:  # a failing classifier must not take the request down
                out.append(_failed(clf.name, exc, metrics))
                continue
            if metrics:
                metrics.classifier_done(clf.name, time.perf_counter() - start)
        out.append(verdicts)
    if cache is not None and todo and not any(isinstance(r, BaseException) for r in out):
        for i in todo:
            if len(texts[i]) <= CACHE_MAX_CHARS:
                cache.put(texts[i], tuple(r[i] for r in out))
    return out


async def _run(member: Member, texts: list[str], direction: Direction, metrics: Metrics | None) -> Any:
    start = time.perf_counter()
    runner = member.runner
    try:
        result = await runner.classify(texts, direction)
    except Exception as exc:  # a failing classifier must not take the request down; on_error decides
        if metrics:
            reason = failure_kind(exc)
            metrics.child(metrics.classifier_fallbacks, member.name, reason, member.on_error).inc()
        return _failed(member.name, exc, metrics)
    finally:
        if metrics and runner.breaker is not None:
            metrics.child(metrics.classifier_circuit_open, member.name).set(runner.breaker.state != "closed")
    if metrics:
        metrics.classifier_done(member.name, time.perf_counter() - start)
    return result


def _error_hits(name: str, on_error: Action, segments: Sequence[int]) -> list[Hit]:
    if on_error == "allow":
        return []
    return [Hit(ERROR_CODE, 1.0, name, on_error, i) for i in segments]


async def screen(
    policy: Policy,
    segments: Sequence[Segment],
    direction: Direction,
    metrics: Metrics | None = None,
    *,
    cache: bool = True,
    kinds: Literal["all", "inline", "awaited"] = "all",
    route: str | None = None,
) -> Decision:
    """Run the policy's classifiers over the segments and apply its rules.

    Inline classifiers first, then the awaited ones stage by stage (``gateway.cascade``): a
    later stage sees what the earlier ones scored, and skips the texts already blocked.
    ``cache=False`` for texts that will not come again (stream windows), so they do not push
    the repeated ones out of the cache. ``kinds`` runs only the inline classifiers or only the
    awaited ones (a stream checks keyword lists before it waits for a model). ``route`` is the
    gateway route's name, for classifiers that run on some routes only.
    """
    texts = [s.text for s in segments]
    inline = policy.inline_classifiers if kinds != "awaited" else ()
    stages = policy.stages if kinds != "inline" else ()
    hits: list[Hit] = []
    scores: list[dict[str, float]] = [{} for _ in texts]
    if texts and inline:
        results = _run_inline(inline, texts, policy.scan_cache if cache else None, metrics)
        for clf, result in zip(inline, results, strict=True):
            _collect(policy, direction, clf.name, result, range(len(texts)), hits, scores)
    for stage in stages if texts else ():
        # A text already blocked needs no later look: nothing found can be more severe.
        settled = {h.segment for h in hits if h.action == "block"}
        planned = _plan(stage, scores, settled, route, direction, metrics)
        runs = [_run(m, [texts[i] for i in idx], direction, metrics) for m, idx in planned]
        # One model is the common case: awaiting it directly spares a task per request.
        results = [await runs[0]] if len(runs) == 1 else await asyncio.gather(*runs)
        for (member, idx), result in zip(planned, results, strict=True):
            if isinstance(result, BaseException) or len(result) != len(idx):
                hits.extend(_error_hits(member.name, member.on_error, idx))
                continue
            _collect(policy, direction, member.name, result, idx, hits, scores)
    action: Action = max((h.action for h in hits), key=severity, default="allow")
    return Decision(action, direction, policy.name, policy.version, tuple(hits), tuple(scores))


def _plan(
    stage: Sequence[Member],
    scores: list[dict[str, float]],
    settled: set[int],
    route: str | None,
    direction: Direction,
    metrics: Metrics | None,
) -> list[tuple[Member, list[int]]]:
    """Which member runs on which texts: its route and direction, the texts not yet blocked,
    and for a cascade those the earlier stages were unsure about."""
    planned = []
    for member in stage:
        idx = (
            [i for i in member.targets(scores) if i not in settled]
            if member.applies(route, direction)
            else []
        )
        if metrics and member.run.stage:
            metrics.child(metrics.cascade_texts, member.name, "ran").inc(len(idx))
            metrics.child(metrics.cascade_texts, member.name, "skipped").inc(len(scores) - len(idx))
        if idx:
            planned.append((member, idx))
    return planned


def _collect(
    policy: Policy,
    direction: Direction,
    name: str,
    result: Any,
    idx: Sequence[int],
    hits: list[Hit],
    scores: list[dict[str, float]],
) -> None:
    """Fold one classifier's verdicts on the texts ``idx`` (or its failure) into ``hits`` and
    ``scores``."""
    if isinstance(result, BaseException):
        hits.extend(_error_hits(name, policy.spec.on_error, idx))
        return
    for i, verdict in zip(idx, result, strict=True):
        hits.extend(_hits(policy, verdict, i, direction, scores[i]))


def _hits(
    policy: Policy, verdict: Scores, segment: int, direction: Direction, best: dict[str, float]
) -> list[Hit]:
    out = []
    for code, score in verdict.scores.items():
        if score > best.get(code, 0.0):
            best[code] = score
        action = policy.action_for(code, score, direction)
        if action != "allow":
            spans = tuple(s for s in verdict.spans if s.code == code)
            if action == "redact" and not spans:
                action = "refuse"  # nothing to mask without spans: refusing is the safe reading
            out.append(Hit(code, score, verdict.classifier, action, segment, spans))
    return out


def redact(text: str, spans: Sequence[Span], replacement: str) -> str:
    """Replace each span (original offsets; overlaps merged) with ``replacement``."""
    merged: list[list[int]] = []
    for span in sorted(spans, key=lambda s: s.start):
        if merged and span.start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], span.end)
        else:
            merged.append([span.start, span.end])
    out, pos = [], 0
    for start, end in merged:
        out.append(text[pos:start])
        out.append(replacement)
        pos = end
    out.append(text[pos:])
    return "".join(out)
