"""A made-up JSON API ("acme"), served for real on loopback, for the generic adapter's tests.

Requests carry nested texts: ``{"session": {"user"}, "conversation": {"turns": [{"speaker",
"parts": [{"text"}]}]}}``. Each request is scripted by its ``x-mock`` header:

* ``{"type": "json", "texts": ["..."]}``: ``{"result": {"outputs": [{"content": {"text"}}]},
  "usage": {...}}``, one output per text.
* ``{"type": "jsonl" | "sse", "pieces": ["a", "b"], "delay_ms": 0}``: one event per piece,
  ``{"event": "token", "data": {"piece"}, "seq"}``, then ``{"event": "end", "data": {"piece":
  ""}, "final": true}``; as JSON lines (``application/x-ndjson``) or SSE ending ``[DONE]``.

Every request is logged, and every stream's fate recorded (``done`` or ``disconnected``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import Receive, Scope, Send

from tests.support.upstream import RequestLog, Seen


class _Gone(Exception):
    pass


class GenericUpstream(RequestLog):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = await self.arrive(scope, receive, send)
        if arrived is None:
            return
        seen, script = arrived
        if script.get("type", "json") == "json":
            outputs = [{"content": {"text": t}} for t in script.get("texts", ["Hello from acme."])]
            payload = json.dumps({"result": {"outputs": outputs}, "usage": {"units": 3}}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return
        await _stream(script, seen, receive, send)


async def _stream(script: dict[str, Any], seen: Seen, receive: Receive, send: Send) -> None:
    jsonl = script["type"] == "jsonl"
    ctype = b"application/x-ndjson" if jsonl else b"text/event-stream"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())

    async def emit(event: dict[str, Any] | str) -> None:
        if gone.is_set():
            raise _Gone
        data = (event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)).encode()
        framed = data + b"\n" if jsonl else b"data: " + data + b"\n\n"
        await send({"type": "http.response.body", "body": framed, "more_body": True})

    try:
        for i, piece in enumerate(script.get("pieces", [])):
            await emit({"event": "token", "data": {"piece": piece}, "seq": i})
            seen.sent_deltas = i + 1
            await asyncio.sleep(script.get("delay_ms", 0) / 1000)
        await emit({"event": "end", "data": {"piece": ""}, "final": True})
        if not jsonl:
            await emit("[DONE]")
        seen.stream_state = "done"
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except (_Gone, OSError):
        seen.stream_state = "disconnected"
    finally:
        watcher.cancel()
