"""Response classes: fast JSON, and a stream that stops (and closes the upstream) when the
client goes away, whatever the ASGI server's spec version."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError

__all__ = ["GuardedStreamResponse", "JSONBytes", "json_response", "race_disconnect"]

log = logging.getLogger(__name__)


class JSONBytes(Response):
    media_type = "application/json"


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONBytes(orjson.dumps(content), status_code=status, headers=headers)


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


async def race_disconnect(request: Request, work: Awaitable[Response]) -> Response:
    """Run ``work`` (after the body was read) but cancel it when the client disconnects, so
    that an abandoned request does not keep an upstream generation running.

    ``work`` runs in the current task, which a watcher cancels on disconnect: one task per
    request instead of two.
    """
    task = asyncio.current_task()
    assert task is not None
    hung_up = False

    async def watch() -> None:
        nonlocal hung_up
        await _wait_disconnect(request.receive)
        hung_up = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if hung_up and task.uncancel() == 0:
            return Response(status_code=499)
        raise
    finally:
        watcher.cancel()
