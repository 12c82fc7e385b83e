"""The stream guard for OpenAI chat-completion streams.

Stages: ``upstream bytes → SSE batches (sse.py) → chunks → text per channel (channels.py)
→ one check per batch → rewritten chunks → explicit label (labeling.py), when the policy
asks for one → SSE bytes``.

``hold`` mode releases a channel's text only after a check covered it and holds back the
tail that could still complete a term or pattern; ``async`` mode releases at once and checks
the same text right after. On a stopping decision the guard closes the upstream response
first (generation stops), records the incident, then sends a final ``content_filter`` chunk
and ``[DONE]``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from classifiers.base import Span
from gateway.errors import UpstreamUnavailable
from gateway.metrics import Metrics
from gateway.policy import Action, Policy, severity
from gateway.screening import Decision, Hit, Segment, screen
from gateway.stream import chunks as ck
from gateway.stream.channels import ChannelKey, ChannelState
from gateway.stream.labeling import StreamLabel
from gateway.stream.sse import SSEEvent, encode_data, sse_batches

__all__ = ["Cut", "StreamGuard"]

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Cut:
    """A stopping decision in a stream, with what reached the client."""

    decision: Decision
    segments: list[Segment]
    exposed_chars: int
    offsets: list[list[int]]


Recorder = Callable[[Decision, list[Segment], int, list[list[int]]], Awaitable[str | None]]


@dataclass
class StreamGuard:
    policy: Policy
    #: Records an incident and returns its id (awaited before the final chunk is sent).
    record: Recorder
    close_upstream: Callable[[], Awaitable[None]]
    metrics: Metrics | None = None
    on_holdback: Callable[[float], None] = lambda _s: None
    on_cut: Callable[[Decision], None] = lambda _d: None
    channels: dict[ChannelKey, ChannelState] = field(default_factory=dict)
    soft_hits: list[Hit] = field(default_factory=list)
    soft_segments: list[Segment] = field(default_factory=list)
    soft_seen: set[tuple[ChannelKey, str, int, int]] = field(default_factory=set)
    soft_exposed: int = 0
    #: Choices whose finish chunk reached the client; a cut leaves them alone.
    finished: set[int] = field(default_factory=set)
    template: dict[str, Any] = field(default_factory=dict)
    #: The explicit label stage; None when the policy asks for none or the answer must be JSON.
    label: StreamLabel | None = None

    @property
    def hold(self) -> bool:
        return self.policy.spec.streaming.mode == "hold"

    def _channel(self, key: ChannelKey) -> ChannelState:
        state = self.channels.get(key)
        if state is None:
            state = self.channels[key] = ChannelState(key, self.policy.spec.streaming.context_chars)
        return state

    async def run(self, upstream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for batch in sse_batches(upstream):
            out, cut, done = await self._batch(batch)
            if out:
                yield out
            if cut is not None:
                yield await self._cut(cut)
                return
            if done:
                break
        out, cut = await self._finish()
        if out:
            yield out
        if cut is not None:
            yield await self._cut(cut)
            return
        await self._record_soft()
        yield DONE

    async def _batch(self, events: list[SSEEvent]) -> tuple[bytes, Cut | None, bool]:
        parsed: list[tuple[SSEEvent, dict[str, Any] | None, dict[ChannelKey, int]]] = []
        now = time.perf_counter()
        finishing: set[int] = set()
        for event in events:
            if event.data == "[DONE]":
                # Whatever follows [DONE] is not part of the answer; the guard ends the stream.
                break
            chunk = ck.parse_chunk(event)
            if chunk is None and event.data is not None:
                # Text we cannot parse must not reach the client unscreened.
                raise UpstreamUnavailable("the upstream sent a stream event that is not a JSON object")
            if chunk is None and event.comment is None:
                continue  # no data and no comment: nothing a client could use (SSE spec: ignore)
            ends: dict[ChannelKey, int] = {}
            if chunk is not None:
                self.template = ck.template_of(chunk, self.template)
                for key, text in ck.texts(chunk):
                    state = self._channel(key)
                    state.add(text, now)
                    ends[key] = state.released + len(state.pending)
                finishing.update(ck.finished_choices(chunk))
            parsed.append((event, chunk, ends))
        done = any(e.data == "[DONE]" for e in events)
        final = {key for key in self.channels if done or key[0] in finishing}
        cut = await self._check(final)
        if cut is not None:
            return b"", cut, done
        out = self._render(parsed)
        self.finished |= finishing
        return out, None, done

    async def _finish(self) -> tuple[bytes, Cut | None]:
        """The upstream ended (with or without ``[DONE]``): a last check with no hold-back."""
        if not self.template:
            raise UpstreamUnavailable("the upstream stream ended without a single completion chunk")
        cut = await self._check(set(self.channels))
        if cut is not None:
            return b"", cut
        out = self._leftovers()  # first: the end label goes after the last text
        return out + (self.label.flush(self.template) if self.label is not None else b""), None

    async def _check(self, final: set[ChannelKey]) -> Cut | None:
        dirty = [s for s in self.channels.values() if s.pending]
        for state in self.channels.values():
            state.begin_batch()
        if not dirty:
            return None
        segments = [Segment(s.window, ck.channel_name(s.key), s.key) for s in dirty]
        decision = await screen(self.policy, segments, "output", self.metrics, cache=False)
        holdbacks = [0 if (s.key in final or not self.hold) else self._holdback(s.window) for s in dirty]
        hits = [
            live
            for h in decision.hits
            if (
                live := _live(
                    h, len(dirty[h.segment].context), len(segments[h.segment].text) - holdbacks[h.segment]
                )
            )
        ]
        stopping = [h for h in hits if h.action in ("refuse", "block")]
        if stopping:
            action = max((h.action for h in stopping), key=severity)
            cut_decision = Decision(action, "output", decision.policy, decision.policy_version, tuple(hits))
            return self._make_cut(cut_decision, stopping, dirty, segments)
        for hit in hits:
            self._soft(hit, dirty[hit.segment], segments[hit.segment])
        for state, holdback in zip(dirty, holdbacks, strict=True):
            state.release_end = state.safe_release_end(holdback)
        return None

    def _holdback(self, window: str) -> int:
        return max((c.holdback(window) for c in self.policy.streaming_classifiers), default=0)

    def _soft(self, hit: Hit, state: ChannelState, segment: Segment) -> None:
        """Note a flag or redact hit once per span (a span can be seen by several checks)."""
        shift = state.window_start
        spans = []
        for s in hit.spans:
            key = (state.key, s.code, s.start + shift, s.end + shift)
            if key not in self.soft_seen:
                self.soft_seen.add(key)
                spans.append(Span(s.start + shift, s.end + shift, s.code, s.score, s.detail))
        if hit.spans and not spans:
            return
        if hit.action == "redact":
            state.redactions.extend(s for s in spans if s.end > state.released)
        # In async mode part of a span may already be on the client's screen.
        self.soft_exposed += sum(max(0, min(s.end, state.released) - s.start) for s in spans)
        self.soft_hits.append(
            Hit(hit.code, hit.score, hit.classifier, hit.action, len(self.soft_segments), tuple(spans))
        )
        self.soft_segments.append(segment)

    def _make_cut(
        self, decision: Decision, stopping: list[Hit], dirty: list[ChannelState], segments: list[Segment]
    ) -> Cut:
        exposed = 0
        offsets = []
        for hit in stopping:
            state = dirty[hit.segment]
            for span in hit.spans:
                start, end = span.start + state.window_start, span.end + state.window_start
                offsets.append([start, end])
                exposed += max(0, min(end, state.released) - start)
        return Cut(decision, segments, exposed, offsets)

    def _render(self, parsed: list[tuple[SSEEvent, dict[str, Any] | None, dict[ChannelKey, int]]]) -> bytes:
        out = bytearray()
        redaction = self.policy.spec.refusal.redaction
        for event, chunk, ends in parsed:
            if chunk is None:
                out += event.raw  # comments, keep-alives, non-JSON events pass as they came
                continue
            rewritten, changed = ck.rewrite(chunk, ends, self.channels, redaction)
            if rewritten is None:
                continue
            if self.label is not None:
                labels, relabeled = self.label.before(rewritten, self.template)
                out += labels
                if relabeled is not None:
                    rewritten, changed = relabeled, True
            out += event.raw if not changed else encode_data(orjson.dumps(rewritten))
        out += self._leftovers()
        for state in self.channels.values():
            for wait in state.commit(state.release_end):
                self.on_holdback(wait)
        return bytes(out)

    def _leftovers(self) -> bytes:
        """Released text that no chunk of this batch carried (held from earlier batches)."""
        extra = ck.leftover_chunk(self.channels, self.template, self.policy.spec.refusal.redaction)
        if not extra:
            return b""
        labels = self.label.before(extra, self.template)[0] if self.label is not None else b""
        return labels + encode_data(orjson.dumps(extra))

    async def _cut(self, cut: Cut) -> bytes:
        await self.close_upstream()
        self.on_cut(cut.decision)
        incident_id = await self.record(cut.decision, cut.segments, cut.exposed_chars, cut.offsets)
        await self._record_soft()
        final = ck.cut_chunk(
            self.template, self.channels, self.policy, cut.decision, incident_id, self.finished
        )
        if self.label is not None:
            self.label.into_cut(final)
        return encode_data(orjson.dumps(final)) + DONE

    async def _record_soft(self) -> None:
        if not self.soft_hits:
            return
        hits, self.soft_hits = tuple(self.soft_hits), []
        action: Action = "redact" if any(h.action == "redact" for h in hits) else "flag"
        decision = Decision(action, "output", self.policy.name, self.policy.version, hits)
        offsets = sorted([s.start, s.end] for h in hits for s in h.spans)
        await self.record(decision, self.soft_segments, self.soft_exposed, offsets)


def _live(hit: Hit, context_len: int, tail_start: int) -> Hit | None:
    """The hit with only the spans this check decides, or None when none is left.

    Spans wholly inside the released context were decided by an earlier check. Spans that end
    inside the held-back tail may still change (a word-bounded term that turns out to be part
    of a longer word): that text stays held and the next check decides them.
    """
    if not hit.spans:
        return hit
    spans = tuple(s for s in hit.spans if context_len < s.end <= tail_start)
    return replace(hit, spans=spans) if spans else None
