"""Upstream HTTP: one pooled aiohttp session per upstream, header forwarding, error mapping.

The transport was picked by measurement (benchmarks/README.md): httpx's own pool collapses
under concurrency, and even over an aiohttp transport the httpx layer costs more CPU per
request than the whole floor proxy, so the gateway speaks aiohttp directly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from gateway.config import UpstreamConfig
from gateway.errors import UpstreamStatus, UpstreamTimeout, UpstreamUnavailable
from gateway.metrics import Metrics
from gateway.routing import Caller, Upstream

__all__ = [
    "UpstreamClient",
    "UpstreamResponse",
    "forward_headers",
    "open_upstream",
    "response_headers",
    "translate_upstream_errors",
]

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


@contextmanager
def translate_upstream_errors() -> Iterator[None]:
    """Map aiohttp's exceptions to the gateway's tree, keeping the cause."""
    try:
        yield
    except TimeoutError as exc:
        raise UpstreamTimeout("the upstream did not answer in time") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamUnavailable("the upstream could not be reached") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable(f"the upstream connection failed ({type(exc).__name__})") from exc


class UpstreamResponse:
    """An upstream response whose body has not been read yet."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: CIMultiDictProxy[str] = response.headers
        self.raw_headers = response.raw_headers

    async def aread(self) -> bytes:
        with translate_upstream_errors():
            return await self._response.read()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Bytes as they arrive (decompressed), not waiting to fill a buffer."""
        with translate_upstream_errors():
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        """Drop the connection unless the body was read to the end: an unfinished generation
        upstream stops when its connection goes away."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class UpstreamClient:
    """One pooled session for one upstream; created inside the running event loop."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        t = self.config.timeout
        connector = aiohttp.TCPConnector(limit=self.config.max_connections, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=t.pool + t.connect, sock_connect=t.connect, sock_read=t.read
        )
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=True)
        return self._session

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> UpstreamResponse:
        session = self._session or self._open()
        with translate_upstream_errors():
            response = await session.request(method, url, headers=headers, data=body, allow_redirects=False)
        return UpstreamResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def forward_headers(
    client_headers: Mapping[str, str], upstream: Upstream, caller: Caller, request_id: str
) -> dict[str, str]:
    headers = {k: v for k, v in client_headers.items() if k.lower() not in _DROP_REQUEST}
    headers.update(upstream.auth_headers(caller.authorization, caller.api_key))
    headers["x-request-id"] = request_id
    return headers


_DROP_RESPONSE_RAW = frozenset(name.encode() for name in _DROP_RESPONSE)


def raw_response_headers(response: UpstreamResponse) -> list[tuple[bytes, bytes]]:
    """The upstream's headers to pass on, already encoded, in one pass."""
    out = []
    for name, value in response.raw_headers:
        lower = name.lower()
        if lower not in _DROP_RESPONSE_RAW:
            out.append((lower, value))
    return out


def response_headers(response: UpstreamResponse) -> dict[str, str]:
    """:func:`raw_response_headers` as a dict, for Starlette responses that take one."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_response_headers(response)}


async def open_upstream(
    upstream: Upstream,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    metrics: Metrics,
    query: str = "",
) -> tuple[UpstreamResponse, float]:
    """Send and return the response with its body not yet read, and the seconds to headers.

    An error status is read, closed and raised as :class:`UpstreamStatus` so that the client
    sees the upstream's own status and error body.
    """
    url = upstream.url(path) + (f"?{query}" if query else "")
    start = time.perf_counter()
    try:
        response = await upstream.client.send(method, url, headers, body)
    except UpstreamUnavailable:
        metrics.upstream_errors.labels(upstream.name, "connect").inc()
        raise
    except Exception:
        metrics.upstream_errors.labels(upstream.name, "timeout").inc()
        raise
    elapsed = time.perf_counter() - start
    metrics.child(metrics.upstream_seconds, upstream.name).observe(elapsed)
    if response.status_code >= 400:
        metrics.upstream_errors.labels(upstream.name, f"http_{response.status_code // 100}xx").inc()
        try:
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
            if k.lower() == "retry-after" or k.lower().startswith(("x-ratelimit", "anthropic-ratelimit"))
        }
        raise UpstreamStatus(response.status_code, parsed if isinstance(parsed, dict) else None, keep)
    return response, elapsed
