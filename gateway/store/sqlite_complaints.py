"""SQLite complaints (Art. 15): one row per complaint, its JSON body and its status."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace

from gateway.records import Complaint, ComplaintStatus, Page
from gateway.store.sqlite import Runner, select_page

__all__ = ["COMPLAINTS_SCHEMA", "SQLiteComplaints"]

COMPLAINTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS complaints (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS complaints_status ON complaints(status, id);
"""


def _body(complaint: Complaint) -> str:
    return json.dumps(complaint.to_dict(), ensure_ascii=False)


class SQLiteComplaints:
    def __init__(self, run: Runner) -> None:
        self._run = run

    async def create(self, complaint: Complaint) -> None:
        row = (complaint.id, complaint.status, _body(complaint))
        await self._run(
            lambda db: db.execute("INSERT INTO complaints (id, status, body) VALUES (?, ?, ?)", row)
        )

    async def get(self, complaint_id: str) -> Complaint | None:
        row = await self._run(
            lambda db: db.execute("SELECT body FROM complaints WHERE id = ?", (complaint_id,)).fetchone()
        )
        return Complaint.from_dict(json.loads(row[0])) if row else None

    async def list(
        self, status: ComplaintStatus | None = None, limit: int = 50, after: str | None = None
    ) -> Page[Complaint]:
        bodies, cursor = await select_page(self._run, "complaints", limit, after, status=status)
        return Page([Complaint.from_dict(b) for b in bodies], cursor)

    async def resolve(
        self, complaint_id: str, actor: str, resolution: str, at: float | None = None
    ) -> Complaint:
        when = time.time() if at is None else at

        def write(db: sqlite3.Connection) -> Complaint:
            row = db.execute("SELECT body FROM complaints WHERE id = ?", (complaint_id,)).fetchone()
            if row is None:
                raise KeyError(complaint_id)
            current = Complaint.from_dict(json.loads(row[0]))
            if current.status == "resolved":
                raise ValueError(f"complaint {complaint_id} is already resolved")
            done = replace(
                current, status="resolved", resolved_at=when, resolved_by=actor, resolution=resolution
            )
            db.execute(
                "UPDATE complaints SET status = ?, body = ? WHERE id = ?", (done.status, _body(done), done.id)
            )
            return done

        return await self._run.transaction(write)

    async def count_open(self) -> int:
        row = await self._run(
            lambda db: db.execute("SELECT COUNT(*) FROM complaints WHERE status = 'open'").fetchone()
        )
        return int(row[0])
