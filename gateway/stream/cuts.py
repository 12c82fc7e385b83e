"""A stopping decision in a stream: what reached the client, and what to take back.

With ``n > 1`` each choice is guarded on its own: a cut ends the choices it names, and the
stream (and the upstream's generation) only when no other choice is still going.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.screening import Decision, Segment
from gateway.stream.channels import ChannelKey
from gateway.stream.checks import Found

__all__ = ["Cut", "make_cut"]


@dataclass(frozen=True)
class Cut:
    """A stopping decision in a stream, with what reached the client."""

    decision: Decision
    segments: list[Segment]
    exposed_chars: int
    offsets: list[list[int]]
    #: When the text that decided it arrived from the upstream (``time.perf_counter()``).
    arrived: float = 0.0
    #: The delivered text a client should take back (async mode): choice, channel, start, end.
    retract: dict[str, Any] | None = None
    #: The choices it ends.
    choices: frozenset[int] = field(default_factory=frozenset)


def make_cut(
    decision: Decision, stopping: list[Found], segments: list[Segment], arrived: float, *, hold: bool
) -> Cut:
    offsets = []
    retract: dict[str, Any] | None = None
    shown: dict[ChannelKey, list[tuple[int, int]]] = {}
    for found in stopping:
        state = found.state
        for span in found.spans:
            offsets.append([span.start, span.end])
            if span.start < state.released:
                shown.setdefault(state.key, []).append((span.start, min(span.end, state.released)))
                if not hold:
                    # To the end of what was shown: text released while the check ran continues
                    # what it flagged.
                    retract = _widen(retract, state.key, span.start, state.released)
    # Several hits can lie on the same text (a model's passage and its last sentence).
    exposed = sum(_covered(spans) for spans in shown.values())
    choices = frozenset(f.state.key[0] for f in stopping)
    return Cut(decision, segments, exposed, offsets, arrived, retract, choices)


def _covered(spans: list[tuple[int, int]]) -> int:
    total, reach = 0, -1
    for start, end in sorted(spans):
        start = max(start, reach)
        if end > start:
            total += end - start
            reach = end
    return total


def _widen(retract: dict[str, Any] | None, key: ChannelKey, start: int, end: int) -> dict[str, Any]:
    """The span to retract on the first channel cut, widened over its further spans."""
    choice, channel, call = key
    if retract is None:
        retract = {"choice": choice, "channel": channel, "start": start, "end": end}
        if call >= 0:
            retract["tool_call"] = call
        return retract
    if (retract["choice"], retract["channel"], retract.get("tool_call", -1)) == key:
        retract["start"], retract["end"] = min(retract["start"], start), max(retract["end"], end)
    return retract
