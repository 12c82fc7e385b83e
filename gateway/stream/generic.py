"""Streams of any JSON API, described in the gateway config (the generic adapter).

Each event is a JSON object, framed as SSE or as JSON lines; its text is at the ``delta``
selector (``$.token.text``). The whole answer is one channel. Held and redacted text is written
back at the same place; released text that no event carried goes out in a copy of the last
event with only that text. A cut sends the configured ``cut`` event (``{message}`` in its
strings becomes the policy's refusal message, and a ``modgate`` object is added), then the end
marker when the API has one.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import orjson

from gateway.jsonpath import Selector, set_path
from gateway.policy import Policy
from gateway.screening import Decision
from gateway.stream.channels import ChannelKey, ChannelState
from gateway.stream.labeling import StreamLabel
from gateway.stream.sse import SSEEvent, encode_data, jsonl_batches, sse_batches

__all__ = ["GenericShape", "fill"]

Chunk = dict[str, Any]
KEY: ChannelKey = (0, "content", -1)


def fill(template: Any, message: str) -> Any:
    """A copy of ``template`` with ``{message}`` replaced in every string."""
    if isinstance(template, str):
        return template.replace("{message}", message)
    if isinstance(template, list):
        return [fill(v, message) for v in template]
    if isinstance(template, dict):
        return {k: fill(v, message) for k, v in template.items()}
    return template


class GenericShape:
    """One per stream (it keeps the last event as the model for leftovers)."""

    def __init__(
        self,
        delta: Selector,
        *,
        jsonl: bool = False,
        done_marker: str | None = None,
        end: Selector | None = None,
        cut_event: Mapping[str, Any] | None = None,
    ) -> None:
        self.delta = delta
        self.jsonl = jsonl
        self.done_marker = done_marker
        self.end = end
        self.cut_event = dict(cut_event) if cut_event else {"error": {"message": "{message}"}}
        self.done = self._encode_raw(done_marker.encode()) if done_marker is not None else b""
        self.last: Chunk | None = None

    def batches(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[list[SSEEvent]]:
        return jsonl_batches(chunks) if self.jsonl else sse_batches(chunks)

    def parse(self, event: SSEEvent) -> Chunk | None:
        if not event.data or event.data == self.done_marker:
            return None
        try:
            value = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def is_done(self, event: SSEEvent) -> bool:
        return self.done_marker is not None and event.data == self.done_marker

    def template_of(self, chunk: Chunk, previous: Chunk) -> Chunk:
        return previous or {"api": "generic"}

    def texts(self, chunk: Chunk) -> Iterator[tuple[ChannelKey, str]]:
        found = self.delta.first_text(chunk)
        if found is not None:
            yield KEY, found[1]

    def finished_choices(self, chunk: Chunk) -> set[int]:
        if self.end is None:
            return set()
        return {0} if any(value for _, value in self.end.find(chunk)) else set()

    def closed_channels(self, chunk: Chunk) -> set[ChannelKey]:
        return set()

    def render(
        self,
        event: SSEEvent,
        chunk: Chunk,
        ends: Mapping[ChannelKey, int],
        channels: Mapping[ChannelKey, ChannelState],
        redaction: str,
        cut_choices: set[int],
        label: StreamLabel | None,
        template: Chunk,
    ) -> bytes:
        if 0 in cut_choices:
            return b""
        path = self._text_path(chunk)
        own = self.delta.first_text(chunk)
        state = channels.get(KEY)
        held = state is not None and state.unemitted and self.finished_choices(chunk)
        out, text = b"", None
        if KEY in ends and state is not None:
            text = state.emit_until(ends[KEY], redaction)
        elif held and state is not None and path is not None:
            # Held text goes into the last event, before the end, as chat's finish chunk does.
            text = state.emit_until(state.release_end, redaction) + (own[1] if own else "")
        elif held:
            out = self.leftovers(channels, template, redaction, label)
        self.last = chunk
        if text is None or path is None or text == (own[1] if own else ""):
            return out + event.raw
        rewritten = copy.deepcopy(chunk)
        set_path(rewritten, path, text)
        return out + self.encode(rewritten)

    def leftovers(
        self,
        channels: Mapping[ChannelKey, ChannelState],
        template: Chunk,
        redaction: str,
        label: StreamLabel | None,
        keys: set[ChannelKey] | None = None,
    ) -> bytes:
        state = channels.get(KEY)
        if state is None or not state.unemitted or (keys is not None and KEY not in keys):
            return b""
        text = state.emit_until(state.release_end, redaction)
        if not text:
            return b""
        return self.encode(self._carrying(text))

    def cut(
        self,
        template: Chunk,
        channels: Mapping[ChannelKey, ChannelState],
        policy: Policy,
        decision: Decision,
        incident_id: str | None,
        finished: set[int],
        only: frozenset[int] | None,
        retract: dict[str, Any] | None,
        label: StreamLabel | None,
    ) -> bytes:
        final = fill(self.cut_event, policy.spec.refusal.message)
        note = decision.note(incident_id)
        if retract is not None:
            note["retract"] = {"start": retract["start"], "end": retract["end"]}
        final["modgate"] = note
        return self.encode(final)

    def _text_path(self, chunk: Chunk | None) -> tuple[str | int, ...] | None:
        """Where the event keeps its text, an empty one included."""
        if chunk is None:
            return None
        return next((p for p, v in self.delta.find(chunk) if isinstance(v, str)), None)

    def _carrying(self, text: str) -> Chunk:
        """The last event with only ``text`` at the delta's place (a bare object when none came)."""
        last, path = self.last, self._text_path(self.last)
        if last is not None and path is not None:
            like_last = copy.deepcopy(last)
            set_path(like_last, path, text)
            return like_last
        return self.delta.build(text) or {"text": text}

    def encode(self, chunk: Chunk) -> bytes:
        return self._encode_raw(orjson.dumps(chunk))

    def _encode_raw(self, payload: bytes) -> bytes:
        return payload + b"\n" if self.jsonl else encode_data(payload)
