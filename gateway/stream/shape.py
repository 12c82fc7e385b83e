"""What the stream guard needs to know about one API's stream: where its text is, how to send
only what was released, and how a cut ends it.

The guard itself (``guard.py``) is the same for every API: it reads SSE events, keeps text per
channel (a choice's content, reasoning, a tool call's arguments, an Anthropic content block),
checks and releases. A :class:`StreamShape` turns one API's events into channel text and back:
``chunks.py`` for OpenAI chat completions (``completions.py`` reads legacy completions through
it), ``anthropic.py`` for Anthropic Messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Protocol

import orjson

from gateway.policy import Policy
from gateway.screening import Decision
from gateway.stream import chunks as ck
from gateway.stream.channels import ChannelKey, ChannelState
from gateway.stream.labeling import StreamLabel
from gateway.stream.sse import SSEEvent, encode_data, sse_batches

__all__ = ["OpenAIChatShape", "StreamShape"]

Chunk = dict[str, Any]


class StreamShape(Protocol):
    #: What ends the stream to the client (after the last event or a cut).
    done: bytes

    def batches(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[list[SSEEvent]]:
        """The upstream's bytes as events, grouped by read (``sse_batches`` for SSE)."""
        ...

    def parse(self, event: SSEEvent) -> Chunk | None:
        """The event's JSON object; None for comments, the end marker and non-JSON data."""
        ...

    def is_done(self, event: SSEEvent) -> bool:
        """The upstream's end marker: whatever follows is not part of the answer."""
        ...

    def template_of(self, chunk: Chunk, previous: Chunk) -> Chunk: ...

    def texts(self, chunk: Chunk) -> Iterator[tuple[ChannelKey, str]]: ...

    def finished_choices(self, chunk: Chunk) -> set[int]:
        """Choices this chunk ends: their text must all be out before it."""
        ...

    def closed_channels(self, chunk: Chunk) -> set[ChannelKey]:
        """Channels this chunk ends while their choice goes on (an Anthropic content block)."""
        ...

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
        """The event as the client gets it: only released text, without ended choices."""
        ...

    def leftovers(
        self,
        channels: Mapping[ChannelKey, ChannelState],
        template: Chunk,
        redaction: str,
        label: StreamLabel | None,
        keys: set[ChannelKey] | None = None,
    ) -> bytes:
        """Released text that no upstream event of the batch carried (of ``keys`` only)."""
        ...

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
        """The events that end the choices a cut names (all that go on, unless ``only``)."""
        ...


class OpenAIChatShape:
    """``chat.completion.chunk`` events (``chunks.py``), ending with ``data: [DONE]``.

    A dialect whose chunks are chat chunks in other words (legacy completions) reuses all of
    this through :meth:`view` and :meth:`write`.
    """

    done = b"data: [DONE]\n\n"
    #: The ``object`` of the chunks the gateway makes when the upstream's first names none.
    kind = "chat.completion.chunk"

    def view(self, chunk: Chunk) -> Chunk:
        """The chunk as a ``chat.completion.chunk`` (what ``chunks.py`` reads)."""
        return chunk

    def write(self, chunk: Chunk, source: Chunk | None = None) -> bytes:
        """A chat chunk (a view, rewritten, or one the gateway made) as the client gets it;
        ``source`` is the upstream chunk it was read from, None for the gateway's own."""
        return encode_data(orjson.dumps(chunk))

    def batches(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[list[SSEEvent]]:
        return sse_batches(chunks)

    def parse(self, event: SSEEvent) -> Chunk | None:
        return ck.parse_chunk(event)

    def is_done(self, event: SSEEvent) -> bool:
        return event.data == "[DONE]"

    def template_of(self, chunk: Chunk, previous: Chunk) -> Chunk:
        return ck.template_of(chunk, previous, self.kind)

    def texts(self, chunk: Chunk) -> Iterator[tuple[ChannelKey, str]]:
        return ck.texts(self.view(chunk))

    def finished_choices(self, chunk: Chunk) -> set[int]:
        return ck.finished_choices(chunk)

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
        kept, dropped = ck.drop_choices(chunk, cut_choices)
        if kept is None:
            return b""
        rewritten, changed = ck.rewrite(self.view(kept), ends, channels, redaction)
        if rewritten is None:
            return b""
        out = b""
        if label is not None:
            out, relabeled = label.before(rewritten, template)
            if relabeled is not None:
                rewritten, changed = relabeled, True
        return out + (self.write(rewritten, kept) if changed or dropped else event.raw)

    def leftovers(
        self,
        channels: Mapping[ChannelKey, ChannelState],
        template: Chunk,
        redaction: str,
        label: StreamLabel | None,
        keys: set[ChannelKey] | None = None,
    ) -> bytes:
        extra = ck.leftover_chunk(channels, template, redaction)
        if not extra:
            return b""
        labels = label.before(extra, template)[0] if label is not None else b""
        return labels + self.write(extra)

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
        final = ck.cut_chunk(template, channels, policy, decision, incident_id, finished, only)
        if retract is not None:
            final["modgate"]["retract"] = retract
        if label is not None:
            label.into_cut(final)
        return self.write(final)
