"""A stream's flag and redact hits: noted once per span as checks find them, recorded as one
incident when the stream ends (a stopping hit is recorded with its cut instead)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.policy import Action, Policy
from gateway.screening import Decision, Hit, Segment
from gateway.stream.channels import ChannelKey
from gateway.stream.checks import Found

__all__ = ["SoftHits"]


@dataclass
class SoftHits:
    hits: list[Hit] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    #: Absolute offsets of the hits' spans (theirs are in their segments' texts).
    offsets: list[list[int]] = field(default_factory=list)
    seen: set[tuple[ChannelKey, str, int, int]] = field(default_factory=set)
    exposed: int = 0

    def note(self, found: Found, segment: Segment) -> None:
        """Note a flag or redact hit once per span (a span can be seen by several checks)."""
        hit, state = found.hit, found.state
        spans = []
        for s in found.spans:
            key = (state.key, s.code, s.start, s.end)
            if key not in self.seen:
                self.seen.add(key)
                spans.append(s)
        if found.spans and not spans:
            return
        if hit.action == "redact":
            state.redactions.extend(s for s in spans if s.end > state.released)
        # In async mode part of a span may already be on the client's screen.
        self.exposed += sum(max(0, min(s.end, state.released) - s.start) for s in spans)
        self.offsets += [[s.start, s.end] for s in spans]
        own = found.within(spans, len(segment.text))
        self.hits.append(Hit(hit.code, hit.score, hit.classifier, hit.action, len(self.segments), own))
        self.segments.append(segment)

    def take(self, policy: Policy) -> tuple[Decision, list[Segment], int, list[list[int]]] | None:
        """What to record (a recorder's arguments), once; None when nothing was noted."""
        if not self.hits:
            return None
        hits = tuple(self.hits)
        action: Action = "redact" if any(h.action == "redact" for h in hits) else "flag"
        decision = Decision(action, "output", policy.name, policy.version, hits)
        taken = (decision, self.segments, self.exposed, sorted(self.offsets))
        self.hits, self.segments, self.offsets, self.exposed = [], [], [], 0
        return taken
