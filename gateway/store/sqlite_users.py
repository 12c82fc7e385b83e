"""SQLite users: enforcement state per pseudonymous user.

``users`` holds the status, ``user_strikes`` one row per strike (pruned to the window on each
strike), ``user_events`` the history (the last :data:`HISTORY_MAX` per user) and ``user_hits``
the sliding request log of restricted users. Every write runs in one ``BEGIN IMMEDIATE``
transaction on the store's one thread, so concurrent strikes all count.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict
from typing import Any

from gateway.records import STATUS_RANK, UserEvent, UserRecord, UserStatus
from gateway.store.sqlite import Runner

__all__ = ["HISTORY_MAX", "USERS_SCHEMA", "SQLiteUsers", "status_rank"]

HISTORY_MAX = 200

USERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'ok',
    until REAL
);
CREATE TABLE IF NOT EXISTS user_strikes (user TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS user_strikes_user ON user_strikes(user, at);
CREATE TABLE IF NOT EXISTS user_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS user_events_user ON user_events(user, id);
CREATE TABLE IF NOT EXISTS user_hits (user TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS user_hits_user ON user_hits(user, at);
"""


def status_rank(status: str, until: float | None, at: float) -> int:
    """How strong a stored status still is at ``at``: a timed one that ended counts as ok."""
    if until is not None and until <= at:
        return 0
    return STATUS_RANK[status]


def _append_event(db: sqlite3.Connection, user: str, event: UserEvent) -> None:
    body = json.dumps(asdict(event), ensure_ascii=False)
    db.execute("INSERT INTO user_events (user, body) VALUES (?, ?)", (user, body))
    # Bounded history: drop what falls off the end of the last HISTORY_MAX events.
    db.execute(
        "DELETE FROM user_events WHERE user = ? AND id <= ("
        " SELECT id FROM user_events WHERE user = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
        (user, user, HISTORY_MAX),
    )


def _read(db: sqlite3.Connection, user: str, history: bool = True) -> UserRecord | None:
    row = db.execute("SELECT status, until FROM users WHERE user = ?", (user,)).fetchone()
    if row is None:
        return None
    strikes = [r[0] for r in db.execute("SELECT at FROM user_strikes WHERE user = ? ORDER BY at", (user,))]
    if not history:
        return UserRecord(user, row[0], row[1], strikes)
    events = db.execute("SELECT body FROM user_events WHERE user = ? ORDER BY id", (user,))
    return UserRecord(user, row[0], row[1], strikes, [UserEvent(**json.loads(r[0])) for r in events])


def _must_read(db: sqlite3.Connection, user: str) -> UserRecord:
    record = _read(db, user)
    assert record is not None  # every write path inserts the users row first
    return record


def _ensure(db: sqlite3.Connection, user: str) -> None:
    db.execute("INSERT OR IGNORE INTO users (user) VALUES (?)", (user,))


class SQLiteUsers:
    def __init__(self, run: Runner) -> None:
        self._run = run

    async def get(self, user: str, *, history: bool = True) -> UserRecord | None:
        return await self._run(lambda db: _read(db, user, history))

    async def strike(self, user: str, at: float, window_s: float, detail: str = "") -> UserRecord:
        def write(db: sqlite3.Connection) -> UserRecord:
            _ensure(db, user)
            db.execute("DELETE FROM user_strikes WHERE user = ? AND at < ?", (user, at - window_s))
            db.execute("INSERT INTO user_strikes (user, at) VALUES (?, ?)", (user, at))
            _append_event(db, user, UserEvent(at, "strike", detail=detail))
            return _must_read(db, user)

        return await self._run.transaction(write)

    async def set_status(
        self,
        user: str,
        status: UserStatus,
        until: float | None,
        actor: str,
        detail: str = "",
        at: float | None = None,
        *,
        escalate: bool = False,
    ) -> UserRecord:
        when = time.time() if at is None else at

        def write(db: sqlite3.Connection) -> UserRecord:
            _ensure(db, user)
            if escalate:
                row = db.execute("SELECT status, until FROM users WHERE user = ?", (user,)).fetchone()
                if status_rank(row[0], row[1], when) > STATUS_RANK[status]:
                    return _must_read(db, user)
            db.execute("UPDATE users SET status = ?, until = ? WHERE user = ?", (status, until, user))
            _append_event(db, user, UserEvent(when, "status", status, actor, detail))
            return _must_read(db, user)

        return await self._run.transaction(write)

    async def reinstate(self, user: str, actor: str, note: str = "", at: float | None = None) -> UserRecord:
        when = time.time() if at is None else at

        def write(db: sqlite3.Connection) -> UserRecord:
            _ensure(db, user)
            db.execute("UPDATE users SET status = 'ok', until = NULL WHERE user = ?", (user,))
            db.execute("DELETE FROM user_strikes WHERE user = ?", (user,))
            db.execute("DELETE FROM user_hits WHERE user = ?", (user,))
            _append_event(db, user, UserEvent(when, "reinstate", "ok", actor, note))
            return _must_read(db, user)

        return await self._run.transaction(write)

    async def hit_rate(self, user: str, limit: int, period_s: float, at: float | None = None) -> bool:
        when = time.time() if at is None else at

        def count(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM user_hits WHERE user = ? AND at <= ?", (user, when - period_s))
            row: Any = db.execute("SELECT COUNT(*) FROM user_hits WHERE user = ?", (user,)).fetchone()
            if row[0] >= limit:
                return False  # a refused request is not counted: waiting out the period is enough
            db.execute("INSERT INTO user_hits (user, at) VALUES (?, ?)", (user, when))
            return True

        return await self._run.transaction(count)
