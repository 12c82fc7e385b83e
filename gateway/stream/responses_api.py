"""OpenAI Responses API streams (``POST /v1/responses``) as the stream guard sees them.

Events are typed (the ``event:`` line names the data's ``type``) and numbered
(``sequence_number``). Per output item: ``response.output_item.added``, its parts'
``*.added`` / ``*.delta`` / ``*.done`` events, ``response.output_item.done``; the stream ends
with ``response.completed`` (or ``.incomplete`` / ``.failed``), without ``[DONE]``.

Every text is a channel of its own, ``(0, channel, output_index * STRIDE + part index)`` with
the channels of ``gateway.responses_api.item_texts`` (``content``, ``refusal``, ``reasoning``
for summaries, ``reasoning_text``, ``tool_arguments``), so offsets, hold-back and a retraction
are per part.

Unlike chat chunks, the API repeats every text whole: in its ``.done`` event, its part's
``.done``, its item's ``output_item.done`` and in ``response.completed``. Those are rewritten
to what the client was given (redactions applied), so they never carry text the guard did not
release; text they carry beyond the deltas (an upstream that sends whole parts) is screened as
if a delta had brought it. A part's held tail goes out as deltas before the first event that
ends it. The shape numbers what it sends (held deltas are dropped, a cut adds events), from 0.

A cut ends the open parts and items (``status: "incomplete"``) with the text they were given,
adds a message item with the policy's refusal message and ends with ``response.incomplete``
(``incomplete_details.reason: "content_filter"``, as OpenAI's own filter does), whose
``modgate`` object names the incident and, in async mode, the span to retract. The official
SDK's stream accumulator takes this; its ``get_final_response()`` raises for an incomplete
response, as it does for OpenAI's own.

Explicit in-text labels are not added to these streams (``StreamLabel`` speaks chat chunks);
the implicit label header is.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from gateway.errors import GatewayError
from gateway.policy import Policy
from gateway.responses_api import refusal_item
from gateway.screening import Decision
from gateway.stream.channels import ChannelKey, ChannelState
from gateway.stream.chunks import parse_chunk
from gateway.stream.labeling import StreamLabel
from gateway.stream.responses_events import (
    DELTAS,
    DONES,
    ENDING,
    GROWING,
    ITEM_ADDED,
    ITEM_DONE,
    PARTS_ADDED,
    PARTS_DONE,
    SNAPSHOTS,
    STRIDE,
    TERMINAL,
    item_channels,
    item_events,
    kind_for,
    put,
    replaced,
    response_events,
    texts_of,
)
from gateway.stream.sse import SSEEvent, event_bytes, sse_batches

__all__ = ["TERMINAL", "ResponsesShape", "response_events"]

Chunk = dict[str, Any]


class ResponsesShape:
    """One per stream: it numbers the events sent and remembers what the client was given."""

    #: The terminal event ends the stream: nothing follows it.
    done = b""

    def __init__(self) -> None:
        self.seq = 0
        #: A terminal event was read: whatever follows is not part of the answer.
        self.ended = False
        #: Characters of each channel's text taken from the upstream, and channels it ended.
        self.received: dict[ChannelKey, int] = {}
        self.closed: set[ChannelKey] = set()
        #: Each channel's text as the client got it.
        self.given: dict[ChannelKey, str] = {}
        #: Output items as the client saw them (added and their parts, then done), and the open ones.
        self.items: dict[int, Chunk] = {}
        self.open: set[int] = set()
        #: Channels opened to the client: 0 open, 1 its text done, 2 its part done.
        self.stage: dict[ChannelKey, int] = {}

    def batches(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[list[SSEEvent]]:
        return sse_batches(chunks)

    def parse(self, event: SSEEvent) -> Chunk | None:
        chunk = parse_chunk(event)
        if chunk is not None and chunk.get("type") in TERMINAL:
            self.ended = True
        return chunk

    def is_done(self, event: SSEEvent) -> bool:
        return self.ended or event.data == "[DONE]"

    def template_of(self, chunk: Chunk, previous: Chunk) -> Chunk:
        response = chunk.get("response") if chunk.get("type") in SNAPSHOTS else None
        if previous.get("id") or not isinstance(response, dict):
            return previous or {"object": "response"}
        return {k: v for k, v in response.items() if k != "output"}

    def texts(self, chunk: Chunk) -> Iterator[tuple[ChannelKey, str]]:
        kind = chunk.get("type")
        ending = kind in ENDING or kind in TERMINAL
        if not ending and kind not in GROWING:
            return
        for key, _, text in texts_of(chunk):
            if key in self.closed:
                continue
            got = self.received.get(key, 0)
            new = text[got:] if ending else text
            if new:
                self.received[key] = got + len(new)
                yield key, new
            if ending:
                self.closed.add(key)

    def finished_choices(self, chunk: Chunk) -> set[int]:
        return {0} if chunk.get("type") in TERMINAL else set()

    def closed_channels(self, chunk: Chunk) -> set[ChannelKey]:
        kind = chunk.get("type")
        if kind in TERMINAL:
            return set(self.received) | {key for key, _, _ in texts_of(chunk)}
        if kind not in ENDING:
            return set()
        keys = {key for key, _, _ in texts_of(chunk)}
        if kind == ITEM_DONE and isinstance(oi := chunk.get("output_index"), int):
            keys |= {key for key in self.received if key[2] // STRIDE == oi}
        return keys

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
        kind = chunk.get("type")
        out = chunk
        for key, path, text in texts_of(chunk):
            if kind in GROWING:
                new = channels[key].emit_until(ends[key], redaction) if key in ends else ""
                self.given[key] = self.given.get(key, "") + new
            else:
                new = self.given.get(key, "")
            if new != text:
                out = replaced(out, path, new)
        if kind in DELTAS and not out.get("delta"):
            return b""  # nothing of it released yet (or ever): no event
        self._track(str(kind), out)
        return self._send(out, event.raw if out is chunk else None)

    def leftovers(
        self,
        channels: Mapping[ChannelKey, ChannelState],
        template: Chunk,
        redaction: str,
        label: StreamLabel | None,
        keys: set[ChannelKey] | None = None,
    ) -> bytes:
        out = b""
        for key, state in sorted(channels.items(), key=lambda item: item[0][2]):
            if (keys is not None and key not in keys) or not state.unemitted:
                continue
            text = state.emit_until(state.release_end, redaction)
            self.given[key] = self.given.get(key, "") + text
            oi = key[2] // STRIDE
            # Text of a part the client never saw open shows only in the events that end it.
            if text and self.stage.get(key) == 0 and oi in self.open:
                out += self._send(self._text_event(DELTAS, key, text))
        return out

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
        out = b"".join(self._end_item(oi) for oi in sorted(self.open))
        oi = max(self.items, default=-1) + 1
        self.items[oi] = refusal_item(policy.spec.refusal.message)
        out += b"".join(self._send(e) for e in item_events(oi, self.items[oi]))
        note = decision.note(incident_id)
        if retract is not None:
            note["retract"] = self._retract(retract)
        response = {
            **template,
            "status": "incomplete",
            "incomplete_details": {"reason": "content_filter"},
            "output": [self.items[i] for i in sorted(self.items)],
            "modgate": note,
        }
        return out + self._send({"type": "response.incomplete", "response": response})

    def error_event(self, exc: GatewayError) -> bytes:
        """An error that ends the stream midway, as the API sends one (``event: error``)."""
        error: Chunk = {"type": "error", "code": exc.code, "message": exc.message, "param": exc.param}
        if exc.modgate:
            error["modgate"] = exc.modgate
        return self._send(error)

    def _send(self, chunk: Chunk, raw: bytes | None = None) -> bytes:
        seq, self.seq = self.seq, self.seq + 1
        if raw is not None and chunk.get("sequence_number") == seq:
            return raw
        return event_bytes({**chunk, "sequence_number": seq})

    def _track(self, kind: str, chunk: Chunk) -> None:
        """Follow the output as the client sees it."""
        oi = chunk.get("output_index")
        if not isinstance(oi, int):
            return
        if kind == ITEM_ADDED and isinstance(item := chunk.get("item"), dict):
            self.items[oi] = item
            self.open.add(oi)
            self.stage.update((key, 0) for key, _, _ in item_channels(item, oi, ()))
        elif kind == ITEM_DONE and isinstance(item := chunk.get("item"), dict):
            self.items[oi] = item
            self.open.discard(oi)
        elif kind in PARTS_ADDED and oi in self.items and isinstance(part := chunk.get("part"), dict):
            name = "summary" if kind == "response.reasoning_summary_part.added" else "content"
            item = self.items[oi]
            self.items[oi] = {**item, name: [*(item.get(name) or ()), part]}
        for key, _, _ in texts_of(chunk):
            if kind in PARTS_ADDED:
                self.stage[key] = 0
            elif kind in DONES or kind in PARTS_DONE:
                self.stage[key] = max(self.stage.get(key, 0), 1 if kind in DONES else 2)

    def _text_event(self, table: Mapping[str, tuple[Any, ...]], key: ChannelKey, text: str) -> Chunk:
        """A delta (``DELTAS``) or text-done (``DONES``) event for ``key``'s part."""
        oi, index = divmod(key[2], STRIDE)
        item = self.items.get(oi, {})
        kind, row = kind_for(table, key[1], item.get("type"))
        event: Chunk = {"type": kind, "item_id": item.get("id"), "output_index": oi}
        if row[1] is not None:
            event[row[1]] = index
        event[row[2] if len(row) > 2 else "delta"] = text
        if key[1] == "content":
            event["logprobs"] = []
        return event

    def _end_item(self, oi: int) -> bytes:
        """A cut item's remaining done events, with the text the client was given."""
        item = copy.deepcopy(self.items[oi])
        texts = item_channels(item, oi, ())
        for key, path, _ in texts:
            put(item, path, self.given.get(key, ""))
        item["status"] = "incomplete"
        out = b""
        for key, path, _ in texts:
            stage = self.stage.get(key)
            if stage is None:
                continue  # never opened to the client: its text shows in the item alone
            if stage < 1:
                out += self._send(self._text_event(DONES, key, self.given.get(key, "")))
            if stage < 2 and key[1] != "tool_arguments":
                name, index = path[0], path[1]
                kind = (
                    "response.reasoning_summary_part.done"
                    if name == "summary"
                    else "response.content_part.done"
                )
                ident = {"item_id": item.get("id"), "output_index": oi, PARTS_DONE[kind]: index}
                out += self._send({"type": kind, **ident, "part": item[str(name)][index]})
        self.items[oi] = item
        self.open.discard(oi)
        return out + self._send({"type": ITEM_DONE, "output_index": oi, "item": item})

    def _retract(self, retract: dict[str, Any]) -> dict[str, Any]:
        """The guard's span to retract, named as this API names a part."""
        oi, index = divmod(int(retract.get("tool_call", 0)), STRIDE)
        item = self.items.get(oi, {})
        named: dict[str, Any] = {"output_index": oi, "item_id": item.get("id"), "channel": retract["channel"]}
        if retract["channel"] != "tool_arguments":
            named["summary_index" if retract["channel"] == "reasoning" else "content_index"] = index
        return {**named, "start": retract["start"], "end": retract["end"]}
