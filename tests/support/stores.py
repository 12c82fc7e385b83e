"""Store fixtures shared by the store tests: the same data from an SQLite file or from a
Redis key prefix (database 13 on loopback; each test its own prefix, deleted afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.store.base import Store, open_store
from gateway.store.redis import RedisStore

REDIS_URL = "redis://127.0.0.1:6379/13"

StoreFactory = Callable[[], Store]


def new_prefix() -> str:
    return f"modgate-test-{uuid.uuid4().hex}:"


async def delete_prefix(prefix: str) -> None:
    """Clean up after ourselves: every key this test wrote, and nothing else."""
    cleanup = aioredis.from_url(REDIS_URL)
    try:
        keys = [key async for key in cleanup.scan_iter(match=f"{prefix}*")]
        if keys:
            await cleanup.delete(*keys)
        assert [key async for key in cleanup.scan_iter(match=f"{prefix}*")] == []
    finally:
        await cleanup.aclose()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Builds (unopened) stores that all see the same data: one file, or one Redis key prefix."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/store.db"
        yield lambda: open_store(url)
        return
    prefix = new_prefix()
    yield lambda: RedisStore(REDIS_URL, prefix=prefix)
    await delete_prefix(prefix)


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[Store]:
    opened = make_store()
    await opened.open()
    yield opened
    await opened.close()
