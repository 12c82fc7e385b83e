"""One check of a stream's channels: the windows each kind of classifier sees, the verdict,
and which of its hits this check decides.

Keyword lists and patterns (inline classifiers) see the new text with ``context_chars`` of
released text before it, enough to see a term split across pieces whole. Models (awaited
classifiers) see ``model_context_chars`` before the new text, and at a sentence end or the end
of the stream the whole recent passage (``passage_chars``): a harmful sentence is judged
whole, not only by its last words.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from classifiers.base import Span
from gateway.metrics import Metrics
from gateway.policy import Policy
from gateway.screening import Decision, Hit, Segment, screen
from gateway.stream import chunks as ck
from gateway.stream.channels import ChannelKey, ChannelState

__all__ = ["Found", "Verdict", "check_lists", "check_models"]


@dataclass(frozen=True)
class Found:
    """A hit this check decides, on the channel it fired on.

    ``spans`` are absolute offsets in the channel's text: the hit's own spans, or for a
    whole-text verdict (a model's) the text no model had checked before.
    """

    hit: Hit
    state: ChannelState
    spans: tuple[Span, ...]
    #: Absolute offset of the first character of the text the hit was found in.
    base: int = 0

    def within(self, spans: list[Span], size: int) -> tuple[Span, ...]:
        """``spans`` (absolute) as offsets in the hit's text of ``size`` characters, as records
        take them."""

        def clip(offset: int) -> int:
            return min(max(offset - self.base, 0), size)

        return tuple(Span(clip(s.start), clip(s.end), s.code, s.score, s.detail) for s in spans)


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    #: Texts the hits point into.
    segments: list[Segment]
    found: list[Found]
    #: Per checked channel: the absolute end of what may be released (the lists' and patterns'
    #: hold-back decides it; a model's verdict holds nothing back).
    release_ends: dict[ChannelKey, int] = field(default_factory=dict)


async def check_lists(
    policy: Policy,
    states: list[ChannelState],
    final: set[ChannelKey],
    metrics: Metrics | None,
    *,
    hold: bool,
    route: str | None = None,
) -> Verdict:
    """Keyword lists and patterns on ``states``' pending text with its left context. ``final``
    channels end here: no tail is held back."""
    segments = [Segment(s.window, ck.channel_name(s.key), s.key) for s in states]
    decision = await screen(policy, segments, "output", metrics, cache=False, kinds="inline", route=route)
    holdbacks = [0 if (s.key in final or not hold) else _holdback(policy, s.window) for s in states]
    found = []
    #: Per channel, the start of a match that ends in the held-back tail.
    held: dict[ChannelKey, int] = {}
    for hit in decision.hits:
        state = states[hit.segment]
        tail_start = state.released + len(state.pending) - holdbacks[hit.segment]
        live = _live(hit, state.window_start, state.released, tail_start)
        if live is not None:
            found.append(Found(live, state, _shifted(live, state.window_start), state.window_start))
        for span in _shifted(hit, state.window_start):
            if span.end > tail_start:  # decided by the next check: none of it may go out yet
                held[state.key] = min(held.get(state.key, span.start), span.start)
    release_ends = {
        s.key: max(s.released, min(s.safe_release_end(h), held.get(s.key, s.released + len(s.pending))))
        for s, h in zip(states, holdbacks, strict=True)
    }
    return Verdict(decision, segments, found, release_ends)


async def check_models(
    policy: Policy,
    states: list[ChannelState],
    final: set[ChannelKey],
    metrics: Metrics | None,
    *,
    hold: bool,
    route: str | None = None,
) -> Verdict:
    """Model classifiers on the text no model has seen, with ``model_context_chars`` before it;
    at a sentence end and for ``final`` channels, on the whole recent passage and on the last
    sentence alone (a benign lead-in dilutes a harmful sentence in the passage's verdict). In
    hold mode the new text is ``pending``; in async mode what was released before a model saw it.
    """
    settings = policy.spec.streaming
    # Taken before the await: in async mode more text is released while the model runs, and
    # only what it was shown counts as checked.
    ends = [s.released + len(s.pending) for s in states]
    # Where each channel's unchecked text began: in hold mode a verdict is laid on it (what
    # came before was shown after earlier checks cleared it).
    fresh = [min(s.model_checked, s.released) for s in states]
    passages = [s.key in final or s.ends_sentence() for s in states]
    # Where each passage's last sentence ends, taken now: in hold mode more text comes meanwhile.
    sentence_ends = [
        s.last_sentence_end() if passage else 0 for s, passage in zip(states, passages, strict=True)
    ]
    #: (channel index, text, absolute start, judged at the rules' thresholds) per text the
    #: models see: a passage is; a window that ends mid-sentence, or the last sentence alone,
    #: stops a stream only at ``window_min_score``. Out of context a short sentence misleads a
    #: model as a partial one does (benign answers were cut on "Wake up as the call to prayer
    #: echoes across the city."); a harmful one that its passage dilutes still stops when
    #: the verdict is strong.
    seen: list[tuple[int, str, int, bool]] = []
    for i, (state, passage) in enumerate(zip(states, passages, strict=True)):
        text, start = state.model_window(settings.model_context_chars, passage=passage)
        seen.append((i, text, start, passage))
        sentence, at = state.last_sentence() if passage else ("", 0)
        if sentence and sentence != text.strip():
            seen.append((i, sentence, at, False))
    segments = [Segment(text, ck.channel_name(states[i].key), states[i].key) for i, text, _, _ in seen]
    decision = await screen(policy, segments, "output", metrics, cache=False, kinds="awaited", route=route)
    for state, end, passage, sentence_end in zip(states, ends, passages, sentence_ends, strict=True):
        state.model_checked = max(state.model_checked, end)
        if passage:
            state.passage_checked = max(state.passage_checked, end)
            state.sentence_checked = max(state.sentence_checked, sentence_end)
    found = []
    for hit in decision.hits:
        i, text, start, whole = seen[hit.segment]
        if not whole and hit.score < settings.window_min_score:
            # A window that ends mid-sentence (even mid-word) misleads a model far more often
            # than a whole passage: benign answers streamed in 4-character deltas were cut
            # several times as often as the same answers whole (benchmarks/answers.py).
            continue
        end = start + len(text)
        # In async mode a client takes back all the model saw; in hold mode the verdict is laid
        # on the new text (or, for a last look at the whole passage, on the passage).
        first = fresh[i] if hold and fresh[i] < end else start
        spans = _shifted(hit, start) or (Span(first, end, hit.code, hit.score),)
        found.append(Found(hit, states[i], spans, start))
    return Verdict(decision, segments, found)


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
