"""The scripted upstream's OpenAI Responses API (``POST /v1/responses``), dispatched from
``tests/support/upstream.py`` by path, with the same ``x-mock`` header:

* ``{"type": "json", "content": "...", "reasoning": "...", "tool_args": "...", "refusal": "...",
  "output_text": false}``: a Response whose ``output`` holds a reasoning item (with a summary),
  a message (``output_text``, and a ``refusal`` part when given) and a function call, each only
  when its text is given (``content`` defaults to "Hello from the mock."); ``output_text: true``
  adds the convenience field some servers send.
* ``{"type": "sse", "items": [{"type": "message" | "refusal" | "reasoning" | "function_call",
  "deltas": [...], "done": "..."}], "deltas": [...], "delay_ms": 0, "hang_after": null,
  "extra": false}``: the event sequence the API streams, item by item, with a delta event per
  delta and the ``.done`` events carrying the whole text (``done`` overrides it: an upstream
  whose done events say more than its deltas). ``deltas`` alone is one message item.
  ``extra`` sends a ``[DONE]`` and one more event after ``response.completed``.

Streams record their fate on the request log entry (``stream_state``, ``sent_deltas``).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.types import Receive, Send

__all__ = ["encode", "serve_responses", "stream_events"]

_PREFIX = {"message": "msg", "refusal": "msg", "reasoning": "rs", "function_call": "fc"}


def _model(body: Any) -> str:
    return body.get("model", "mock-model") if isinstance(body, dict) else "mock-model"


def _base(body: Any, status: str) -> dict[str, Any]:
    return {
        "id": "resp_mock",
        "object": "response",
        "created_at": 1700000000,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": _model(body),
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": None,
    }


_USAGE = {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 7,
          "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 12}  # fmt: skip


def _part(kind: str, text: str) -> dict[str, Any]:
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    if kind == "reasoning":
        return {"type": "summary_text", "text": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _item(kind: str, index: int, text: str, status: str = "completed") -> dict[str, Any]:
    item_id = f"{_PREFIX[kind]}_mock{index}"
    if kind == "function_call":
        return {"id": item_id, "type": "function_call", "status": status, "arguments": text,
                "call_id": f"call_{index}", "name": "lookup"}  # fmt: skip
    if kind == "reasoning":
        return {"id": item_id, "type": "reasoning", "summary": [_part(kind, text)] if text else []}
    parts = [_part(kind, text)] if status == "completed" else []
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": parts}


async def _json(send: Send, payload: Any) -> None:
    headers = [(b"content-type", b"application/json"), (b"x-upstream-header", b"yes")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


async def _plain(script: dict[str, Any], body: Any, send: Send) -> None:
    output: list[dict[str, Any]] = []
    if "reasoning" in script:
        output.append(_item("reasoning", len(output), script["reasoning"]))
    message = _item("message", len(output), script.get("content", "Hello from the mock."))
    if "refusal" in script:
        message["content"].append(_part("refusal", script["refusal"]))
    output.append(message)
    if "tool_args" in script:
        output.append(_item("function_call", len(output), script["tool_args"]))
    payload = {
        **_base(body, "completed"),
        "output": output,
        "usage": _USAGE,
        "mock_extra_field": {"kept": True},
    }
    if script.get("output_text"):
        payload["output_text"] = "".join(p["text"] for p in message["content"] if p["type"] == "output_text")
    await _json(send, payload)


class _Gone(Exception):
    pass


def _item_events(kind: str, oi: int, text: str) -> tuple[list[dict[str, Any]], str, list[dict[str, Any]]]:
    """An item's opening events, the delta event type, and its closing events (whole text)."""
    item_id = f"{_PREFIX[kind]}_mock{oi}"
    ident: dict[str, Any] = {"item_id": item_id, "output_index": oi}
    opening: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": oi, "item": _item(kind, oi, "", "in_progress")}
    ]
    if kind == "function_call":
        closing = [{"type": "response.function_call_arguments.done", **ident, "arguments": text}]
        return opening, "response.function_call_arguments.delta", closing
    if kind == "reasoning":
        ident["summary_index"] = 0
        opening.append({"type": "response.reasoning_summary_part.added", **ident, "part": _part(kind, "")})
        closing = [
            {"type": "response.reasoning_summary_text.done", **ident, "text": text},
            {"type": "response.reasoning_summary_part.done", **ident, "part": _part(kind, text)},
        ]
        return opening, "response.reasoning_summary_text.delta", closing
    ident["content_index"] = 0
    opening.append({"type": "response.content_part.added", **ident, "part": _part(kind, "")})
    field = "refusal" if kind == "refusal" else "text"
    closing = [
        {"type": f"response.{'refusal' if kind == 'refusal' else 'output_text'}.done", **ident, field: text},
        {"type": "response.content_part.done", **ident, "part": _part(kind, text)},
    ]
    if kind == "message":
        closing[0]["logprobs"] = []
    kind_delta = "response.refusal.delta" if kind == "refusal" else "response.output_text.delta"
    return opening, kind_delta, closing


