"""One streamed text channel (a choice's content, reasoning or one tool call's arguments).

Text arrives in pieces, waits in ``pending`` until a check covers it, and is released in
order. The left ``context`` (already released text) is re-checked with the pending text so
that a term split across pieces is seen whole. Offsets here are absolute: characters since
the start of the channel's text.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from classifiers.base import Span

__all__ = ["ChannelKey", "ChannelState"]

#: (choice index, channel name, tool-call index or -1)
ChannelKey = tuple[int, str, int]


@dataclass
class ChannelState:
    key: ChannelKey
    context_chars: int
    #: Absolute offset of the first pending character (= characters released so far).
    released: int = 0
    context: str = ""
    pending: str = ""
    #: Spans (absolute offsets) to replace on release, with the replacement text.
    redactions: list[Span] = field(default_factory=list)
    #: (arrival time, absolute end offset) of each pending piece, for hold-back metrics.
    arrivals: deque[tuple[float, int]] = field(default_factory=deque)
    #: Absolute end of what the current batch's check cleared for release.
    release_end: int = 0
    #: Characters emitted so far in the current batch, absolute.
    _emitted: int = 0

    def add(self, text: str, now: float) -> None:
        self.pending += text
        self.arrivals.append((now, self.released + len(self.pending)))

    @property
    def window(self) -> str:
        return self.context + self.pending

    @property
    def window_start(self) -> int:
        return self.released - len(self.context)

    def begin_batch(self) -> None:
        self._emitted = self.released
        self.release_end = self.released

    def safe_release_end(self, holdback: int) -> int:
        """Absolute end of what may be released, never cutting a span to be redacted."""
        end = self.released + max(0, len(self.pending) - holdback)
        for span in self.redactions:
            if span.start < end < span.end:
                end = span.start
        return max(end, self.released)

    def emit_until(self, end: int, replacement: str) -> str:
        """Text for the client from the last emitted offset up to ``end`` (absolute), at most
        up to what the check cleared."""
        end = min(end, self.release_end)
        start = self._emitted
        if end <= start:
            return ""
        self._emitted = end
        if not self.redactions:
            return self.pending[start - self.released : end - self.released]
        out = []
        pos = start
        for span in sorted(self.redactions, key=lambda s: s.start):
            if span.end <= pos or span.start >= end:
                continue
            out.append(self.pending[pos - self.released : max(pos, span.start) - self.released])
            if span.start >= start:
                out.append(replacement)
            pos = min(span.end, end)
        out.append(self.pending[pos - self.released : end - self.released])
        return "".join(out)

    def commit(self, end: int) -> list[float]:
        """Move ``[released, end)`` from pending to context; returns hold times of finished pieces."""
        n = end - self.released
        if n <= 0:
            return []
        done = self.pending[:n]
        self.pending = self.pending[n:]
        self.context = (self.context + done)[-self.context_chars :]
        self.released = end
        self.redactions = [s for s in self.redactions if s.end > end]
        now = time.perf_counter()
        waits = []
        while self.arrivals and self.arrivals[0][1] <= end:
            waits.append(now - self.arrivals.popleft()[0])
        return waits

    @property
    def unemitted(self) -> bool:
        return self._emitted < self.release_end
