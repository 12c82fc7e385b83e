"""OpenAI ``chat.completion.chunk`` shapes: where the text is, and how to rewrite it.

Text channels per choice: ``content``, ``reasoning_content`` / ``reasoning``, ``refusal``,
each tool call's ``function.arguments`` (by tool-call index) and the legacy
``function_call.arguments``. Everything else in a chunk passes through untouched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from gateway.policy import Policy
from gateway.screening import Decision
from gateway.stream.channels import ChannelKey, ChannelState
from gateway.stream.sse import SSEEvent

__all__ = [
    "channel_name",
    "cut_chunk",
    "drop_choices",
    "finished_choices",
    "leftover_chunk",
    "parse_chunk",
    "rewrite",
    "template_of",
    "texts",
]

TEXT_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")
TOOL = "tool_arguments"
FUNCTION = "function_call"
_TEMPLATE_KEYS = ("id", "object", "created", "model", "system_fingerprint", "service_tier")


def parse_chunk(event: SSEEvent) -> dict[str, Any] | None:
    """The event's JSON object, or None for comments, [DONE] and non-JSON data."""
    if not event.data or event.data == "[DONE]":
        return None
    try:
        value = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def template_of(
    chunk: Mapping[str, Any], previous: dict[str, Any], kind: str = "chat.completion.chunk"
) -> dict[str, Any]:
    """The fields every chunk the gateway makes repeats (id, model...), from the first chunk;
    ``kind`` is the ``object`` when the upstream's chunk names none."""
    if previous:
        return previous
    template = {k: chunk[k] for k in _TEMPLATE_KEYS if k in chunk}
    template.setdefault("object", kind)
    template.setdefault("created", int(time.time()))
    return template


def _choices(chunk: Mapping[str, Any]) -> list[Any]:
    choices = chunk.get("choices")
    return choices if isinstance(choices, list) else []


def texts(chunk: Mapping[str, Any]) -> Iterator[tuple[ChannelKey, str]]:
    for choice in _choices(chunk):
        if not isinstance(choice, dict) or not isinstance(delta := choice.get("delta"), dict):
            continue
        idx = int(choice.get("index") or 0)
        for name in TEXT_FIELDS:
            value = delta.get(name)
            if isinstance(value, str) and value:
                yield (idx, name, -1), value
        for call in delta.get("tool_calls") or ():
            args = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
            if isinstance(args, str) and args:
                yield (idx, TOOL, int(call.get("index") or 0)), args
        legacy = delta.get("function_call")
        if isinstance(legacy, dict) and isinstance(legacy.get("arguments"), str) and legacy["arguments"]:
            yield (idx, FUNCTION, -1), legacy["arguments"]


def finished_choices(chunk: Mapping[str, Any]) -> set[int]:
    return {
        int(c.get("index") or 0) for c in _choices(chunk) if isinstance(c, dict) and c.get("finish_reason")
    }


def drop_choices(chunk: dict[str, Any], indices: set[int]) -> tuple[dict[str, Any] | None, bool]:
    """The chunk without the choices of ``indices`` (ended by a cut); None when nothing is left."""
    choices = _choices(chunk)
    if not indices or not choices:
        return chunk, False
    kept = [c for c in choices if not (isinstance(c, dict) and int(c.get("index") or 0) in indices)]
    if len(kept) == len(choices):
        return chunk, False
    if not kept and not chunk.get("usage"):
        return None, True
    return {**chunk, "choices": kept}, True


def channel_name(key: ChannelKey) -> str:
    return key[1]


def _set_text(delta: dict[str, Any], key: ChannelKey, text: str) -> None:
    """Put ``text`` at the channel's place in a (copied) delta; empty text removes it."""
    _, name, tool_index = key
    if name == TOOL:
        calls = [dict(c) for c in delta.get("tool_calls") or ()]
        call = next((c for c in calls if int(c.get("index") or 0) == tool_index), None)
        if call is None:
            call = {"index": tool_index}
            calls.append(call)
        function = dict(call.get("function") or {})
        function["arguments"] = text
        call["function"] = function
        delta["tool_calls"] = calls
    elif name == FUNCTION:
        delta["function_call"] = {**(delta.get("function_call") or {}), "arguments": text}
    elif text:
        delta[name] = text
    else:
        delta.pop(name, None)


