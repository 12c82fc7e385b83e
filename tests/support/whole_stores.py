"""Stores for tests that reach them only through a URL (the CLI, a gateway process).

A store URL cannot name a Redis key prefix, so these use the default prefix in Redis
database 10, which is theirs alone: ``redis_db10`` flushes that database (and no other)
before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import redis

from gateway.store.base import Store, open_store

__all__ = ["REDIS_URL", "on_store", "redis_db10"]

T = TypeVar("T")

REDIS_URL = "redis://127.0.0.1:6379/10"


def on_store(url: str, work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store at ``url``, run ``work`` on it, close it (from synchronous tests)."""

    async def run() -> T:
        store = open_store(url)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _flush() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()


@contextlib.contextmanager
def redis_db10() -> Iterator[str]:
    """Redis database 10, empty, for the test's use; emptied again afterwards."""
    _flush()
    try:
        yield REDIS_URL
    finally:
        _flush()
