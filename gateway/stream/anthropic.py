"""Anthropic Messages streams as the stream guard sees them.

Events: ``message_start``, then per content block ``content_block_start`` /
``content_block_delta`` (``text_delta``, ``thinking_delta``, ``signature_delta``,
``input_json_delta``) / ``content_block_stop``, then ``message_delta`` (the stop reason) and
``message_stop``; ``ping`` and ``error`` may come between. Every block is a channel of its own
(``(0, "content" | "reasoning" | "tool_arguments", block index)``), so offsets, hold-back and a
retraction are per block, and a block's held text goes out before its ``content_block_stop``.

A cut stops the open blocks, adds a text block with the policy's refusal message, and ends the
message with ``stop_reason: "refusal"`` (what Anthropic's own classifiers send) and a
``modgate`` object naming the incident (and, in async mode, the block span to retract).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import orjson

from gateway.duties import ExplicitLabel
from gateway.labels import end_piece, start_piece
from gateway.policy import Policy
from gateway.screening import Decision
from gateway.stream.channels import ChannelKey, ChannelState
from gateway.stream.labeling import StreamLabel
from gateway.stream.sse import SSEEvent, event_bytes, sse_batches

__all__ = ["AnthropicShape", "event_bytes", "message_events"]

Chunk = dict[str, Any]

#: Delta type -> (channel name, the delta's text field).
_DELTAS = {
    "text_delta": ("content", "text"),
    "thinking_delta": ("reasoning", "thinking"),
    "input_json_delta": ("tool_arguments", "partial_json"),
}
_FIELDS = {name: (delta_type, field) for delta_type, (name, field) in _DELTAS.items()}


class AnthropicShape:
    """One per stream: it remembers which blocks the client has seen open, and where the
    explicit label (GB 45438) goes: before the first text, or in a text block of its own after
    the last one."""

    done = event_bytes({"type": "message_stop"})

    def __init__(self, label: ExplicitLabel | None = None) -> None:
        #: Blocks started and not yet stopped, as sent to the client.
        self.open: set[int] = set()
        #: The highest block index seen (the refusal block of a cut comes after it).
        self.last_index = -1
        self.label = label
        #: The last character of text sent, once any was (for the end label's separator).
        self.last_char: str | None = None
        self.labeled = False

    def batches(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[list[SSEEvent]]:
        return sse_batches(chunks)

    def parse(self, event: SSEEvent) -> Chunk | None:
        if not event.data:
            return None
        try:
            value = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def is_done(self, event: SSEEvent) -> bool:
        if event.event is not None:
            return event.event == "message_stop"
        return (
            bool(event.data)
            and '"message_stop"' in (event.data or "")
            and _type(self.parse(event)) == "message_stop"
        )

    def template_of(self, chunk: Chunk, previous: Chunk) -> Chunk:
        if previous:
            return previous
        message = chunk.get("message") if chunk.get("type") == "message_start" else None
        message = message if isinstance(message, dict) else {}
        return {"id": message.get("id", ""), "model": message.get("model", "")}

    def texts(self, chunk: Chunk) -> Iterator[tuple[ChannelKey, str]]:
        kind = chunk.get("type")
        index = chunk.get("index")
        if not isinstance(index, int):
            return
        if kind == "content_block_delta" and isinstance(delta := chunk.get("delta"), dict):
            found = _DELTAS.get(str(delta.get("type")))
            if found is not None and isinstance(text := delta.get(found[1]), str) and text:
                yield (0, found[0], index), text
        elif kind == "content_block_start" and isinstance(block := chunk.get("content_block"), dict):
            # A block may open with text already in it; it is screened like a delta.
            text = block.get("text") if block.get("type") == "text" else block.get("thinking")
            if isinstance(text, str) and text:
                yield (0, "content" if block.get("type") == "text" else "reasoning", index), text

    def finished_choices(self, chunk: Chunk) -> set[int]:
        delta = chunk.get("delta") if chunk.get("type") == "message_delta" else None
        return {0} if isinstance(delta, dict) and delta.get("stop_reason") else set()

    def closed_channels(self, chunk: Chunk) -> set[ChannelKey]:
        index = chunk.get("index")
        if chunk.get("type") != "content_block_stop" or not isinstance(index, int):
            return set()
        return {(0, name, index) for name in _FIELDS}

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
        kind, index = chunk.get("type"), chunk.get("index")
        out = b""
        if kind == "message_delta":
            # Text a block never closed (a broken upstream) still precedes the end.
            out = self.leftovers(channels, template, redaction, label) + self._end_label()
        elif isinstance(index, int):
            self.last_index = max(self.last_index, index)
            if kind == "content_block_start":
                self.open.add(index)
            elif kind == "content_block_stop":
                self.open.discard(index)
        keys = [key for key in ends if isinstance(index, int) and key[2] == index]
        if not keys:
            return out + event.raw
        key = keys[0]
        text = self._shown(key, channels[key].emit_until(ends[key], redaction))
        rewritten = _with_text(chunk, key, text)
        if rewritten is chunk:
            return out + event.raw
        return out + (event_bytes(rewritten) if rewritten is not None else b"")

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
            text = self._shown(key, state.emit_until(state.release_end, redaction))
            if text:
                out += event_bytes(_delta_event(key, text))
        return out

    def _shown(self, key: ChannelKey, text: str) -> str:
        """``text`` as it goes out on ``key``: the start label before the first text."""
        if key[1] != "content" or not text:
            return text
        if self.label is not None and self.label.position == "start" and not self.labeled:
            self.labeled = True
            text = start_piece(self.label, text) + text
        self.last_char = text[-1]
        return text

    def _end_label(self) -> bytes:
        """The end label, in a text block of its own after the last one (which block is the
        last is known only when the message ends)."""
        if self.label is None or self.label.position != "end" or self.labeled or self.last_char is None:
            return b""
        self.labeled = True
        self.last_index += 1
        index = self.last_index
        start = {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
        piece = end_piece(self.label, self.last_char)
        return (
            event_bytes(start)
            + event_bytes(_delta_event((0, "content", index), piece))
            + event_bytes({"type": "content_block_stop", "index": index})
        )

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
        out = b"".join(event_bytes({"type": "content_block_stop", "index": i}) for i in sorted(self.open))
        self.open.clear()
        index = self.last_index + 1
        out += event_bytes(
            {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
        )
        message = policy.spec.refusal.message
        if self.label is not None and not (self.labeled and self.label.position == "start"):
            self.labeled = True
            message = (
                start_piece(self.label, message) + message
                if self.label.position == "start"
                else (message + end_piece(self.label, message))
            )
        out += event_bytes(_delta_event((0, "content", index), message))
        out += event_bytes({"type": "content_block_stop", "index": index})
        note = decision.note(incident_id)
        if retract is not None:
            note["retract"] = {
                "block": retract.get("tool_call", -1),
                "channel": retract["channel"],
                "start": retract["start"],
                "end": retract["end"],
            }
        final = {
            "type": "message_delta",
            "delta": {"stop_reason": "refusal", "stop_sequence": None},
            "usage": {"output_tokens": 0},
            "modgate": note,
        }
        return out + event_bytes(final)


def message_events(message: Mapping[str, Any]) -> bytes:
    """A whole Message (a canned refusal) as the events of a stream that carried it."""
    start = {
        k: v for k, v in message.items() if k not in ("content", "stop_reason", "stop_sequence", "modgate")
    }
    out = event_bytes({"type": "message_start", "message": {**start, "content": [], "stop_reason": None,
                                                            "stop_sequence": None}})  # fmt: skip
    for index, block in enumerate(message.get("content") or ()):
        text = block.get("text", "") if block.get("type") == "text" else ""
        out += event_bytes(
            {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
        )
        out += event_bytes(_delta_event((0, "content", index), text))
        out += event_bytes({"type": "content_block_stop", "index": index})
    final: Chunk = {
        "type": "message_delta",
        "delta": {"stop_reason": message.get("stop_reason"), "stop_sequence": None},
        "usage": {"output_tokens": 0},
    }
    if "modgate" in message:
        final["modgate"] = message["modgate"]
    return out + event_bytes(final) + AnthropicShape.done


def _type(chunk: Chunk | None) -> Any:
    return chunk.get("type") if chunk is not None else None


def _delta_event(key: ChannelKey, text: str) -> Chunk:
    delta_type, field = _FIELDS[key[1]]
    return {"type": "content_block_delta", "index": key[2], "delta": {"type": delta_type, field: text}}


def _with_text(chunk: Chunk, key: ChannelKey, text: str) -> Chunk | None:
    """The event carrying ``text`` for its channel instead of what came; the event itself when
    that is what came; None when an empty delta would be left (nothing to send)."""
    if chunk.get("type") == "content_block_start":
        block = dict(chunk["content_block"])
        field = "text" if block.get("type") == "text" else "thinking"
        if block.get(field) == text:
            return chunk
        block[field] = text
        return {**chunk, "content_block": block}
    delta = chunk.get("delta")
    assert isinstance(delta, dict)
    field = _DELTAS[str(delta.get("type"))][1]
    if delta.get(field) == text:
        return chunk
    if not text:
        return None
    return {**chunk, "delta": {**delta, field: text}}
