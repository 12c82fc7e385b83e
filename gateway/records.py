"""The Article 14/15 records besides incidents: reports, deliveries, users, complaints.

Plain frozen dataclasses with ``to_dict``/``from_dict`` (JSON-safe), shared by both store
backends, the admin API, the CLI and the report worker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar

__all__ = [
    "REPORT_STATES",
    "REPORT_TRANSITIONS",
    "STATUS_RANK",
    "Complaint",
    "ComplaintStatus",
    "Delivery",
    "InvalidTransition",
    "Page",
    "Report",
    "ReportState",
    "Transition",
    "UserEvent",
    "UserRecord",
    "UserStatus",
]

T = TypeVar("T")

ReportState = Literal["queued", "confirmed", "dismissed", "filed"]
REPORT_STATES: tuple[ReportState, ...] = ("queued", "confirmed", "dismissed", "filed")
#: queued → confirmed | dismissed; confirmed → filed. Dismissed and filed are final.
REPORT_TRANSITIONS: dict[ReportState, frozenset[ReportState]] = {
    "queued": frozenset({"confirmed", "dismissed"}),
    "confirmed": frozenset({"filed"}),
    "dismissed": frozenset(),
    "filed": frozenset(),
}

UserStatus = Literal["ok", "warned", "restricted", "suspended"]
#: How strong each status is: a stronger one is never replaced by a weaker one on a strike.
STATUS_RANK: dict[str, int] = {"ok": 0, "warned": 1, "restricted": 2, "suspended": 3}
ComplaintStatus = Literal["open", "resolved"]


class InvalidTransition(ValueError):
    """A report cannot move from its state to the one asked for."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a newest-first list; ``next`` is the cursor for ``after=`` (None at the end)."""

    data: list[T]
    next: str | None = None


@dataclass(frozen=True)
class Transition:
    from_state: ReportState | None
    to_state: ReportState
    actor: str
    at: float
    note: str = ""


@dataclass(frozen=True)
class Report:
    """An incident packaged for the authority. ``evidence`` holds the policy version, scores,
    the masked excerpt and its context; ``history`` every transition with who, when and why."""

    id: str
    incident_id: str
    state: ReportState
    created_at: float
    updated_at: float
    evidence: dict[str, Any]
    history: list[Transition] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        history = [Transition(**t) for t in data.get("history", ())]
        return cls(**{**data, "history": history})

    def moved(self, to_state: ReportState, actor: str, at: float, note: str = "") -> Report:
        """This report after one lifecycle step; raises InvalidTransition when not allowed."""
        if to_state not in REPORT_TRANSITIONS[self.state]:
            raise InvalidTransition(f"report {self.id} is {self.state}; it cannot become {to_state}")
        step = Transition(self.state, to_state, actor, at, note)
        return replace(self, state=to_state, updated_at=at, history=[*self.history, step])


@dataclass(frozen=True)
class Delivery:
    """One event of the report outbox, claimed by a worker until acknowledged.

    ``event_id`` is stable across redeliveries (the sinks' idempotency key); ``attempts``
    counts earlier failed tries; ``entry`` is the backend's own handle (a stream entry id, a
    row id) and means nothing elsewhere; ``error`` is the last failure (dead letters).
    """

    entry: str
    event_id: str
    kind: str  # "report.queued", "report.confirmed", ...
    report: Report
    attempts: int = 0
    error: str = ""


@dataclass(frozen=True)
class UserEvent:
    """One step of a user's enforcement history (a strike, a status change, a reinstatement)."""

    at: float
    kind: Literal["strike", "status", "reinstate"]
    status: UserStatus | None = None
    actor: str = "gateway"
    detail: str = ""


@dataclass(frozen=True)
class UserRecord:
    """A pseudonymous user's enforcement state. ``strikes`` are the times of strikes still
    inside the window; ``until`` ends a suspension or restriction (None: no end)."""

    user: str
    status: UserStatus = "ok"
    until: float | None = None
    strikes: list[float] = field(default_factory=list)
    history: list[UserEvent] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserRecord:
        history = [UserEvent(**e) for e in data.get("history", ())]
        return cls(**{**data, "history": history})


@dataclass(frozen=True)
class Complaint:
    """A user complaint (Art. 15). Ids given by the client are stored as given, even unknown."""

    id: str
    created_at: float
    text: str
    due_at: float
    request_id: str | None = None
    incident_id: str | None = None
    contact: str | None = None
    status: ComplaintStatus = "open"
    resolved_at: float | None = None
    resolved_by: str | None = None
    resolution: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Complaint:
        return cls(**data)

    def overdue(self, now: float) -> bool:
        """Still open past its response deadline."""
        return self.status == "open" and self.due_at < now
