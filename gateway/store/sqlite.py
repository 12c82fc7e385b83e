"""SQLite backend: one WAL-mode file, every call on one dedicated thread.

One thread owns the connection, so there is no cross-thread use of it and writes are
serialised without locks of our own; the event loop never blocks on disk. Each record store
(``sqlite_*.py``) brings its own schema and runs its statements through :class:`Runner`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.config import ReportSettings
from gateway.incidents import Incident
from gateway.records import Page

__all__ = ["Runner", "SQLiteIncidents", "SQLiteStore", "insert_incident", "select_page"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_created ON incidents(created_at);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Runner:
    """Runs functions with the connection on the store's one thread.

    Writes go through :meth:`transaction`, which commits by groups: transactions that arrive
    while a commit is under way share the next one, each in a savepoint of its own, so one
    fsync (``synchronous=FULL``) serves them all and a burst of incidents does not queue up
    behind one fsync each.
    """

    def __init__(self) -> None:
        self.db: sqlite3.Connection | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modgate-sqlite")
        self._batch: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def __call__(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            if self.db is None:
                raise RuntimeError("store is not open")
            return fn(self.db)

        return await asyncio.get_running_loop().run_in_executor(self.pool, run)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` atomically: its changes commit together, or not at all when it raises."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._batch.append((fn, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name="modgate-sqlite-commit")
        return await done

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._batch:
            batch, self._batch = self._batch, []
            outcomes = await loop.run_in_executor(self.pool, self._commit, [fn for fn, _ in batch])
            for (_, done), (ok, value) in zip(batch, outcomes, strict=True):
                if done.done():  # its caller was cancelled; the write stands all the same
                    continue
                if ok:
                    done.set_result(value)
                else:
                    done.set_exception(value)

    def _commit(self, fns: list[Callable[[sqlite3.Connection], Any]]) -> list[tuple[bool, Any]]:
        db = self.db
        if db is None:
            return [(False, RuntimeError("store is not open"))] * len(fns)
        outcomes: list[tuple[bool, Any]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for fn in fns:
                db.execute("SAVEPOINT one")
                try:
                    outcomes.append((True, fn(db)))
                except Exception as exc:  # this one is undone; the others stand
                    db.execute("ROLLBACK TO one")
                    outcomes.append((False, exc))
                db.execute("RELEASE one")
            db.execute("COMMIT")
        except Exception as exc:  # BEGIN or COMMIT failed (busy, disk full): nothing was written
            if db.in_transaction:
                db.execute("ROLLBACK")
            return [(False, exc)] * len(fns)
        return outcomes

    async def drain(self) -> None:
        """Wait for the commit under way (before closing the connection)."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)


async def select_page(
    run: Runner, table: str, limit: int, after: str | None, **equals: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Bodies of one newest-first page of ``table`` (id, body columns) where each given column
    equals its value (None: any), below the id ``after``; and the next page's cursor."""
    if limit <= 0:
        return [], None
    where = [f"{column} = ?" for column, value in equals.items() if value is not None]
    args: list[Any] = [value for value in equals.values() if value is not None]
    if after is not None:
        where.append("id < ?")
        args.append(after)
    sql = f"SELECT id, body FROM {table}"  # table and columns are ours, never a client's
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    params = (*args, limit + 1)
    rows: list[Any] = await run(lambda db: db.execute(sql, params).fetchall())
    cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        cursor = rows[-1][0]
    return [json.loads(r[1]) for r in rows], cursor


def insert_incident(db: sqlite3.Connection, incident: Incident) -> None:
    body = json.dumps(incident.to_dict(), ensure_ascii=False)
    db.execute(
        "INSERT INTO incidents (id, created_at, body) VALUES (?, ?, ?)",
        (incident.id, incident.created_at, body),
    )


class SQLiteIncidents:
    def __init__(self, run: Runner) -> None:
        self._run = run

    async def record(self, incident: Incident) -> None:
        await self._run.transaction(lambda db: insert_incident(db, incident))

    async def get(self, incident_id: str) -> Incident | None:
        row = await self._run(
            lambda db: db.execute("SELECT body FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        )
        return Incident.from_dict(json.loads(row[0])) if row else None

    async def list(self, limit: int = 50, after: str | None = None) -> Page[Incident]:
        bodies, cursor = await select_page(self._run, "incidents", limit, after)
        return Page([Incident.from_dict(b) for b in bodies], cursor)

    async def purge(self, before: float) -> int:
        cursor = await self._run(
            lambda db: db.execute("DELETE FROM incidents WHERE created_at < ?", (before,))
        )
        return int(cursor.rowcount)


class SQLiteStore:
    def __init__(self, url: str, reports: ReportSettings | None = None) -> None:
        # Imported here: the record stores import Runner and select_page from this module.
        from gateway.store.sqlite_complaints import COMPLAINTS_SCHEMA, SQLiteComplaints
        from gateway.store.sqlite_reports import REPORTS_SCHEMA, SQLiteReports
        from gateway.store.sqlite_users import USERS_SCHEMA, SQLiteUsers

        self.url = url
        self.path = Path(url.removeprefix("sqlite:///"))
        self._run = Runner()
        self.incidents = SQLiteIncidents(self._run)
        self.reports = SQLiteReports(self._run, reports or ReportSettings())
        self.users = SQLiteUsers(self._run)
        self.complaints = SQLiteComplaints(self._run)
        self._schemas = [_SCHEMA, REPORTS_SCHEMA, USERS_SCHEMA, COMPLAINTS_SCHEMA]

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: an incident is a legal record; it must survive a crash right after the response.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            for schema in self._schemas:
                db.executescript(schema)
            return db

        self._run.db = await asyncio.get_running_loop().run_in_executor(self._run.pool, connect)

    async def close(self) -> None:
        await self._run.drain()
        if self._run.db is not None:
            db, self._run.db = self._run.db, None
            await asyncio.get_running_loop().run_in_executor(self._run.pool, db.close)
        self._run.pool.shutdown(wait=True)

    async def ping(self) -> bool:
        try:
            return await self._run(lambda db: db.execute("SELECT 1").fetchone() == (1,))
        except (sqlite3.Error, RuntimeError):
            return False

    async def secret(self, name: str) -> str:
        fresh = secrets.token_hex(32)

        def get_or_create(db: sqlite3.Connection) -> str:
            db.execute("INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)", (name, fresh))
            return str(db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()[0])

        return await self._run.transaction(get_or_create)

    async def warnings(self) -> list[str]:
        return []
