"""POST /v1/completions: OpenAI legacy (text) completions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.completions import handle_completions


async def completions(request: Request) -> Response:
    return await handle_completions(request)


#: Served by HotPathMiddleware (see gateway/middleware.py), not by the router.
hot = {("POST", "/v1/completions"): completions}
