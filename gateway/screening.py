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

from classifiers.base import Classifier, InlineClassifier, Scores, Span
from classifiers.lru import LRU
from gateway.metrics import Metrics
from gateway.policy import Action, Policy, severity

__all__ = ["ERROR_CODE", "Decision", "Direction", "Hit", "Segment", "redact", "screen"]

log = logging.getLogger(__name__)

Direction = Literal["input", "output"]
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
        return self.action in ("refuse", "block")

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


async def _run(clf: Classifier, texts: list[str], limit_s: float, metrics: Metrics | None) -> Any:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(limit_s):
            result = await clf.classify(texts)
    except Exception as exc:  # a failing classifier must not take the request down; on_error decides
        return _failed(clf.name, exc, metrics)
    if metrics:
        metrics.classifier_done(clf.name, time.perf_counter() - start)
    return result


def _error_hits(policy: Policy, name: str, n: int) -> list[Hit]:
    on_error = policy.spec.on_error
    if on_error == "allow":
        return []
    return [Hit(ERROR_CODE, 1.0, name, on_error, i) for i in range(n)]


async def screen(
    policy: Policy,
    segments: Sequence[Segment],
    direction: Direction,
    metrics: Metrics | None = None,
    *,
    cache: bool = True,
    kinds: Literal["all", "inline", "awaited"] = "all",
) -> Decision:
    """Run every classifier of the policy over the segments and apply its rules.

    ``cache=False`` for texts that will not come again (stream windows), so they do not push
    the repeated ones out of the cache. ``kinds`` runs only the inline classifiers or only the
    awaited ones (a stream checks keyword lists before it waits for a model).
    """
    texts = [s.text for s in segments]
    inline = policy.inline_classifiers if kinds != "awaited" else ()
    awaited = policy.awaited_classifiers if kinds != "inline" else ()
    if not texts or not (inline or awaited):
        return Decision("allow", direction, policy.name, policy.version, (), tuple({} for _ in texts))
    names = [c.name for c in inline] + [c.name for c in awaited]
    lru = policy.scan_cache if cache else None
    results = _run_inline(inline, texts, lru, metrics) if inline else []
    timeout = policy.spec.classifier_timeout_s
    if len(awaited) == 1:
        results.append(await _run(awaited[0], texts, timeout, metrics))
    elif awaited:
        results.extend(await asyncio.gather(*(_run(c, texts, timeout, metrics) for c in awaited)))
    hits: list[Hit] = []
    scores: list[dict[str, float]] = [{} for _ in texts]
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException) or len(result) != len(texts):
            hits.extend(_error_hits(policy, name, len(texts)))
            continue
        for i, verdict in enumerate(result):
            hits.extend(_hits(policy, verdict, i, direction, scores[i]))
    action: Action = max((h.action for h in hits), key=severity, default="allow")
    return Decision(action, direction, policy.name, policy.version, tuple(hits), tuple(scores))


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
