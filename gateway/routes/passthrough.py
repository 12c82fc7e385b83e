"""GET /v1/models and the config's ``passthrough:`` paths, proxied unscreened; routes with a
generic ``adapter`` (any JSON API), screened; 404 for the rest.

An unscreened path must never be reachable by accident, so this catch-all refuses every path
that is not listed.
"""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.app import AppState
from gateway.errors import NotFound
from gateway.generic import handle_generic
from gateway.upstream import forward_headers, open_upstream, response_headers

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


async def passthrough(request: Request) -> Response:
    state: AppState = request.app.state.modgate
    full = request.url.path
    if request.method == "POST" and state.router is not None:
        adapted = state.router.adapted(full)
        if adapted is not None:
            return await handle_generic(request, adapted)
    allowed = (full == "/v1/models" and request.method == "GET") or (
        state.router is not None and state.router.passthrough(full)
    )
    if not allowed or state.router is None:
        raise NotFound(f"no such endpoint: {request.method} {full}")
    caller = state.router.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
    route = state.router.find(full, None, caller, any_model=True)
    if route is None:
        raise NotFound(f"no route serves {full}")
    rid = request.scope["state"]["request_id"]
    headers = forward_headers(request.headers, route.upstream, caller, rid)
    body = await request.body()
    response, _ = await open_upstream(
        route.upstream, request.method, full, headers, body or None, state.metrics, request.url.query
    )
    return StreamingResponse(
        response.aiter_bytes(),
        status_code=response.status_code,
        headers=response_headers(response),
        background=BackgroundTask(response.aclose),
    )


routes = [Route("/{path:path}", passthrough, methods=METHODS)]
