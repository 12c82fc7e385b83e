"""The HTTP client pool that every remote classifier shares (guard LLMs on a model server,
moderation services, text-classification servers), and ``${ENV}`` references in their headers.

One :class:`httpx.AsyncClient` per running event loop: connections are bound to the loop that
opened them, and tests (or ``modgate check``) run several loops in one process. Classifiers
are built when a policy loads, often before any loop runs, so they ask for the client when
they send, never at construction.
"""

from __future__ import annotations

import asyncio
import os
import re
import weakref
from collections.abc import Mapping

import httpx

__all__ = ["aclose_shared_clients", "expand_env", "expand_headers", "shared_client"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=30.0)
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def shared_client() -> httpx.AsyncClient:
    """The pooled client of the running loop. Timeouts are per request (each classifier's own)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(limits=_LIMITS, timeout=None, follow_redirects=False, trust_env=False)
        _clients[loop] = client
    return client


async def aclose_shared_clients() -> None:
    """Close the running loop's client (the gateway's shutdown, a test's teardown)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def expand_env(value: str, where: str) -> str:
    """Replace ``${NAME}`` with the environment variable; an unset one is an error, never ''."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ValueError(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REF.sub(sub, value)


def expand_headers(headers: Mapping[str, str], where: str) -> dict[str, str]:
    return {name: expand_env(value, f"{where}.{name}") for name, value in headers.items()}