def stream_events(items: list[dict[str, Any]], body: Any = None) -> list[dict[str, Any]]:
    """The events the API streams for ``items`` (script items), unnumbered."""
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": _base(body, "in_progress")},
        {"type": "response.in_progress", "response": _base(body, "in_progress")},
    ]
    output: list[dict[str, Any]] = []
    for oi, spec in enumerate(items):
        kind, deltas = spec["type"], spec.get("deltas", [])
        text = spec.get("done", "".join(deltas))
        opening, delta_type, closing = _item_events(kind, oi, text)
        ident = {k: v for k, v in closing[0].items() if k.endswith(("_id", "_index"))}
        events += opening
        extra: dict[str, Any] = {"logprobs": []} if kind == "message" else {}
        events += [{**ident, "type": delta_type, "delta": delta, **extra} for delta in deltas]
        output.append(_item(kind, oi, text))
        events += [*closing, {"type": "response.output_item.done", "output_index": oi, "item": output[-1]}]
    final = {**_base(body, "completed"), "output": output, "usage": _USAGE}
    return [*events, {"type": "response.completed", "response": final}]


def encode(event: dict[str, Any], seq: int) -> bytes:
    """One event as the API sends it, numbered ``seq``."""
    return f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': seq})}\n\n".encode()


async def _stream_body(
    script: dict[str, Any], seen: Any, body: Any, send: Send, disconnected: asyncio.Event
) -> None:
    delay = script.get("delay_ms", 0) / 1000
    items = script.get("items") or [{"type": "message", "deltas": script.get("deltas", ["Hello", " world"])}]
    events = stream_events(items, body)
    if script.get("extra"):
        late = {"type": "response.output_text.delta", "item_id": "msg_late", "output_index": 0,
                "content_index": 0, "delta": "late zorblax"}  # fmt: skip
        events.append(late)
    sent = 0
    for seq, event in enumerate(events):
        if disconnected.is_set():
            raise _Gone
        is_delta = event["type"].endswith(".delta")
        if is_delta and script.get("hang_after") is not None and sent >= script["hang_after"]:
            await asyncio.wait_for(disconnected.wait(), timeout=30)
            raise _Gone
        if script.get("extra") and event is events[-1]:
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": encode(event, seq), "more_body": True})
        if is_delta:
            sent = seen.sent_deltas = sent + 1
            if delay:
                await asyncio.sleep(delay)


async def _stream(script: dict[str, Any], seen: Any, body: Any, receive: Receive, send: Send) -> None:
    start = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": start})
    disconnected = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()

    watcher = asyncio.create_task(watch())
    try:
        await _stream_body(script, seen, body, send, disconnected)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        seen.stream_state = "done"
    except (OSError, asyncio.CancelledError, _Gone):
        seen.stream_state = "disconnected"
        raise
    finally:
        seen.ended_at = time.monotonic()
        watcher.cancel()


async def serve_responses(
    kind: str, script: dict[str, Any], seen: Any, body: Any, receive: Receive, send: Send
) -> None:
    """Answer a ``json`` or ``sse`` script on ``/v1/responses``; ``seen`` is the request's log
    entry."""
    if kind == "sse":
        await _stream(script, seen, body, receive, send)
    else:
        await _plain(script, body, send)
