"""A scripted OpenAI-compatible upstream, served for real on loopback.

Each request is scripted by its ``x-mock`` header (JSON, ASCII-escaped), which the gateway
forwards like any other header:

* ``{"type": "json", "content": "...", "reasoning": "...", "tool_args": "...", "n": 1,
  "logprobs": false}`` (``logprobs`` gives each choice the logprobs of its content, one token)
* ``{"type": "completion", "content": "...", "texts": ["...", ...], "n": 1, "logprobs": false}``:
  a legacy ``text_completion`` (``texts`` gives each choice its own; ``logprobs`` adds some).
  ``json`` on ``/v1/completions`` answers the same way.
* ``{"type": "sse", "deltas": ["a", "b"], "channel": "content"|"reasoning_content"|"tool",
  "delay_ms": 0, "no_done": false, "keepalive": false, "hang_after": null, "split_bytes": false,
  "n": 1, "by_choice": null, "logprobs": false}`` (with ``n`` choices, each delta and the finish
  go out once per choice, interleaved; ``by_choice`` gives each choice deltas of its own,
  ``[["a"], ["b"]]``; ``logprobs`` gives each content chunk the logprobs of its text).
  A request with ``stream_options: {include_usage: true}`` gets the usage chunk at the end.
  On ``/v1/completions`` the chunks are legacy ``text_completion`` chunks (``choices[].text``).
* ``{"type": "status", "status": 500, "body": {...} | "text", "headers": {...}}``
* ``{"type": "slow", "delay_s": 5}`` (answers after a delay)
* ``{"type": "broken_sse"}`` (a stream that is not SSE), ``{"type": "not_json"}``
* ``json`` and ``sse`` on ``/v1/responses``: the Responses API (``responses_upstream.py``).
* ``json`` on ``/v1/embeddings``: a vector per input (floats, or base64 when the request's
  ``encoding_format`` asks, as the openai SDK does by default), ``[len(text), 0.5, -0.25, i]``.

Every request is logged (path, headers, JSON body), and every stream's fate is recorded:
``done`` when it ran to the end, ``disconnected`` (with the time) when the gateway hung up.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

from tests.support.responses_upstream import serve_responses


@dataclass
class Seen:
    path: str
    method: str
    headers: dict[str, str]
    body: Any
    stream_state: str = "open"
    ended_at: float | None = None
    sent_deltas: int = 0

    def wait_for(self, state: str, timeout: float = 5.0) -> None:
        """Until the server thread sets ``stream_state`` to ``state`` or ``timeout`` passes (the
        caller asserts which)."""
        deadline = time.monotonic() + timeout
        while self.stream_state != state and time.monotonic() < deadline:
            time.sleep(0.05)


@dataclass
class RequestLog:
    """What a scripted upstream was sent, for the tests to look at."""

    requests: list[Seen] = field(default_factory=list)

    def clear(self) -> None:
        self.requests.clear()

    def last(self) -> Seen:
        return self.requests[-1]

    def by_test_id(self, test_id: str) -> list[Seen]:
        return [r for r in self.requests if r.headers.get("x-test-id") == test_id]

    async def arrive(self, scope: Scope, receive: Receive, send: Send) -> tuple[Seen, dict[str, Any]] | None:
        """Answer the lifespan (None), or read and log a request: it and its ``x-mock`` script."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return None
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body
        seen = Seen(scope["path"], scope["method"], headers, parsed)
        self.requests.append(seen)
        return seen, json.loads(headers.get("x-mock", "{}") or "{}")


