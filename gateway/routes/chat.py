"""POST /v1/chat/completions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.chat import handle_chat


async def chat_completions(request: Request) -> Response:
    return await handle_chat(request)


routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
