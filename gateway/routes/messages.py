"""POST /v1/messages: the Anthropic Messages API."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.anthropic_messages import error_response
from gateway.messages import handle_messages


async def messages(request: Request) -> Response:
    return await handle_messages(request)


#: Served by HotPathMiddleware (see gateway/middleware.py), not by the router.
hot = {("POST", "/v1/messages"): messages}
#: How the edge renders its own errors (an oversized body) on this path.
renderers = {"/v1/messages": error_response}
