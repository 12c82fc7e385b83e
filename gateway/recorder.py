"""Recording decisions: incident to the store, metrics, and a log line with ids and scores.

The decision is enforced whatever happens to the record: when the store fails, the incident
goes to the local spool (``gateway/spool.py``) and is replayed once the store answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.incidents import Incident, build_incident
from gateway.metrics import Metrics
from gateway.policy import Policy
from gateway.records import Report
from gateway.reports import build_report
from gateway.screening import Decision, Segment
from gateway.spool import Spool
from gateway.store.base import Store

__all__ = ["Recorder", "RequestInfo"]

log = logging.getLogger("modgate.incidents")

REPLAY_INTERVAL_S = 5.0
CONTEXT_TURNS = 4
CONTEXT_TURN_CHARS = 500


@dataclass(frozen=True)
class RequestInfo:
    request_id: str
    tenant: str
    route: str
    model: str | None
    #: The user's pseudonym, never the raw id.
    user: str | None = None


class Recorder:
    """``policies`` gives the running policies, whose rules say which incidents are reported."""

    def __init__(
        self, store: Store, metrics: Metrics, spool: Spool, policies: Callable[[], Iterable[Policy]]
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.spool = spool
        self.policies = policies

    async def record(
        self,
        decision: Decision,
        segments: Sequence[Segment],
        info: RequestInfo,
        exposed_chars: int = 0,
        offsets: list[list[int]] | None = None,
    ) -> str:
        """Write the incident before the response that carries the decision; return its id."""
        incident = build_incident(
            decision,
            segments,
            request_id=info.request_id,
            tenant=info.tenant,
            route=info.route,
            model=info.model,
            exposed_chars=exposed_chars,
            offsets=offsets,
            user=info.user,
        )
        for risk in incident.risks:
            self.metrics.decisions.labels(decision.direction, risk["action"], risk["code"]).inc()
        report = self._report(incident, decision, segments)
        await self._keep(incident, report)
        log.info(
            "incident id=%s request_id=%s direction=%s action=%s risks=%s policy=%s@%s",
            incident.id,
            info.request_id,
            decision.direction,
            decision.action,
            ",".join(f"{r['code']}:{r['score']}:{r['classifier']}" for r in incident.risks),
            decision.policy,
            decision.policy_version,
        )
        return incident.id

    def _report(self, incident: Incident, decision: Decision, segments: Sequence[Segment]) -> Report | None:
        policies = list(self.policies())
        policy = next((p for p in policies if p.version == decision.policy_version), None)
        policy = policy or next((p for p in policies if p.name == decision.policy), None)
        if policy is None:  # reloaded away between decision and record: report by the default's rules
            policy = policies[0]
        return build_report(incident, policy, _context(segments))

    async def _keep(self, incident: Incident, report: Report | None) -> None:
        """Incident and report into the store in one atomic write; to the spool when it fails."""
        try:
            if report is None:
                await self.store.incidents.record(incident)
            else:
                await self.store.reports.enqueue(report, incident)
            return
        except Exception:
            log.exception("store failed; spooled incident=%s report=%s", incident.id, report and report.id)
            self.metrics.store_errors.labels("record_incident").inc()
        records = [("incident", incident.to_dict())]
        if report is not None:
            records.append(("report", report.to_dict()))
        try:
            await self.spool.append(*records)
        except OSError:  # neither store nor disk: the decision still stands, the record is lost
            log.exception("incident NOT recorded id=%s", incident.id)
            self.metrics.store_errors.labels("spool").inc()

    async def _write(self, kind: str, record: dict[str, Any]) -> None:
        """Replay one spooled record; written only when absent, so a replay can repeat."""
        if kind == "incident":
            incident = Incident.from_dict(record)
            if await self.store.incidents.get(incident.id) is None:
                await self.store.incidents.record(incident)
        elif kind == "report":
            report = Report.from_dict(record)
            if await self.store.reports.get(report.id) is None:
                await self.store.reports.enqueue(report)
        else:
            log.error("spool holds an unknown record kind %r; skipped", kind)

    async def replay(self) -> int:
        return await self.spool.replay(self._write)

    async def replay_forever(self, interval_s: float = REPLAY_INTERVAL_S) -> None:
        """Replay the spool whenever it holds records and the store answers; until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            if self.spool.pending() and await self.store.ping():
                try:
                    await self.replay()
                except Exception:
                    log.exception("spool replay failed; retrying later")


def _context(segments: Sequence[Segment]) -> str:
    """The conversation's last turns, for a report's evidence (masked by build_report)."""
    turns = [f"[{s.channel}] {s.text[:CONTEXT_TURN_CHARS]}" for s in segments[-CONTEXT_TURNS:]]
    return "\n".join(turns)
