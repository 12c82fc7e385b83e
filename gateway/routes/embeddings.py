"""POST /v1/embeddings: OpenAI embeddings, the input screened."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.embeddings import handle_embeddings


async def embeddings(request: Request) -> Response:
    return await handle_embeddings(request)


#: Served by HotPathMiddleware (see gateway/middleware.py), not by the router.
hot = {("POST", "/v1/embeddings"): embeddings}
