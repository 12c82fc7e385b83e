"""POST /v1/responses: the OpenAI Responses API."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.responses_dialect import handle_responses


async def responses(request: Request) -> Response:
    return await handle_responses(request)


#: Served by HotPathMiddleware (see gateway/middleware.py), not by the router.
hot = {("POST", "/v1/responses"): responses}