def rewrite(
    chunk: dict[str, Any],
    ends: Mapping[ChannelKey, int],
    channels: Mapping[ChannelKey, ChannelState],
    redaction: str,
) -> tuple[dict[str, Any] | None, bool]:
    """The chunk with only released text; ``(None, True)`` when nothing is left to send."""
    finishing = finished_choices(chunk)
    if not ends and not finishing:
        return chunk, False
    changed = False
    new_choices = []
    for choice in _choices(chunk):
        idx = int(choice.get("index") or 0) if isinstance(choice, dict) else 0
        if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
            new_choices.append(choice)
            continue
        delta = dict(choice["delta"])
        altered = False
        for key, end in ends.items():
            if key[0] == idx:
                text = channels[key].emit_until(end, redaction)
                if text != _original(choice["delta"], key):
                    altered = True
                _set_text(delta, key, text)
        if idx in finishing:  # held text of this choice must precede its finish_reason
            for key, state in channels.items():
                if key[0] == idx and state.unemitted:
                    _set_text(
                        delta, key, _original(delta, key) + state.emit_until(state.release_end, redaction)
                    )
                    altered = True
        changed = changed or altered
        if any(v not in (None, "", [], {}) for v in delta.values()) or choice.get("finish_reason"):
            # The upstream's logprobs spell the tokens this chunk came with: held text would
            # reach the client through them before a check cleared it, masked text at all.
            out = {**choice, "delta": delta}
            if altered and out.get("logprobs") is not None:
                out["logprobs"] = None
            new_choices.append(out)
        else:
            changed = True
    if not changed:
        return chunk, False
    if not new_choices and not chunk.get("usage"):
        return None, True
    return {**chunk, "choices": new_choices}, True


def _original(delta: Mapping[str, Any], key: ChannelKey) -> str:
    _, name, tool_index = key
    if name == TOOL:
        for call in delta.get("tool_calls") or ():
            if int(call.get("index") or 0) == tool_index:
                return str((call.get("function") or {}).get("arguments") or "")
        return ""
    if name == FUNCTION:
        return str((delta.get("function_call") or {}).get("arguments") or "")
    value = delta.get(name)
    return value if isinstance(value, str) else ""


def leftover_chunk(
    channels: Mapping[ChannelKey, ChannelState], template: Mapping[str, Any], redaction: str
) -> dict[str, Any] | None:
    """A chunk carrying released text that no upstream chunk of the batch carried."""
    deltas: dict[int, dict[str, Any]] = {}
    for key, state in channels.items():
        if state.unemitted:
            delta = deltas.setdefault(key[0], {})
            _set_text(delta, key, state.emit_until(state.release_end, redaction))
    if not deltas:
        return None
    choices = [{"index": i, "delta": d, "finish_reason": None} for i, d in sorted(deltas.items())]
    return {**template, "choices": choices}


def cut_chunk(
    template: Mapping[str, Any],
    channels: Mapping[ChannelKey, ChannelState],
    policy: Policy,
    decision: Decision,
    incident_id: str | None,
    finished: set[int] = frozenset(),  # type: ignore[assignment]
    only: frozenset[int] | None = None,
) -> dict[str, Any]:
    """The final chunk after a cut: the canned reply, ``content_filter``, and why, for every
    choice that has not finished already (or for the ``only`` ones a cut ends)."""
    message = policy.spec.refusal.message
    indices = sorted(only if only is not None else ({key[0] for key in channels} or {0}) - finished)
    choices = []
    for i in indices:
        shown = channels.get((i, "content", -1))
        text = ("\n\n" + message) if shown is not None and shown.released else message
        choices.append({"index": i, "delta": {"content": text}, "finish_reason": "content_filter"})
    return {
        **template,
        "choices": choices,
        "modgate": decision.note(incident_id),
    }
