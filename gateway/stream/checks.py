"""One check of a stream's channels: the windows each kind of classifier sees, the verdict,
and which of its hits this check decides.

Keyword lists and patterns (inline classifiers) see the new text with ``context_chars`` of
released text before it, enough to see a term split across pieces whole. Models (awaited
classifiers) see ``model_context_chars`` before the new text, and at a sentence end or the end
of the stream the whole recent passage (``passage_chars``): a harmful sentence is judged
whole, not only by its last words.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from classifiers.base import Span
from gateway.metrics import Metrics
from gateway.policy import Policy
from gateway.screening import Decision, Hit, Segment, screen
from gateway.stream import chunks as ck
from gateway.stream.channels import ChannelKey, ChannelState

__all__ = ["Found", "Verdict", "check"]


@dataclass(frozen=True)
class Found:
    """A hit this check decides, on the channel it fired on.

    ``spans`` are absolute offsets in the channel's text: the hit's own spans, or for a
    whole-text verdict (a model's) the text no model had checked before.
    """

    hit: Hit
    state: ChannelState
    spans: tuple[Span, ...]


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    #: Texts the hits point into: the keyword windows, then the model windows.
    segments: list[Segment]
    found: list[Found]
    #: Per checked channel: the absolute end of what may be released.
    release_ends: dict[ChannelKey, int]


async def check(
    policy: Policy,
    states: list[ChannelState],
    final: set[ChannelKey],
    metrics: Metrics | None,
    *,
    hold: bool,
    kinds: Literal["all", "inline", "awaited"],
) -> Verdict:
    """Screen ``states``' new text. ``final`` channels end here: no tail is held back and
    models see the whole passage. In hold mode the new text is ``pending``; in async mode
    (``kinds="awaited"``) it is what was released before a model saw it."""
    settings = policy.spec.streaming
    local = [Segment(s.window, ck.channel_name(s.key), s.key) for s in states]
    models = bool(policy.awaited_classifiers) and kinds != "inline"
    # Taken before the await: in async mode more text is released while the model runs, and
    # only what it was shown counts as checked.
    ends = [s.released + len(s.pending) for s in states]
    # Where each channel's unchecked text began: a model's whole-text verdict is laid on it
    # (what came before was cleared by earlier checks).
    fresh = [min(s.model_checked, s.released) for s in states]
    passages = [s.key in final or s.ends_sentence() for s in states]
    windows: list[tuple[str, int]] = []
    if models:
        windows = [
            s.model_window(settings.model_context_chars, passage=p)
            for s, p in zip(states, passages, strict=True)
        ]
    decision = await screen(
        policy, local, "output", metrics, cache=False,
        model_texts=[w for w, _ in windows] if models else None, kinds=kinds,
    )  # fmt: skip
    if models:
        for state, end, passage in zip(states, ends, passages, strict=True):
            state.model_checked = max(state.model_checked, end)
            if passage:
                state.passage_checked = max(state.passage_checked, end)
    holdbacks = [0 if (s.key in final or not hold) else _holdback(policy, s.window) for s in states]
    awaited = {c.name for c in policy.awaited_classifiers}
    segments = list(local)
    if models:
        segments += [
            Segment(w, ck.channel_name(s.key), s.key) for s, (w, _) in zip(states, windows, strict=True)
        ]
    found = []
    #: Per channel, the start of a match that ends in the held-back tail.
    held: dict[ChannelKey, int] = {}
    for hit in decision.hits:
        state = states[hit.segment]
        if hit.classifier in awaited and models:
            text, start = windows[hit.segment]
            hit = replace(hit, segment=hit.segment + len(states))
            end = start + len(text)
            # In hold mode laid on the text no model had seen (what came before was shown
            # after earlier checks cleared it; with none, a last look at the whole passage, on
            # the passage). In async mode on the whole window: a client takes back all of it.
            first = fresh[hit.segment - len(states)]
            first = start if not hold or first >= end else first
            spans = _shifted(hit, start) or (Span(first, end, hit.code, hit.score),)
            found.append(Found(hit, state, spans))
            continue
        tail_start = state.released + len(state.pending) - holdbacks[hit.segment]
        live = _live(hit, state.window_start, state.released, tail_start)
        if live is not None:
            found.append(Found(live, state, _shifted(live, state.window_start)))
        for span in _shifted(hit, state.window_start):
            if span.end > tail_start:  # decided by the next check: none of it may go out yet
                held[state.key] = min(held.get(state.key, span.start), span.start)
    release_ends = {
        s.key: max(s.released, min(s.safe_release_end(h), held.get(s.key, s.released + len(s.pending))))
        for s, h in zip(states, holdbacks, strict=True)
    }
    return Verdict(decision, segments, found, release_ends)


def _holdback(policy: Policy, window: str) -> int:
    return max((c.holdback(window) for c in policy.streaming_classifiers), default=0)


def _shifted(hit: Hit, base: int) -> tuple[Span, ...]:
    return tuple(Span(s.start + base, s.end + base, s.code, s.score, s.detail) for s in hit.spans)


def _live(hit: Hit, base: int, released: int, tail_start: int) -> Hit | None:
    """The hit with only the spans this check decides, or None when none is left.

    Spans wholly inside the released context were decided by an earlier check. Spans that end
    inside the held-back tail may still change (a word-bounded term that turns out to be part
    of a longer word): that text stays held and the next check decides them.
    """
    if not hit.spans:
        return hit
    spans = tuple(s for s in hit.spans if released < s.end + base <= tail_start)
    return replace(hit, spans=spans) if spans else None
