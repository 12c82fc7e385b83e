"""Incidents: the record of every non-allow decision, written before the response is sent."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from classifiers.base import Span
from gateway.privacy import mask_pii
from gateway.screening import Decision, Segment

__all__ = ["Incident", "build_incident", "new_id"]

EXCERPT_CONTEXT = 60
EXCERPT_MAX = 400
_TOKEN_MAX = 40  # how far a cut moves to keep a number or address whole


def new_id(prefix: str) -> str:
    """Time-ordered unique id: 12 hex digits of milliseconds, then 10 random hex digits."""
    return f"{prefix}_{int(time.time() * 1000):012x}{os.urandom(5).hex()}"


@dataclass(frozen=True)
class Incident:
    id: str
    created_at: float
    request_id: str
    tenant: str
    route: str
    model: str | None
    direction: str
    channel: str
    action: str
    risks: list[dict[str, Any]]
    policy: str
    policy_version: str
    excerpt: str = ""
    #: [start, end] character offsets of the fired spans within the screened text.
    offsets: list[list[int]] = field(default_factory=list)
    #: Violating characters that reached the client before the decision (0 in hold mode).
    exposed_chars: int = 0
    #: The user's pseudonym (``gateway.privacy.Pseudonymizer``), never the raw id; None: no user.
    user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Incident:
        return cls(**data)


def _excerpt(text: str, spans: Sequence[Span]) -> str:
    """The text around the spans, with personal data masked. The cut never falls inside a run
    of digits or an address, so that no half of a phone or card number escapes the masking."""
    if spans:
        start = max(0, min(s.start for s in spans) - EXCERPT_CONTEXT)
        end = min(len(text), max(s.end for s in spans) + EXCERPT_CONTEXT)
    else:
        start, end = 0, min(len(text), EXCERPT_MAX)
    floor, ceiling = max(0, start - _TOKEN_MAX), min(len(text), end + _TOKEN_MAX)
    while start > floor and _in_token(text, start - 1, -1):
        start -= 1
    while end < ceiling and _in_token(text, end, 1):
        end += 1
    return mask_pii(text[start:end])[: EXCERPT_MAX + 2 * _TOKEN_MAX]


def _in_token(text: str, i: int, step: int) -> bool:
    char = text[i]
    if char in " -":  # a separator inside a grouped number: "4111 1111 1111 1111"
        beyond = i + step
        return 0 <= beyond < len(text) and text[beyond].isdigit()
    return char.isascii() and (char.isalnum() or char in "@.+_")


def build_incident(
    decision: Decision,
    segments: Sequence[Segment],
    *,
    request_id: str,
    tenant: str,
    route: str,
    model: str | None,
    exposed_chars: int = 0,
    offsets: list[list[int]] | None = None,
    user: str | None = None,
) -> Incident:
    """Package a decision; the excerpt comes from the most severe hit's segment. ``offsets``
    replaces the spans' own (a stream guard knows them in whole-answer coordinates)."""
    from gateway.policy import severity

    worst = max(decision.hits, key=lambda h: (severity(h.action), h.score))
    segment = segments[worst.segment] if worst.segment < len(segments) else Segment("", "unknown")
    spans = [s for h in decision.hits if h.segment == worst.segment for s in h.spans]
    return Incident(
        id=new_id("inc"),
        created_at=time.time(),
        request_id=request_id,
        tenant=tenant,
        route=route,
        model=model,
        direction=decision.direction,
        channel=segment.channel,
        action=decision.action,
        risks=decision.risks(),
        policy=decision.policy,
        policy_version=decision.policy_version,
        excerpt=_excerpt(segment.text, spans),
        offsets=offsets if offsets is not None else sorted([s.start, s.end] for s in spans),
        exposed_chars=exposed_chars,
        user=user,
    )