@dataclass
class ScriptedUpstream(RequestLog):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = await self.arrive(scope, receive, send)
        if arrived is None:
            return
        seen, script = arrived
        parsed = seen.body
        if scope["path"].endswith("/models"):
            await _json(send, 200, {"object": "list", "data": [{"id": "mock-model", "object": "model"}]})
            return
        kind = script.get("type", "json")
        if kind in ("json", "sse") and scope["path"].endswith("/v1/responses"):
            await serve_responses(kind, script, seen, parsed, receive, send)  # responses_upstream.py
            return
        if kind == "json" and scope["path"].endswith("/v1/embeddings"):
            await _embeddings(body_of(parsed), send)
            return
        if kind == "json" and _legacy(scope["path"]):
            kind = "completion"
        handler = {
            "json": _completion,
            "completion": _text_completion,
            "sse": _stream,
            "status": _status,
        }.get(kind)
        if kind == "broken_sse":
            await _raw(send, 200, b"this is not an event stream\n\n\x00\x01", "text/event-stream")
        elif kind == "not_json":
            await _raw(send, 200, b"<html>oops</html>", "application/json")
        elif handler is _stream:
            await _stream(script, seen, parsed, receive, send)
        elif kind == "slow":
            await _slow(script, seen, parsed, receive, send)
        elif handler is not None:
            await handler(script, seen, parsed, send)
        else:
            await _json(send, 400, {"error": {"message": f"unknown mock type {kind}", "type": "test"}})


