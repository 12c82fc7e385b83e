"""POST /v1/chat/completions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.chat import handle_chat


async def chat_completions(request: Request) -> Response:
    return await handle_chat(request)


#: Served by HotPathMiddleware (see gateway/middleware.py), not by the router.
hot = {("POST", "/v1/chat/completions"): chat_completions}
