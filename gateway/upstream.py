"""Upstream HTTP: one pooled client per upstream, header forwarding, error translation."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Literal

import httpx
import orjson
from httpx_aiohttp import HttpxAiohttpClient

from gateway.config import UpstreamConfig
from gateway.errors import UpstreamStatus, UpstreamUnavailable, translate_upstream_errors
from gateway.metrics import Metrics
from gateway.routing import Caller, Upstream

__all__ = ["build_client", "forward_headers", "open_upstream", "response_headers"]

# Hop-by-hop headers, and what the gateway sets itself or must never pass on.
_DROP_REQUEST = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
        "trailer", "proxy-authorization", "proxy-connection", "authorization", "x-api-key",
        "accept-encoding", "cookie", "x-modgate-user", "x-request-id",
    }
)  # fmt: skip
_DROP_RESPONSE = frozenset(
    {
        "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding",
        "set-cookie", "x-request-id", "date", "server",
    }
)  # fmt: skip


def build_client(config: UpstreamConfig, transport: Literal["aiohttp", "httpx"]) -> httpx.AsyncClient:
    t = config.timeout
    timeout = httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool)
    limits = httpx.Limits(
        max_connections=config.max_connections, max_keepalive_connections=config.max_connections
    )
    if transport == "aiohttp":
        return HttpxAiohttpClient(timeout=timeout, limits=limits)
    return httpx.AsyncClient(timeout=timeout, limits=limits)


def forward_headers(
    client_headers: Mapping[str, str], upstream: Upstream, caller: Caller, request_id: str
) -> dict[str, str]:
    headers = {k: v for k, v in client_headers.items() if k.lower() not in _DROP_REQUEST}
    headers.update(upstream.auth_headers(caller.authorization))
    headers["x-request-id"] = request_id
    return headers


def response_headers(upstream_headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in upstream_headers.items() if k.lower() not in _DROP_RESPONSE}


async def open_upstream(
    upstream: Upstream,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    metrics: Metrics,
    query: str = "",
) -> tuple[httpx.Response, float]:
    """Send and return the response with its body not yet read, and the seconds to headers.

    An error status is read, closed and raised as :class:`UpstreamStatus` so that the client
    sees the upstream's own status and error body.
    """
    url = upstream.url(path) + (f"?{query}" if query else "")
    request = upstream.client.build_request(method, url, headers=headers, content=body)
    start = time.perf_counter()
    try:
        with translate_upstream_errors():
            response = await upstream.client.send(request, stream=True)
    except UpstreamUnavailable:
        metrics.upstream_errors.labels(upstream.name, "connect").inc()
        raise
    except Exception:
        metrics.upstream_errors.labels(upstream.name, "timeout").inc()
        raise
    elapsed = time.perf_counter() - start
    metrics.upstream_seconds.labels(upstream.name).observe(elapsed)
    if response.status_code >= 400:
        metrics.upstream_errors.labels(upstream.name, f"http_{response.status_code // 100}xx").inc()
        try:
            with translate_upstream_errors():
                raw = await response.aread()
        finally:
            await response.aclose()
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        keep = {
            k: v
            for k, v in response.headers.items()
            if k.lower() == "retry-after" or k.lower().startswith("x-ratelimit")
        }
        raise UpstreamStatus(response.status_code, parsed if isinstance(parsed, dict) else None, keep)
    return response, elapsed
