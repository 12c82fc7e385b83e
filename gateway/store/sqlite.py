"""SQLite backend: one WAL-mode file, every call on one dedicated thread.

One thread owns the connection, so there is no cross-thread use of it and writes are
serialised without locks of our own; the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.incidents import Incident

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_created ON incidents(created_at);
"""


class SQLiteStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = Path(url.removeprefix("sqlite:///"))
        self._db: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modgate-sqlite")

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            if self._db is None:
                raise RuntimeError("store is not open")
            return fn(self._db)

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: an incident is a legal record; it must survive a crash right after the response.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            return db

        self._db = await asyncio.get_running_loop().run_in_executor(self._pool, connect)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._pool, db.close)
        self._pool.shutdown(wait=True)

    async def ping(self) -> bool:
        try:
            return await self._call(lambda db: db.execute("SELECT 1").fetchone() == (1,))
        except (sqlite3.Error, RuntimeError):
            return False

    async def record_incident(self, incident: Incident) -> None:
        body = json.dumps(incident.to_dict(), ensure_ascii=False)
        await self._call(
            lambda db: db.execute(
                "INSERT INTO incidents (id, created_at, body) VALUES (?, ?, ?)",
                (incident.id, incident.created_at, body),
            )
        )

    async def get_incident(self, incident_id: str) -> Incident | None:
        row = await self._call(
            lambda db: db.execute("SELECT body FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        )
        return Incident.from_dict(json.loads(row[0])) if row else None

    async def recent_incidents(self, limit: int = 50) -> list[Incident]:
        rows: list[Any] = await self._call(
            lambda db: db.execute(
                "SELECT body FROM incidents ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
        )
        return [Incident.from_dict(json.loads(r[0])) for r in rows]
