"""Pure ASGI middleware: request ids, body-size limit, request metrics.

It wraps ``send``/``receive`` instead of buffering, so streamed responses flow through
untouched.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError, PayloadTooLarge
from gateway.metrics import Metrics
from gateway.responses import error_response, internal_error_response

__all__ = ["EdgeMiddleware", "HotPathMiddleware"]

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_KNOWN_ROUTES = (
    "/v1/chat/completions", "/v1/messages", "/v1/moderations", "/v1/models", "/v1/complaints",
    "/v1/completions", "/v1/embeddings", "/v1/responses", "/healthz", "/readyz", "/metrics",
)  # fmt: skip


Renderer = Callable[[GatewayError], Response]


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class EdgeMiddleware:
    """Everything every request needs at the edge, in one pure ASGI layer (one layer, not
    three: each layer costs a call and a ``send`` wrapper per message on the hot path):

    * ``x-request-id`` on every response: the client's (if well-formed) or a new one;
    * 413 for bodies over the limit, by Content-Length up front or by counting chunks;
    * request count by route and status, and time to the last byte (streams included).

    ``renderers`` renders the edge's own errors on paths whose API has another error shape
    than OpenAI's (by exact path).
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_bytes: int,
        renderers: Mapping[str, Renderer] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.renderers = renderers or {}

    def _render(self, scope: Scope, exc: GatewayError) -> Response:
        # Looked up only on an error: the hot path pays nothing for other dialects' shapes.
        return self.renderers.get(scope["path"], error_response)(exc)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given = _header(scope, b"x-request-id")
        rid = given.decode() if given and _VALID_ID.match(given) else f"req_{os.urandom(12).hex()}"
        scope.setdefault("state", {}).update(request_id=rid, t0=start)
        raw_id = rid.encode()
        status = 500
        started = False
        too_large = PayloadTooLarge(f"request body exceeds the limit of {self.max_bytes} bytes")
        seen = 0

        async def edge_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", raw_id)]
            await send(message)

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large
            return message

        length = _header(scope, b"content-length")
        try:
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                await self._render(scope, too_large)(scope, receive, edge_send)
            else:
                await self.app(scope, counting_receive, edge_send)
        except PayloadTooLarge:
            if not started:
                await self._render(scope, too_large)(scope, receive, edge_send)
        finally:
            path = scope["path"]
            route = path if path in _KNOWN_ROUTES else "other"
            self.metrics.request_done(route, status, time.perf_counter() - start)


Handler = Callable[[Request], Awaitable[Response]]


class HotPathMiddleware:
    """Serves the high-volume endpoints straight from ASGI, by exact method and path.

    Measured on the chat endpoint, the router, the per-route exception wrapper and FastAPI's
    exit stack cost about a sixth of a screened request's CPU, and these endpoints need none
    of them: they read their own body and raise only :class:`GatewayError`, rendered here.
    Every other request goes on to the router.
    """

    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], Handler]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.routes.get((scope.get("method", ""), scope.get("path", "")))
        if handler is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            response = await handler(Request(scope, receive))
        except GatewayError as exc:
            response = error_response(exc)
        except Exception:
            response = internal_error_response(scope)
        await response(scope, receive, send)
