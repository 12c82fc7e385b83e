"""Response classes: fast JSON, and a stream that stops (and closes the upstream) when the
client goes away, whatever the ASGI server's spec version."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError, error_body

__all__ = [
    "GuardedStreamResponse",
    "JSONBytes",
    "RawResponse",
    "error_response",
    "internal_error_response",
    "json_response",
    "race_disconnect",
    "read_body",
]

log = logging.getLogger(__name__)


class JSONBytes(Response):
    media_type = "application/json"


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONBytes(orjson.dumps(content), status_code=status, headers=headers)


def error_response(exc: GatewayError) -> Response:
    """The one rendering of a :class:`GatewayError`: OpenAI error body, its status and headers."""
    return json_response(exc.body(), exc.status, exc.headers or None)


def internal_error_response(scope: Scope) -> Response:
    """Log an unexpected exception (ids only) and answer an OpenAI-shaped 500."""
    log.exception("unhandled error request_id=%s", scope.get("state", {}).get("request_id"))
    return json_response(error_body("internal gateway error", "server_error", None, "internal_error"), 500)


class GuardedStreamResponse(Response):
    """Streams ``body`` as SSE; a client disconnect cancels the body (whose ``finally`` closes
    the upstream) and ``on_close`` always runs."""

    media_type = "text/event-stream"

    def __init__(
        self,
        body: AsyncIterator[bytes],
        on_close: Callable[[], Awaitable[None]],
        error_event: Callable[[GatewayError], bytes],
        headers: dict[str, str] | None = None,
    ) -> None:
        self.body_iterator = body
        self.on_close = on_close
        self.error_event = error_event
        self.status_code = 200
        self.background = None
        self.init_headers({**(headers or {}), "cache-control": "no-cache", "x-accel-buffering": "no"})

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except GatewayError as exc:  # headers are sent: the error becomes an SSE error event
            log.warning("stream ended by error code=%s", exc.code)
            await send({"type": "http.response.body", "body": self.error_event(exc), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def stream() -> None:
                    await self._stream(send)
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                await _wait_disconnect(receive)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.on_close()


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


#: How long a plain request runs before a watcher for the client's hang-up is started: a
#: task per request costs more than many whole screenings, and an answer that comes within
#: this time costs the upstream next to nothing anyway.
WATCH_AFTER_S = 0.05


async def race_disconnect(request: Request, work: Awaitable[Response]) -> Response:
    """Run ``work`` (after the body was read) but cancel it when the client disconnects, so
    that an abandoned request does not keep an upstream generation running.

    ``work`` runs in the current task; after :data:`WATCH_AFTER_S` a watcher cancels that task
    on disconnect.
    """
    task = asyncio.current_task()
    assert task is not None
    hung_up = False
    watcher: asyncio.Future[None] | None = None

    async def watch() -> None:
        nonlocal hung_up
        await _wait_disconnect(request.receive)
        hung_up = True
        task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(watch())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if hung_up and task.uncancel() == 0:
            return Response(status_code=499)
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


class RawResponse(Response):
    """A complete body with headers already encoded (no per-request re-encoding)."""

    def __init__(self, body: bytes, raw_headers: list[tuple[bytes, bytes]], status: int = 200) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        self.raw_headers = [*raw_headers, (b"content-length", str(len(body)).encode())]


async def read_body(receive: Receive) -> bytes:
    """The whole request body, straight from ASGI ``receive`` (the body limit is enforced by
    the edge middleware's ``receive``)."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)
