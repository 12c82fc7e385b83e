"""The floor: the least a FastAPI pass-through proxy can cost, for the gateway to be compared with.

A bare FastAPI app with one shared ``aiohttp.ClientSession`` (created in the lifespan, kept on
``app.state``). ``POST /v1/chat/completions`` forwards the raw body and the end-to-end request
headers to ``{upstream}/chat/completions`` and returns the answer; an SSE answer is relayed
chunk by chunk with ``StreamingResponse``. No parsing, no validation, no moderation.

CLI: ``python -m benchmarks.floor --upstream http://127.0.0.1:P/v1 --port N`` (uvicorn, uvloop +
httptools, one worker, access log off). ``GET /readyz`` answers 200 once the session exists.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

__all__ = ["create_app", "main"]

# Hop-by-hop headers (RFC 9110 7.6.1) plus those the client library sets itself.
_DROP_REQUEST = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "accept-encoding",
    }
)
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)


def create_app(upstream: str) -> FastAPI:
    """A pass-through app forwarding to ``upstream`` (a base URL ending in ``/v1``)."""
    target = upstream.rstrip("/") + "/chat/completions"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        async with aiohttp.ClientSession(
            connector=connector, timeout=_TIMEOUT, auto_decompress=False
        ) as session:
            app.state.session = session
            yield

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        session: aiohttp.ClientSession = request.app.state.session
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k not in _DROP_REQUEST}
        upstream_resp = await session.post(target, data=body, headers=headers)
        ctype = upstream_resp.headers.get("content-type", "application/json")
        if ctype.startswith("text/event-stream"):
            return StreamingResponse(
                _relay(upstream_resp),
                status_code=upstream_resp.status,
                media_type=ctype,
                background=BackgroundTask(upstream_resp.release),
            )
        try:
            content = await upstream_resp.read()
        finally:
            upstream_resp.release()
        return Response(content, status_code=upstream_resp.status, media_type=ctype)

    return app


async def _relay(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
    finally:
        resp.release()  # also when the client went away mid-stream


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9000/v1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
