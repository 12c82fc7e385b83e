"""The OpenAI Responses API's stream events: where each carries text, and the events the gateway
makes itself (a canned reply, a cut's refusal item). The stream shape (``responses_api.py``)
reads and rewrites events with these.

Channel keys are ``(0, channel, output_index * STRIDE + part index)``, with the channels of
``gateway.responses_api.item_texts``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.responses_api import PART_TEXT, item_texts
from gateway.stream.channels import ChannelKey
from gateway.stream.sse import event_bytes

__all__ = [
    "DELTAS",
    "DONES",
    "ENDING",
    "GROWING",
    "ITEM_ADDED",
    "ITEM_DONE",
    "PARTS_ADDED",
    "PARTS_DONE",
    "SNAPSHOTS",
    "STRIDE",
    "TERMINAL",
    "channel_key",
    "item_channels",
    "item_events",
    "kind_for",
    "put",
    "replaced",
    "response_events",
    "texts_of",
]

Chunk = dict[str, Any]
Path = tuple[str | int, ...]
Texts = list[tuple[ChannelKey, Path, str]]

#: Channel keys are ``output_index * STRIDE + part index`` (no item has that many parts).
STRIDE = 1000
#: Delta event type -> (channel, the event's part-index field; None: the item's one text).
DELTAS: dict[str, tuple[str, str | None]] = {
    "response.output_text.delta": ("content", "content_index"),
    "response.refusal.delta": ("refusal", "content_index"),
    "response.reasoning_summary_text.delta": ("reasoning", "summary_index"),
    "response.reasoning_text.delta": ("reasoning_text", "content_index"),
    "response.function_call_arguments.delta": ("tool_arguments", None),
    "response.custom_tool_call_input.delta": ("tool_arguments", None),
}
#: Text-done event type -> (channel, part-index field, the field with the whole text).
DONES: dict[str, tuple[str, str | None, str]] = {
    "response.output_text.done": ("content", "content_index", "text"),
    "response.refusal.done": ("refusal", "content_index", "refusal"),
    "response.reasoning_summary_text.done": ("reasoning", "summary_index", "text"),
    "response.reasoning_text.done": ("reasoning_text", "content_index", "text"),
    "response.function_call_arguments.done": ("tool_arguments", None, "arguments"),
    "response.custom_tool_call_input.done": ("tool_arguments", None, "input"),
}
#: Part event type -> the event's part-index field.
PARTS_ADDED = {
    "response.content_part.added": "content_index",
    "response.reasoning_summary_part.added": "summary_index",
}
PARTS_DONE = {
    "response.content_part.done": "content_index",
    "response.reasoning_summary_part.done": "summary_index",
}
ITEM_ADDED, ITEM_DONE = "response.output_item.added", "response.output_item.done"
#: Events whose texts grow a channel (an added part or item may open with text).
GROWING = frozenset({*DELTAS, *PARTS_ADDED, ITEM_ADDED})
#: Events that carry whole texts and end them.
ENDING = frozenset({*DONES, *PARTS_DONE, ITEM_DONE})
SNAPSHOTS = frozenset({"response.created", "response.in_progress", "response.queued"})
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def channel_key(channel: str, output_index: Any, index: Any) -> ChannelKey | None:
    if not isinstance(output_index, int) or not isinstance(index, int):
        return None
    return (0, channel, output_index * STRIDE + index)


def item_channels(item: Any, output_index: int, at: Path) -> Texts:
    if not isinstance(item, dict):
        return []
    return [
        (key, (*at, *path), text)
        for channel, index, path, text in item_texts(item)
        if (key := channel_key(channel, output_index, index)) is not None
    ]


def texts_of(chunk: Chunk) -> Texts:
    """Where the event carries channel text: key, path in the event, text."""
    kind = str(chunk.get("type"))
    oi = chunk.get("output_index")
    if kind in DELTAS or kind in DONES:
        channel, index_field, field = DONES[kind] if kind in DONES else (*DELTAS[kind], "delta")
        key = channel_key(channel, oi, chunk.get(index_field) if index_field else 0)
        text = chunk.get(field)
        return [(key, (field,), text)] if key is not None and isinstance(text, str) else []
    if kind in PARTS_ADDED or kind in PARTS_DONE:
        part = chunk.get("part")
        found = PART_TEXT.get(str(part.get("type"))) if isinstance(part, dict) else None
        if found is None or not isinstance(part, dict) or not isinstance(part.get(found[1]), str):
            return []
        key = channel_key(found[0], oi, chunk.get(PARTS_ADDED.get(kind) or PARTS_DONE[kind]))
        return [(key, ("part", found[1]), part[found[1]])] if key is not None else []
    if kind in (ITEM_ADDED, ITEM_DONE):
        return item_channels(chunk.get("item"), oi, ("item",)) if isinstance(oi, int) else []
    response = chunk.get("response")
    output = response.get("output") if isinstance(response, dict) else None
    if isinstance(output, list) and (kind in SNAPSHOTS or kind in TERMINAL):
        return [t for k, item in enumerate(output) for t in item_channels(item, k, ("response", "output", k))]
    return []


def put(node: Any, path: Path, text: str) -> None:
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = text
    if isinstance(node, dict) and "logprobs" in node:
        node["logprobs"] = []  # the tokens of a text it no longer is


def replaced(chunk: Chunk, path: Path, text: str) -> Chunk:
    """A copy of ``chunk`` with ``text`` at ``path`` (only the containers on the way copied)."""
    root = dict(chunk)
    node: Any = root
    for step in path[:-1]:
        child = node[step]
        node[step] = child = dict(child) if isinstance(child, dict) else list(child)
        node = child
    put(root, path, text)
    return root


def kind_for(
    table: Mapping[str, tuple[Any, ...]], channel: str, item_type: Any
) -> tuple[str, tuple[Any, ...]]:
    """The event type (and its table row) that carries ``channel``'s text in an item."""
    custom = item_type == "custom_tool_call"
    return next(
        (kind, row)
        for kind, row in table.items()
        if row[0] == channel and (channel != "tool_arguments" or ("custom" in kind) == custom)
    )


def item_events(oi: int, item: Chunk) -> list[Chunk]:
    """A whole message item (a canned reply) as the events that stream it, unnumbered."""
    opening = {**item, "status": "in_progress", "content": []}
    out: list[Chunk] = [{"type": ITEM_ADDED, "output_index": oi, "item": opening}]
    for j, part in enumerate(item["content"]):
        at = {"item_id": item["id"], "output_index": oi, "content_index": j}
        text = part["text"]
        out += [
            {"type": "response.content_part.added", **at, "part": {**part, "text": ""}},
            {"type": "response.output_text.delta", **at, "delta": text, "logprobs": []},
            {"type": "response.output_text.done", **at, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **at, "part": part},
        ]
    return [*out, {"type": ITEM_DONE, "output_index": oi, "item": item}]


def response_events(response: Chunk) -> bytes:
    """A whole Response (a canned refusal) as the stream that carries it."""
    start = {k: v for k, v in response.items() if k not in ("output", "modgate")}
    start = {**start, "status": "in_progress", "output": []}
    events = [
        {"type": "response.created", "response": start},
        {"type": "response.in_progress", "response": start},
    ]
    for oi, item in enumerate(response["output"]):
        events += item_events(oi, item)
    events.append({"type": "response.completed", "response": response})
    return b"".join(event_bytes({**e, "sequence_number": n}) for n, e in enumerate(events))
