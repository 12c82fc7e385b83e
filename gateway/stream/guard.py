"""The stream guard: one for every API whose answer streams as SSE (the API's own events are
read and written by its :class:`~gateway.stream.shape.StreamShape`).

Stages: ``upstream bytes → SSE batches (sse.py) → chunks → text per channel (channels.py)
→ one check per batch → rewritten chunks → explicit label (labeling.py), when the policy
asks for one → SSE bytes``.

Keyword lists and patterns check every batch as it is read. Models check as often as they
keep up, one check in flight per stream: while one runs the guard reads on, and the next check
covers everything that arrived. ``hold`` mode releases a channel's text only after every
classifier covered it (a finished model check releases what it cleared) and holds back the
tail that could still complete a term or pattern. ``async`` mode releases what the lists
cleared at once; models check right behind the release, and a cut names the delivered span to
retract. On a stopping
decision the guard closes the upstream response first (generation stops), records the
incident, then sends the events that end the answer (OpenAI: a ``content_filter`` chunk and
``[DONE]``; Anthropic: ``stop_reason: "refusal"`` and ``message_stop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import UpstreamUnavailable
from gateway.metrics import Metrics
from gateway.policy import Policy, severity
from gateway.screening import Decision, Segment
from gateway.stream.channels import ChannelKey, ChannelState
from gateway.stream.checks import Verdict, check_lists, check_models
from gateway.stream.cuts import Cut, make_cut
from gateway.stream.labeling import StreamLabel
from gateway.stream.shape import OpenAIChatShape, StreamShape
from gateway.stream.soft import SoftHits
from gateway.stream.sse import SSEEvent, next_batch

__all__ = ["Cut", "StreamGuard"]

log = logging.getLogger(__name__)

Recorder = Callable[[Decision, list[Segment], int, list[list[int]]], Awaitable[str | None]]
_Parsed = list[tuple[SSEEvent, dict[str, Any] | None, dict[ChannelKey, int]]]


@dataclass
class StreamGuard:
    policy: Policy
    #: Records an incident and returns its id (awaited before the final chunk is sent).
    record: Recorder
    close_upstream: Callable[[], Awaitable[None]]
    metrics: Metrics | None = None
    #: The gateway route's name, for classifiers that run on some routes only.
    route: str | None = None
    #: The API's stream format.
    shape: StreamShape = field(default_factory=OpenAIChatShape)
    on_holdback: Callable[[float], None] = lambda _s: None
    on_cut: Callable[[Decision], None] = lambda _d: None
    channels: dict[ChannelKey, ChannelState] = field(default_factory=dict)
    soft: SoftHits = field(default_factory=SoftHits)
    #: Choices whose finish chunk reached the client; a cut leaves them alone.
    finished: set[int] = field(default_factory=set)
    template: dict[str, Any] = field(default_factory=dict)
    #: The explicit label stage; None when the policy asks for none or the answer must be JSON.
    label: StreamLabel | None = None
    #: The model check running behind the lists (hold mode) or the release (async mode), and
    #: when its newest text came.
    behind: asyncio.Task[Verdict] | None = None
    behind_arrived: float = 0.0
    #: Choices the client asked for (``n``); a cut ends the stream when it ends all that go on.
    choices: int = 1
    #: Choices ended by a cut while others went on, and those cuts, until they are sent.
    cut_choices: set[int] = field(default_factory=set)
    parts: list[Cut] = field(default_factory=list)
    #: When the first text arrived from the upstream, until the first text is released.
    first_text: float | None = None
    released_any: bool = False

    @property
    def hold(self) -> bool:
        return self.policy.spec.streaming.mode == "hold"

    def _channel(self, key: ChannelKey) -> ChannelState:
        state = self.channels.get(key)
        if state is None:
            settings = self.policy.spec.streaming
            history = max(settings.model_context_chars, settings.passage_chars)
            state = self.channels[key] = ChannelState(key, settings.context_chars, history)
        return state

    async def run(self, upstream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        batches = self.shape.batches(upstream)
        reading: asyncio.Future[list[SSEEvent] | None] | None = None
        try:
            while True:
                if self.behind is not None:
                    # A model checks behind the release: whichever comes first, its verdict
                    # or the upstream's next events.
                    reading = reading or asyncio.ensure_future(next_batch(batches))
                    racing: list[asyncio.Future[Any]] = [reading, self.behind]
                    await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
                    if self.behind.done():
                        cut = self._behind_done()
                        if cut is not None:
                            await _stop(reading)
                            yield await self._cut(cut)
                            return
                        out = await self._emit_parts() + self._release_cleared()
                        if out:
                            yield out
                        self._start_behind()  # on what arrived (hold) or was released meanwhile
                        continue
                    events, reading = reading.result(), None
                elif reading is not None:  # a read started while a model check ran
                    events, reading = await reading, None
                else:
                    events = await next_batch(batches)
                if events is None:
                    break
                out, cut, done = await self._batch(events)
                if out:
                    yield out
                if cut is not None:
                    yield await self._cut(cut)
                    return
                self._start_behind()
                if done:
                    break
            out, cut = await self._finish()
            if out:
                yield out
            if cut is not None:
                yield await self._cut(cut)
                return
            await self._record_soft()
            yield self.shape.done
        finally:
            # Awaited, not only cancelled: the read must let go of the upstream before it closes.
            await _stop(reading)
            await _stop(self.behind)

    async def _batch(self, events: list[SSEEvent]) -> tuple[bytes, Cut | None, bool]:
        parsed: _Parsed = []
        now = time.perf_counter()
        finishing: set[int] = set()
        closed: set[ChannelKey] = set()
        for event in events:
            if self.shape.is_done(event):
                # Whatever follows the end marker is not part of the answer; the guard ends it.
                break
            chunk = self.shape.parse(event)
            if chunk is None and event.data is not None:
                # Text we cannot parse must not reach the client unscreened.
                raise UpstreamUnavailable("the upstream sent a stream event that is not a JSON object")
            if chunk is None and event.comment is None:
                continue  # no data and no comment: nothing a client could use (SSE spec: ignore)
            ends: dict[ChannelKey, int] = {}
            if chunk is not None:
                self.template = self.shape.template_of(chunk, self.template)
                for key, text in self.shape.texts(chunk):
                    if key[0] in self.cut_choices:
                        continue
                    state = self._channel(key)
                    state.add(text, now)
                    ends[key] = state.released + len(state.pending)
                    if self.first_text is None:
                        self.first_text = now
                finishing.update(self.shape.finished_choices(chunk) - self.cut_choices)
                closed |= self.shape.closed_channels(chunk)
            parsed.append((event, chunk, ends))
        done = any(self.shape.is_done(e) for e in events)
        final = {key for key in self.channels if done or key[0] in finishing or key in closed}
        cut = await self._check(final, now)
        if cut is not None:
            return b"", cut, done
        # A choice cut here ends before the rest of the batch: its text in the batch was
        # never released, and the usage chunk must stay last.
        out = await self._emit_parts() + self._render(parsed)
        self.finished |= finishing - self.cut_choices
        return out, None, done

    async def _finish(self) -> tuple[bytes, Cut | None]:
        """The upstream ended (with or without ``[DONE]``): a last check with no hold-back."""
        if not self.template:
            raise UpstreamUnavailable("the upstream stream ended without a single completion chunk")
        cut = await self._check(set(self.channels), time.perf_counter())
        if cut is not None:
            return b"", cut
        out = self._leftovers() + await self._emit_parts()  # first: the end label goes last
        return out + (self.label.flush(self.template) if self.label is not None else b""), None

    async def _check(self, final: set[ChannelKey], now: float) -> Cut | None:
        closing: list[ChannelState] = []
        if final and self.policy.awaited_classifiers:
            # A choice's end: models look at its whole last passage (in hold mode too, where
            # all may have been released: a cut still ends it content_filter and is recorded).
            # In async mode its finish_reason waits for that look.
            if self.behind is not None:
                await asyncio.wait([self.behind])
                if (cut := self._behind_done()) is not None:
                    return cut
            closing = [
                s for s in self._going() if s.key in final and s.passage_checked < s.released + len(s.pending)
            ]
        dirty = [s for s in self._going() if s.pending or s in closing]
        for state in self.channels.values():
            state.begin_batch()
        if not dirty:
            return None
        # Keyword lists and patterns first, on every batch: their cut closes the upstream
        # without waiting for a model. Models check behind them (``behind``), except at a
        # choice's end, where the last passage is checked here before the end goes out.
        verdict = await check_lists(self.policy, dirty, final, self.metrics, hold=self.hold, route=self.route)
        cut = self._verdict(verdict, now)
        if cut is None and (closing or (self.hold and final)) and self.policy.awaited_classifiers:
            going = [s for s in dirty if s.key[0] not in self.cut_choices]
            if going:
                model = await check_models(
                    self.policy, going, final, self.metrics, hold=self.hold, route=self.route
                )
                cut = self._verdict(model, now)
        if cut is None:
            for state in dirty:
                if state.key[0] not in self.cut_choices:
                    state.lists_end = verdict.release_ends[state.key]
                    state.release_end = self._cleared(state, state.key in final)
        return cut

    def _cleared(self, state: ChannelState, final: bool = False) -> int:
        """Where ``state`` may be released to: what the lists cleared and, in hold mode, no
        further than what the models checked (with ``release: sentence``, no further than the
        last whole sentence they saw, unless a passage's worth waits for a sentence end)."""
        if not self.hold or not self.policy.awaited_classifiers:
            return state.lists_end
        checked = state.model_checked
        sentence = self.policy.spec.streaming.release == "sentence" and not final
        if sentence and checked - state.released <= state.history_chars:
            checked = min(checked, state.sentence_checked)
        return state.clamp(min(state.lists_end, checked))

    def _release_cleared(self) -> bytes:
        """Hold mode, after a model check behind the lists: release what it cleared."""
        if not self.hold:
            return b""
        for state in self._going():
            state.begin_batch()
            state.release_end = self._cleared(state)
        out = self._leftovers()
        self._commit()
        return out

    def _going(self) -> list[ChannelState]:
        return [s for s in self.channels.values() if s.key[0] not in self.cut_choices]

    def _ends_stream(self, cut: Cut) -> bool:
        going = set(range(self.choices)) | {key[0] for key in self.channels}
        return going - self.finished - self.cut_choices <= cut.choices

    def _part(self, cut: Cut, verdict: Verdict) -> None:
        """End the choices ``cut`` names; the others go on (their soft hits are noted)."""
        self.cut_choices |= cut.choices
        self.parts.append(cut)
        for state in self.channels.values():
            if state.key[0] in cut.choices:
                state.pending, state.redactions = "", []
                state.arrivals.clear()
                state.release_end = state.released
        for found in verdict.found:
            if found.state.key[0] not in cut.choices:
                self.soft.note(found, verdict.segments[found.hit.segment])

    def _start_behind(self) -> None:
        """Start a model check on the text no model has seen, unless one runs: in hold mode
        the pending text (released when the check clears it), in async mode released text."""
        if self.behind is not None or not self.policy.awaited_classifiers:
            return
        unseen = [s for s in self._going() if s.model_checked < s.released + self.hold * len(s.pending)]
        if not unseen:
            return
        self.behind_arrived = time.perf_counter()
        self.behind = asyncio.ensure_future(
            check_models(self.policy, unseen, set(), self.metrics, hold=self.hold, route=self.route)
        )

    def _behind_done(self) -> Cut | None:
        assert self.behind is not None
        task, self.behind = self.behind, None
        try:
            verdict = task.result()
        except Exception:  # screen() turns classifier failures into hits; anything else is a bug
            log.exception("stream model check failed")
            raise
        return self._verdict(verdict, self.behind_arrived)

    def _verdict(self, verdict: Verdict, arrived: float) -> Cut | None:
        """A cut for the stopping hits when it ends the stream, else note the soft ones (and
        end the choices a cut names, when other choices go on)."""
        stopping = [f for f in verdict.found if f.hit.stops]
        if stopping:
            action = max((f.hit.action for f in stopping), key=severity)
            hits = tuple(f.hit for f in verdict.found)
            decision = Decision(
                action, "output", verdict.decision.policy, verdict.decision.policy_version, hits
            )
            cut = make_cut(decision, stopping, verdict.segments, arrived, hold=self.hold)
            if self._ends_stream(cut):
                return cut
            self._part(cut, verdict)
            return None
        for found in verdict.found:
            self.soft.note(found, verdict.segments[found.hit.segment])
        return None

    def _render(self, parsed: _Parsed) -> bytes:
        out = bytearray()
        redaction = self.policy.spec.refusal.redaction
        for event, chunk, ends in parsed:
            if chunk is None:
                out += event.raw  # comments, keep-alives, non-JSON events pass as they came
                continue
            if closing := self.shape.closed_channels(chunk):
                out += self._leftovers(closing)  # a channel's last text goes out before its end
            out += self.shape.render(
                event, chunk, ends, self.channels, redaction, self.cut_choices, self.label, self.template
            )
        out += self._leftovers()
        self._commit()
        return bytes(out)

    def _commit(self) -> None:
        for state in self.channels.values():
            for wait in state.commit(state.release_end):
                self.on_holdback(wait)
        if (
            not self.released_any
            and self.first_text is not None
            and any(s.released for s in self.channels.values())
        ):
            self.released_any = True
            if self.metrics is not None:
                self.metrics.stream_first_text_seconds.observe(time.perf_counter() - self.first_text)

    def _leftovers(self, keys: set[ChannelKey] | None = None) -> bytes:
        """Released text that no chunk of this batch carried (held from earlier batches)."""
        redaction = self.policy.spec.refusal.redaction
        return self.shape.leftovers(self.channels, self.template, redaction, self.label, keys)

    async def _cut(self, cut: Cut) -> bytes:
        await self.close_upstream()
        closed = time.perf_counter()
        final = await self._final_chunk(cut, None)
        if self.metrics is not None and cut.arrived:
            mode = self.policy.spec.streaming.mode
            self.metrics.stream_cut_seconds.labels("upstream_closed", mode).observe(closed - cut.arrived)
        await self._record_soft()
        return final + self.shape.done

    async def _emit_parts(self) -> bytes:
        """The final chunks of choices cut while others go on."""
        out = b""
        while self.parts:
            cut = self.parts.pop(0)
            out += await self._final_chunk(cut, cut.choices)
        return out

    async def _final_chunk(self, cut: Cut, only: frozenset[int] | None) -> bytes:
        self.on_cut(cut.decision)
        incident_id = await self.record(cut.decision, cut.segments, cut.exposed_chars, cut.offsets)
        finished = self.finished | (self.cut_choices - cut.choices)
        final = self.shape.cut(
            self.template, self.channels, self.policy, cut.decision, incident_id, finished, only,
            cut.retract, self.label,
        )  # fmt: skip
        if self.metrics is not None and cut.arrived:
            mode = self.policy.spec.streaming.mode
            self.metrics.stream_cut_seconds.labels("final_chunk", mode).observe(
                time.perf_counter() - cut.arrived
            )
            self.metrics.stream_exposed_chars.labels(mode).observe(cut.exposed_chars)
        return final

    async def _record_soft(self) -> None:
        if (soft := self.soft.take(self.policy)) is not None:
            await self.record(*soft)


async def _stop(task: asyncio.Future[Any] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
