"""Reports (Interim Measures Art. 14): an incident packaged for the authority.

A report is made when any risk that fired has a rule with ``report: true``. Its evidence is
what an authority needs to judge the case without the gateway's database: the policy and its
version, every fired risk with its score and classifier, the masked excerpt and context, where
in the text it was, and which request, route, model and (pseudonymous) user it came from.
"""

from __future__ import annotations

import csv
import json
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from gateway.incidents import Incident, new_id
from gateway.policy import Policy
from gateway.privacy import mask_pii
from gateway.records import Report, ReportState
from gateway.store.base import ReportStore

__all__ = ["CSV_FIELDS", "build_report", "csv_row", "export_reports", "reportable_codes"]

EXPORT_PAGE = 500


def reportable_codes(incident: Incident, policy: Policy) -> list[str]:
    """The fired risk codes whose rule asks for a report, in the incident's order."""
    return [risk["code"] for risk in incident.risks if policy.rule_for(risk["code"]).report]


def build_report(incident: Incident, policy: Policy, context: str) -> Report | None:
    """A ``queued`` report for ``incident``, or None when no fired rule asks for one.

    ``context`` is the text around the excerpt (e.g. the conversation's last turns); it is
    masked here as well, since the caller may not have, and masking twice changes nothing.
    """
    codes = reportable_codes(incident, policy)
    if not codes:
        return None
    now = time.time()
    evidence: dict[str, Any] = {
        "policy": {"name": incident.policy, "version": incident.policy_version},
        "reportable": codes,
        "risks": [dict(risk) for risk in incident.risks],
        "action": incident.action,
        "excerpt": incident.excerpt,
        "context": mask_pii(context),
        "offsets": [list(pair) for pair in incident.offsets],
        "exposed_chars": incident.exposed_chars,
        "request_id": incident.request_id,
        "tenant": incident.tenant,
        "route": incident.route,
        "model": incident.model,
        "direction": incident.direction,
        "channel": incident.channel,
        "user": getattr(incident, "user", None),
        "incident_created_at": incident.created_at,
    }
    return Report(
        id=new_id("rpt"),
        incident_id=incident.id,
        state="queued",
        created_at=now,
        updated_at=now,
        evidence=evidence,
    )


#: The CSV export's columns: the report's main fields, its evidence flattened, its last step.
CSV_FIELDS = (
    "id", "incident_id", "state", "created_at", "updated_at", "policy", "policy_version",
    "reportable", "risk_codes", "max_score", "action", "direction", "channel", "route", "model",
    "request_id", "tenant", "user", "excerpt", "context", "last_actor", "last_at", "last_note",
)  # fmt: skip
# Spreadsheets run cells that start with these as formulas; user text must not (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _iso(at: float | None) -> str:
    return "" if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def _text(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(report: Report) -> dict[str, str]:
    """One report as a flat CSV row (see CSV_FIELDS); free text is made formula-safe."""
    ev = report.evidence
    risks = ev.get("risks") or []
    last = report.history[-1] if report.history else None
    policy = ev.get("policy") or {}
    return {
        "id": report.id,
        "incident_id": report.incident_id,
        "state": report.state,
        "created_at": _iso(report.created_at),
        "updated_at": _iso(report.updated_at),
        "policy": _text(policy.get("name")),
        "policy_version": _text(policy.get("version")),
        "reportable": ";".join(ev.get("reportable") or []),
        "risk_codes": ";".join(str(r.get("code")) for r in risks),
        "max_score": str(max((float(r.get("score", 0.0)) for r in risks), default="")),
        **{key: _text(ev.get(key)) for key in ("action", "direction", "channel", "route", "model")},
        **{key: _text(ev.get(key)) for key in ("request_id", "tenant", "user", "excerpt", "context")},
        "last_actor": _text(last.actor if last else None),
        "last_at": _iso(last.at if last else None),
        "last_note": _text(last.note if last else None),
    }


async def export_reports(
    reports: ReportStore, out: TextIO, fmt: str, state: ReportState | None = None
) -> int:
    """Write every report (of ``state``, or all), newest first, as ``csv`` (with a header) or
    ``jsonl`` (``Report.to_dict`` per line); the number written. Pages through the store, so
    an export of any size holds one page in memory."""
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"unknown export format {fmt!r} (csv or jsonl)")
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    written = 0
    after: str | None = None
    while True:
        page = await reports.list(state, limit=EXPORT_PAGE, after=after)
        for report in page.data:
            if writer is not None:
                writer.writerow(csv_row(report))
            else:
                out.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
        written += len(page.data)
        if page.next is None:
            return written
        after = page.next
