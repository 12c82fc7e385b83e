"""Stores for the report tests (with report settings): one SQLite file, or one Redis key prefix.

Every Redis test gets its own prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ReportSettings
from gateway.records import Report
from gateway.store.base import Store
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SQLiteStore
from tests.support.stores import REDIS_URL, delete_prefix, new_prefix

BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


@dataclass(frozen=True)
class StoreMaker:
    """Builds (unopened) stores that all see the same data."""

    backend: str
    url: str
    prefix: str = ""

    def __call__(self, settings: ReportSettings | None = None) -> Store:
        if self.backend == "sqlite":
            return SQLiteStore(self.url, reports=settings)
        return RedisStore(self.url, prefix=self.prefix, reports=settings)


@contextlib.asynccontextmanager
async def store_maker(backend: str, tmp_path: Path) -> AsyncIterator[StoreMaker]:
    if backend == "sqlite":
        yield StoreMaker("sqlite", f"sqlite:///{tmp_path}/reports.db")
        return
    prefix = new_prefix()
    try:
        yield StoreMaker("redis", REDIS_URL, prefix)
    finally:
        await delete_prefix(prefix)


def report(n: int, **fields: Any) -> Report:
    """A queued report whose id sorts by ``n``."""
    values: dict[str, Any] = {
        "id": f"rpt_{n:04d}_{uuid.uuid4().hex[:8]}",
        "incident_id": f"inc_{n:04d}",
        "state": "queued",
        "created_at": 1_700_000_000.0 + n,
        "updated_at": 1_700_000_000.0 + n,
        "evidence": {
            "policy": {"name": "default", "version": "0123456789abcdef"},
            "risks": [{"code": "A.1.d", "score": 0.97, "classifier": "banned-terms", "action": "block"}],
            "excerpt": f"第{n}条：炸药配方 — phone 138****5678",
        },
    }
    values.update(fields)
    return Report(**values)


async def wait_for(check: Any, within_s: float = 10.0, every: float = 0.02) -> Any:
    """Poll an async ``check`` until it returns something truthy; that value."""
    deadline = time.monotonic() + within_s
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(every)