async def _raw(send: Send, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
    headers = [(b"content-type", ctype.encode())] + [
        (k.encode(), v.encode()) for k, v in (extra or {}).items()
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
    await _raw(send, status, json.dumps(payload).encode(), "application/json", extra)


def _model(body: Any) -> str:
    return body.get("model", "mock-model") if isinstance(body, dict) else "mock-model"


async def _completion(script: dict[str, Any], seen: Seen, body: Any, send: Send) -> None:
    message: dict[str, Any] = {"role": "assistant", "content": script.get("content", "Hello from the mock.")}
    if "reasoning" in script:
        message["reasoning_content"] = script["reasoning"]
    if "tool_args" in script:
        message["tool_calls"] = [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": script["tool_args"]},
            }
        ]
    logprobs = chat_logprobs(message["content"]) if script.get("logprobs") else None
    choices = [
        {"index": i, "message": message, "finish_reason": "stop", "logprobs": logprobs}
        for i in range(script.get("n", 1))
    ]
    payload = {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1700000000,
        "model": _model(body),
        "choices": choices,
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        "mock_extra_field": {"kept": True},
    }
    await _json(send, 200, payload, {"x-upstream-header": "yes"})


def _legacy(path: str) -> bool:
    return path.endswith("/v1/completions")


def body_of(parsed: Any) -> dict[str, Any]:
    return parsed if isinstance(parsed, dict) else {}


async def _text_completion(script: dict[str, Any], seen: Seen, body: Any, send: Send) -> None:
    n = script.get("n", 1)
    texts = script.get("texts") or [script.get("content", "Hello from the mock.")] * n
    choices = []
    for i, text in enumerate(texts):
        logprobs = None
        if script.get("logprobs"):
            logprobs = {"tokens": [text], "token_logprobs": [-0.5], "top_logprobs": None, "text_offset": [0]}
        choices.append({"text": text, "index": i, "finish_reason": "stop", "logprobs": logprobs})
    payload = {
        "id": "cmpl-mock",
        "object": "text_completion",
        "created": 1700000000,
        "model": _model(body),
        "choices": choices,
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        "mock_extra_field": {"kept": True},
    }
    await _json(send, 200, payload, {"x-upstream-header": "yes"})


async def _embeddings(body: dict[str, Any], send: Send) -> None:
    given = body.get("input")
    inputs = [given] if isinstance(given, str) or (given and isinstance(given[0], int)) else given or []
    data = []
    for i, item in enumerate(inputs):
        vector = [float(len(item)), 0.5, -0.25, float(i)]
        encoded: Any = vector
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack("<4f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    payload = {
        "object": "list",
        "data": data,
        "model": _model(body),
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    await _json(send, 200, payload, {"x-upstream-header": "yes"})


async def _status(script: dict[str, Any], seen: Seen, body: Any, send: Send) -> None:
    content = script.get("body", {"error": {"message": "upstream failed", "type": "server_error"}})
    if isinstance(content, str):
        await _raw(send, script.get("status", 500), content.encode(), "text/plain", script.get("headers"))
    else:
        await _json(send, script.get("status", 500), content, script.get("headers"))


async def _slow(script: dict[str, Any], seen: Seen, body: Any, receive: Receive, send: Send) -> None:
    """Answers after a delay, unless the caller hangs up first (recorded as disconnected)."""

    async def hang_up() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(hang_up())
    try:
        await asyncio.wait_for(asyncio.shield(watcher), timeout=script.get("delay_s", 5))
        seen.stream_state = "disconnected"
        seen.ended_at = time.monotonic()
        return
    except TimeoutError:
        watcher.cancel()
    seen.stream_state = "done"
    await _completion({"content": "finally"}, seen, body, send)


def chat_logprobs(text: str) -> dict[str, Any]:
    """Chat ``logprobs`` spelling ``text`` as one token."""
    token = {"token": text, "logprob": -0.5, "bytes": list(text.encode()), "top_logprobs": []}
    return {"content": [token], "refusal": None}


def _chunk(
    body: Any,
    delta: dict[str, Any],
    finish: str | None = None,
    index: int = 0,
    logprobs: dict[str, Any] | None = None,
    **extra: Any,
) -> bytes:
    choice = {"index": index, "delta": delta, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    payload = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": _model(body),
        "choices": [choice],
    }
    return b"data: " + json.dumps({**payload, **extra}).encode() + b"\n\n"


def _text_chunk(
    body: Any, delta: dict[str, Any], finish: str | None = None, index: int = 0, **extra: Any
) -> bytes:
    """A legacy ``text_completion`` chunk carrying ``delta``'s content as ``text``."""
    choice = {"index": index, "text": delta.get("content", ""), "finish_reason": finish, "logprobs": None}
    payload = {"id": "cmpl-mock", "object": "text_completion", "created": 1700000000, "model": _model(body)}
    return b"data: " + json.dumps({**payload, "choices": [choice], **extra}).encode() + b"\n\n"


def _delta(channel: str, text: str) -> dict[str, Any]:
    if channel == "tool":
        return {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}
    return {channel: text}


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


class _Gone(Exception):
    pass


async def _stream_body(
    script: dict[str, Any], seen: Seen, body: Any, send: Send, disconnected: asyncio.Event
) -> None:
    channel = script.get("channel", "content")
    delay = script.get("delay_ms", 0) / 1000

    async def emit(data: bytes) -> None:
        if disconnected.is_set():
            raise _Gone
        if script.get("split_bytes"):
            for i in range(len(data)):  # one byte per write: the worst case for a parser
                await send({"type": "http.response.body", "body": data[i : i + 1], "more_body": True})
        else:
            await send({"type": "http.response.body", "body": data, "more_body": True})

    legacy = _legacy(seen.path)
    chunk = _text_chunk if legacy else _chunk
    first: dict[str, Any] = {"role": "assistant", "content": ""}
    if channel == "tool":
        first["tool_calls"] = [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ""}}
        ]
    by_choice = script.get("by_choice")
    choices = range(len(by_choice) if by_choice else script.get("n", 1))
    for c in choices if not legacy else ():  # legacy streams start with text, no role chunk
        await emit(_chunk(body, first, index=c))
    rows = list(zip(*by_choice, strict=True)) if by_choice else None
    for i, text in enumerate(rows or script.get("deltas", ["Hello", " world"])):
        if script.get("hang_after") is not None and i >= script["hang_after"]:
            await asyncio.wait_for(disconnected.wait(), timeout=30)
            raise _Gone
        if script.get("error_after") is not None and i >= script["error_after"]:
            await emit(
                b'data: {"error": {"message": "overloaded", "type": "server_error", "code": null}}\n\n'
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if script.get("keepalive"):
            await emit(b": keep-alive\n\n")
        for c in choices:
            piece = text[c] if rows else text
            with_logprobs = script.get("logprobs") and not legacy and channel == "content"
            extra = {"logprobs": chat_logprobs(piece)} if with_logprobs else {}
            await emit(chunk(body, _delta(channel, piece), index=c, **extra))
        seen.sent_deltas += 1
        if delay:
            await asyncio.sleep(delay)
    for c in choices:
        await emit(chunk(body, {}, "tool_calls" if channel == "tool" else "stop", index=c))
    options = body.get("stream_options") if isinstance(body, dict) else None
    if isinstance(options, dict) and options.get("include_usage"):
        usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        await emit(chunk(body, {}, choices=[], usage=usage))
    if not script.get("no_done"):
        await emit(b"data: [DONE]\n\n")
    await send({"type": "http.response.body", "body": b"", "more_body": False})
