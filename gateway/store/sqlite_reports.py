"""SQLite reports and their outbox: the Redis Streams semantics, in tables.

``report_outbox`` holds every undelivered event. A row is free when ``claimed_by`` is null and
``due_at`` has come; a claimed row whose ``claimed_at`` is older than ``reclaim_after_s`` is
taken over (its worker crashed). ``claims`` counts the claims of a row, and the delivery's
entry is ``seq:claims``, so that a worker that lost its row to a reclaim cannot reschedule it
behind the new owner's back. An ack deletes the row; after ``max_attempts`` failures it moves
to ``report_dead``. Every multi-statement change runs in one ``Runner.transaction``.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import sqlite3
import time
from typing import Any

from gateway.config import ReportSettings
from gateway.incidents import Incident
from gateway.records import REPORT_STATES, Delivery, Page, Report, ReportState
from gateway.store.outbox import delivery, new_event, retry_delay
from gateway.store.sqlite import Runner, insert_incident, select_page

__all__ = ["REPORTS_SCHEMA", "SQLiteReports"]

REPORTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_state ON reports(state, id);
CREATE TABLE IF NOT EXISTS report_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at REAL NOT NULL,
    claimed_by TEXT,
    claimed_at REAL,
    claims INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS report_outbox_due ON report_outbox(claimed_by, due_at);
CREATE TABLE IF NOT EXISTS report_dead (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    dead_at REAL NOT NULL
);
"""

# How often a blocking claim looks again: SQLite has no notification across processes.
_POLL_S = 0.05


def _queue(db: sqlite3.Connection, kind: str, report: Report, now: float) -> None:
    event_id, payload = new_event(kind, report)
    db.execute(
        "INSERT INTO report_outbox (event_id, payload, due_at) VALUES (?, ?, ?)", (event_id, payload, now)
    )


class SQLiteReports:
    def __init__(self, run: Runner, settings: ReportSettings) -> None:
        self._run = run
        self.settings = settings

    async def enqueue(self, report: Report, incident: Incident | None = None) -> None:
        if report.state != "queued":
            raise ValueError(f"report {report.id} is {report.state}; only queued reports are enqueued")
        body = json.dumps(report.to_dict(), ensure_ascii=False)

        def write(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO reports (id, state, body) VALUES (?, ?, ?)", (report.id, report.state, body)
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"report {report.id} exists already") from None
            _queue(db, "report.queued", report, time.time())
            if incident is not None:
                insert_incident(db, incident)

        await self._run.transaction(write)

    async def get(self, report_id: str) -> Report | None:
        row = await self._run(
            lambda db: db.execute("SELECT body FROM reports WHERE id = ?", (report_id,)).fetchone()
        )
        return Report.from_dict(json.loads(row[0])) if row else None

    async def list(
        self, state: ReportState | None = None, limit: int = 50, after: str | None = None
    ) -> Page[Report]:
        bodies, cursor = await select_page(self._run, "reports", limit, after, state=state)
        return Page([Report.from_dict(b) for b in bodies], cursor)

    async def transition(
        self, report_id: str, to_state: ReportState, actor: str, note: str = "", at: float | None = None
    ) -> Report:
        when = time.time() if at is None else at

        def move(db: sqlite3.Connection) -> Report:
            row = db.execute("SELECT body FROM reports WHERE id = ?", (report_id,)).fetchone()
            if row is None:
                raise KeyError(report_id)
            moved = Report.from_dict(json.loads(row[0])).moved(to_state, actor, when, note)
            body = json.dumps(moved.to_dict(), ensure_ascii=False)
            db.execute("UPDATE reports SET state = ?, body = ? WHERE id = ?", (to_state, body, report_id))
            _queue(db, f"report.{to_state}", moved, time.time())
            return moved

        return await self._run.transaction(move)

    async def counts(self) -> dict[ReportState, int]:
        rows = await self._run(
            lambda db: db.execute("SELECT state, COUNT(*) FROM reports GROUP BY state").fetchall()
        )
        found = {str(state): int(n) for state, n in rows}
        return {state: found.get(state, 0) for state in REPORT_STATES}

    async def claim(self, consumer: str, count: int = 16, block_ms: int = 0) -> builtins.list[Delivery]:
        deadline = time.monotonic() + block_ms / 1000
        while True:
            # A plain read first: an idle poll must not take the write lock that requests need.
            if await self._run(lambda db: self._claimable(db, time.time(), 1)):
                got = await self._run.transaction(lambda db: self._claim(db, consumer, count))
                if got:
                    return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await asyncio.sleep(min(_POLL_S, remaining))

    def _claimable(self, db: sqlite3.Connection, now: float, count: int) -> builtins.list[Any]:
        return db.execute(
            "SELECT seq, payload, attempts, claims FROM report_outbox"
            " WHERE (claimed_by IS NULL AND due_at <= ?) OR (claimed_by IS NOT NULL AND claimed_at <= ?)"
            " ORDER BY seq LIMIT ?",
            (now, now - self.settings.reclaim_after_s, count),
        ).fetchall()

    def _claim(self, db: sqlite3.Connection, consumer: str, count: int) -> builtins.list[Delivery]:
        now = time.time()
        rows = self._claimable(db, now, count)
        db.executemany(
            "UPDATE report_outbox SET claimed_by = ?, claimed_at = ?, claims = claims + 1 WHERE seq = ?",
            [(consumer, now, seq) for seq, *_ in rows],
        )
        return [delivery(f"{seq}:{claims + 1}", payload, attempts) for seq, payload, attempts, claims in rows]

    async def ack(self, delivery: Delivery) -> None:
        # Delivered is delivered, even by a worker that lost the row to a reclaim meanwhile.
        seq = int(delivery.entry.split(":")[0])
        await self._run(lambda db: db.execute("DELETE FROM report_outbox WHERE seq = ?", (seq,)))

    async def fail(self, delivery: Delivery, error: str) -> bool:
        seq, claims = (int(part) for part in delivery.entry.split(":"))

        def record(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT event_id, payload, attempts FROM report_outbox WHERE seq = ? AND claims = ?",
                (seq, claims),
            ).fetchone()
            if row is None:  # acked, or retaken by another worker: not ours to reschedule
                return False
            event_id, payload, attempts = row[0], row[1], row[2] + 1
            now = time.time()
            if attempts >= self.settings.max_attempts:
                db.execute(
                    "INSERT INTO report_dead (event_id, payload, attempts, error, dead_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (event_id, payload, attempts, error, now),
                )
                db.execute("DELETE FROM report_outbox WHERE seq = ?", (seq,))
                return True
            db.execute(
                "UPDATE report_outbox SET attempts = ?, due_at = ?, claimed_by = NULL, claimed_at = NULL,"
                " last_error = ? WHERE seq = ?",
                (attempts, now + retry_delay(attempts, self.settings), error, seq),
            )
            return False

        return await self._run.transaction(record)

    async def dead_letters(self, limit: int = 50) -> builtins.list[Delivery]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT seq, payload, attempts, error FROM report_dead ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        )
        return [delivery(str(seq), payload, attempts, error) for seq, payload, attempts, error in rows]

    async def outbox(self) -> dict[str, int]:
        def count(db: sqlite3.Connection) -> dict[str, int]:
            pending = db.execute("SELECT COUNT(*) FROM report_outbox").fetchone()[0]
            dead = db.execute("SELECT COUNT(*) FROM report_dead").fetchone()[0]
            return {"pending": int(pending), "dead": int(dead)}

        return await self._run(count)
