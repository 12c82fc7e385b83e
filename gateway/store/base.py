"""The store interface: one composite ``Store`` of small record stores, two backends.

Both backends (SQLite, embedded default; Redis, for replicas) pass the same contract tests
(``tests/unit/test_store*.py``). Lists are newest first and paged by id: ids are
time-ordered (``incidents.new_id``), so ``after=<id>`` continues below that id.
"""

from __future__ import annotations

import builtins
from typing import Protocol

from gateway.config import ReportSettings
from gateway.incidents import Incident
from gateway.records import (
    Complaint,
    ComplaintStatus,
    Delivery,
    Page,
    Report,
    ReportState,
    UserRecord,
    UserStatus,
)

__all__ = ["ComplaintStore", "IncidentStore", "ReportStore", "Store", "UserStore", "open_store"]


class IncidentStore(Protocol):
    async def record(self, incident: Incident) -> None:
        """Durable before it returns: the response carrying the decision is sent after."""
        ...

    async def get(self, incident_id: str) -> Incident | None: ...

    async def list(self, limit: int = 50, after: str | None = None) -> Page[Incident]:
        """Newest first; ``after`` is the last id of the previous page."""
        ...

    async def purge(self, before: float) -> int:
        """Delete incidents created before the epoch time ``before``; the number deleted."""
        ...


class ReportStore(Protocol):
    """Reports and their outbox: every new report and every state change is one event that a
    worker delivers to the sinks at least once (claim → ack, or fail → retry → dead letter)."""

    async def enqueue(self, report: Report, incident: Incident | None = None) -> None:
        """Store a new ``queued`` report and its ``report.queued`` event, atomically; with its
        ``incident`` in the same write when given, so that no crash keeps one without the
        other. ValueError when the report is not queued or its id exists already."""
        ...

    async def get(self, report_id: str) -> Report | None: ...

    async def list(
        self, state: ReportState | None = None, limit: int = 50, after: str | None = None
    ) -> Page[Report]: ...

    async def transition(
        self, report_id: str, to_state: ReportState, actor: str, note: str = "", at: float | None = None
    ) -> Report:
        """Move a report one lifecycle step and queue its event, atomically. KeyError when
        unknown, records.InvalidTransition when the step is not allowed."""
        ...

    async def counts(self) -> dict[ReportState, int]:
        """Reports per state (every state present, zeros included)."""
        ...

    async def claim(self, consumer: str, count: int = 16, block_ms: int = 0) -> builtins.list[Delivery]:
        """Events for ``consumer`` to deliver: new ones, due retries, and those another consumer
        claimed but did not acknowledge within the reclaim time (it crashed)."""
        ...

    async def ack(self, delivery: Delivery) -> None: ...

    async def fail(self, delivery: Delivery, error: str) -> bool:
        """Count a failed attempt; the event is retried later, or dead-lettered after the
        configured attempts (True)."""
        ...

    async def dead_letters(self, limit: int = 50) -> builtins.list[Delivery]: ...

    async def outbox(self) -> dict[str, int]:
        """Outbox depth: ``{"pending": n, "dead": m}``."""
        ...


class UserStore(Protocol):
    """Enforcement state per pseudonymous user; shared by all replicas."""

    async def get(self, user: str, *, history: bool = True) -> UserRecord | None:
        """None for a user never struck nor set; ``history=False`` leaves the history out (the
        per-request check needs only the status and strikes)."""
        ...

    async def strike(self, user: str, at: float, window_s: float, detail: str = "") -> UserRecord:
        """Add a strike at ``at`` and forget strikes older than ``at - window_s``; atomic, so
        concurrent strikes of one user all count."""
        ...

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
        """Set the status and record the change. ``escalate``: leave the record as it is when
        its status at ``at`` is stronger (an unexpired suspension beats a restriction beats a
        warning), so that concurrent strikes never lower a status."""
        ...

    async def reinstate(self, user: str, actor: str, note: str = "", at: float | None = None) -> UserRecord:
        """Back to ``ok`` with no strikes; recorded in the history."""
        ...

    async def hit_rate(self, user: str, limit: int, period_s: float, at: float | None = None) -> bool:
        """Count one request; False when the user already made ``limit`` in the last period."""
        ...


class ComplaintStore(Protocol):
    async def create(self, complaint: Complaint) -> None: ...

    async def get(self, complaint_id: str) -> Complaint | None: ...

    async def list(
        self, status: ComplaintStatus | None = None, limit: int = 50, after: str | None = None
    ) -> Page[Complaint]: ...

    async def resolve(
        self, complaint_id: str, actor: str, resolution: str, at: float | None = None
    ) -> Complaint:
        """KeyError when unknown; ValueError when already resolved."""
        ...

    async def count_open(self) -> int: ...


class Store(Protocol):
    """The durable record: incidents, reports, users, complaints, and a few secrets."""

    url: str

    @property
    def incidents(self) -> IncidentStore: ...

    @property
    def reports(self) -> ReportStore: ...

    @property
    def users(self) -> UserStore: ...

    @property
    def complaints(self) -> ComplaintStore: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the backend answers."""
        ...

    async def secret(self, name: str) -> str:
        """A random secret made once and kept (first writer wins), e.g. the pseudonym key."""
        ...

    async def warnings(self) -> list[str]:
        """What an operator should know about the backend (e.g. Redis without persistence)."""
        ...


def open_store(url: str, reports: ReportSettings | None = None) -> Store:
    """Build (not yet open) the backend that ``url`` names; ``reports`` tunes the outbox."""
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SQLiteStore

        return SQLiteStore(url, reports=reports)
    if url.startswith(("redis://", "rediss://")):
        from gateway.store.redis import RedisStore

        return RedisStore(url, reports=reports)
    raise ValueError(f"unsupported store URL {url!r}")
