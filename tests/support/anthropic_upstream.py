"""A scripted Anthropic Messages upstream, served for real on loopback.

Each request is scripted by its ``x-mock`` header (JSON, ASCII-escaped), which the gateway
forwards like any other header:

* ``{"type": "json", "text": "...", "blocks": [...], "stop_reason": "end_turn", "extra": {...}}``:
  a Message. ``blocks`` are its content blocks as the API writes them (``{"type": "text",
  "text"}``, ``{"type": "thinking", "thinking"}`` (a signature is added), ``{"type":
  "tool_use", "name", "input"}`` (an id is added)); without ``blocks``, one text block holding
  ``text``. ``extra`` is merged into the Message (fields a future API might add).
* ``{"type": "sse", "blocks": [{"type": "text", "deltas": ["a", "b"]}, {"type": "thinking",
  "deltas": [...]}, {"type": "tool_use", "name": "f", "deltas": ["{\\"a\\":", " 1}"]}],
  "delay_ms": 0, "stop_reason": "end_turn", "error_after": null, "hang_after": null,
  "ping": true}``: Anthropic's event sequence, each event with its ``event:`` line:
  ``message_start``, ``ping``, per block ``content_block_start``, ``content_block_delta``
  (``text_delta``, ``thinking_delta`` then one ``signature_delta``, ``input_json_delta``) and
  ``content_block_stop``, then ``message_delta`` (stop reason, usage) and ``message_stop``.
  ``error_after: N`` sends an ``error`` event (``overloaded_error``) instead of the N-th delta
  (counted over all blocks) and ends; ``hang_after: N`` stops before the N-th delta and waits
  for the gateway to hang up.
* ``{"type": "status", "status": 429, "body": {...} | "text", "headers": {...}}``: an error
  status; the default body is Anthropic's error shape for the status.
* ``{"type": "not_json"}`` (HTML with a JSON content type), ``{"type": "not_object"}`` (a JSON
  array).

Every request is logged (path, headers, JSON body), and every stream's fate is recorded:
``done`` when it ran to the end, ``disconnected`` (with the time) when the gateway hung up.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send

from tests.support.upstream import RequestLog, Seen

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}
SIGNATURE = "c2lnbmF0dXJlLW1vY2s="


@dataclass
class AnthropicUpstream(RequestLog):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = await self.arrive(scope, receive, send)
        if arrived is None:
            return
        seen, script = arrived
        parsed = seen.body
        kind = script.get("type", "json")
        if kind == "json":
            await _json(send, 200, message_of(script, parsed), {"request-id": "req_mock"})
        elif kind == "sse":
            await _stream(script, seen, parsed, receive, send)
        elif kind == "status":
            await _status(script, send)
        elif kind == "not_json":
            await _raw(send, 200, b"<html>oops</html>", "application/json")
        elif kind == "not_object":
            await _json(send, 200, [{"type": "message"}])
        else:
            await _json(send, 400, _error(400, f"unknown mock type {kind}"))


async def _raw(send: Send, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
    headers = [(b"content-type", ctype.encode())] + [
        (k.encode(), v.encode()) for k, v in (extra or {}).items()
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
    await _raw(send, status, json.dumps(payload).encode(), "application/json", extra)


def _error(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"}


async def _status(script: dict[str, Any], send: Send) -> None:
    status = script.get("status", 500)
    content = script.get("body", _error(status, "upstream failed"))
    if isinstance(content, str):
        await _raw(send, status, content.encode(), "text/plain", script.get("headers"))
    else:
        await _json(send, status, content, script.get("headers"))


def _model(body: Any) -> str:
    return body.get("model", "claude-mock") if isinstance(body, dict) else "claude-mock"


def _block(block: dict[str, Any], index: int) -> dict[str, Any]:
    """A content block as the API writes it, with the fields a script may leave out."""
    if block["type"] == "thinking":
        return {"signature": SIGNATURE, **block}
    if block["type"] == "tool_use":
        return {"id": f"toolu_mock{index}", "input": {}, **block}
    return block


def message_of(script: dict[str, Any], body: Any) -> dict[str, Any]:
    blocks = script.get("blocks") or [{"type": "text", "text": script.get("text", "Hello from the mock.")}]
    return {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": _model(body),
        "content": [_block(b, i) for i, b in enumerate(blocks)],
        "stop_reason": script.get("stop_reason", "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 7},
        **script.get("extra", {}),
    }


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class _Gone(Exception):
    pass


async def _stream(script: dict[str, Any], seen: Seen, body: Any, receive: Receive, send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )
    disconnected = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()

    watcher = asyncio.create_task(watch())
    try:
        await _stream_body(script, seen, body, send, disconnected)
        seen.stream_state = "done"
    except (OSError, asyncio.CancelledError, _Gone):
        seen.stream_state = "disconnected"
        raise
    finally:
        seen.ended_at = time.monotonic()
        watcher.cancel()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _start_block(block: dict[str, Any], index: int) -> dict[str, Any]:
    kind = block["type"]
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    if kind == "tool_use":
        return {"type": "tool_use", "id": f"toolu_mock{index}", "name": block.get("name", "f"), "input": {}}
    return {"type": "text", "text": ""}


def _delta(kind: str, text: str) -> dict[str, Any]:
    if kind == "thinking":
        return {"type": "thinking_delta", "thinking": text}
    if kind == "tool_use":
        return {"type": "input_json_delta", "partial_json": text}
    return {"type": "text_delta", "text": text}


async def _stream_body(
    script: dict[str, Any], seen: Seen, body: Any, send: Send, disconnected: asyncio.Event
) -> None:
    delay = script.get("delay_ms", 0) / 1000
    hang_after, error_after = script.get("hang_after"), script.get("error_after")

    async def emit(event: str, data: dict[str, Any]) -> None:
        if disconnected.is_set():
            raise _Gone
        await send({"type": "http.response.body", "body": sse(event, data), "more_body": True})

    start = {**message_of({"blocks": [{"type": "text", "text": ""}]}, body), "content": []}
    start.update(stop_reason=None, usage={"input_tokens": 5, "output_tokens": 1})
    await emit("message_start", {"type": "message_start", "message": start})
    if script.get("ping", True):
        await emit("ping", {"type": "ping"})
    blocks = script.get("blocks") or [{"type": "text", "deltas": ["Hello", " world"]}]
    sent = 0
    for index, block in enumerate(blocks):
        start_block = {"type": "content_block_start", "index": index}
        await emit("content_block_start", {**start_block, "content_block": _start_block(block, index)})
        for text in block.get("deltas", ()):
            if hang_after is not None and sent >= hang_after:
                await asyncio.wait_for(disconnected.wait(), timeout=30)
                raise _Gone
            if error_after is not None and sent >= error_after:
                error = {"type": "overloaded_error", "message": "Overloaded"}
                await emit("error", {"type": "error", "error": error})
                return
            delta = {"type": "content_block_delta", "index": index}
            await emit("content_block_delta", {**delta, "delta": _delta(block["type"], text)})
            sent += 1
            seen.sent_deltas = sent
            if delay:
                await asyncio.sleep(delay)
        if block["type"] == "thinking":
            signature = {"type": "signature_delta", "signature": SIGNATURE}
            await emit(
                "content_block_delta", {"type": "content_block_delta", "index": index, "delta": signature}
            )
        await emit("content_block_stop", {"type": "content_block_stop", "index": index})
    delta = {"stop_reason": script.get("stop_reason", "end_turn"), "stop_sequence": None}
    await emit("message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": sent}})
    await emit("message_stop", {"type": "message_stop"})
