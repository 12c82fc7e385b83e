"""The report outbox's events, shared by both backends.

An event is stored as one JSON text ``{"event_id", "kind", "report"}``: the report as it was
when the event was made (a later transition makes a new event, it does not change this one),
so a retry delivers exactly what the first attempt tried to.
"""

from __future__ import annotations

import json

from gateway.config import ReportSettings
from gateway.incidents import new_id
from gateway.records import Delivery, Report

__all__ = ["delivery", "new_event", "retry_delay"]


def new_event(kind: str, report: Report) -> tuple[str, str]:
    """A fresh event id and the event's stored JSON."""
    event_id = new_id("evt")
    payload = {"event_id": event_id, "kind": kind, "report": report.to_dict()}
    return event_id, json.dumps(payload, ensure_ascii=False)


def delivery(entry: str, payload: str, attempts: int, error: str = "") -> Delivery:
    data = json.loads(payload)
    report = Report.from_dict(data["report"])
    return Delivery(entry, data["event_id"], data["kind"], report, attempts, error)


def retry_delay(attempts: int, settings: ReportSettings) -> float:
    """Seconds before the next try after ``attempts`` failed ones: base, doubling, capped.
    The Redis backend's Lua script computes the same."""
    return float(min(settings.retry_base_s * 2.0 ** (attempts - 1), settings.retry_max_s))
