"""Recording decisions: incident to the store, metrics, and a log line with ids and scores."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.incidents import build_incident
from gateway.metrics import Metrics
from gateway.screening import Decision, Segment
from gateway.store.base import Store

__all__ = ["Recorder", "RequestInfo"]

log = logging.getLogger("modgate.incidents")


@dataclass(frozen=True)
class RequestInfo:
    request_id: str
    tenant: str
    route: str
    model: str | None


class Recorder:
    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics

    async def record(
        self,
        decision: Decision,
        segments: Sequence[Segment],
        info: RequestInfo,
        exposed_chars: int = 0,
        offsets: list[list[int]] | None = None,
    ) -> str:
        """Write the incident before the response that carries the decision; return its id.

        The decision is enforced even when the store fails: the failure is logged and counted.
        """
        incident = build_incident(
            decision,
            segments,
            request_id=info.request_id,
            tenant=info.tenant,
            route=info.route,
            model=info.model,
            exposed_chars=exposed_chars,
            offsets=offsets,
        )
        for risk in incident.risks:
            self.metrics.decisions.labels(decision.direction, risk["action"], risk["code"]).inc()
        try:
            await self.store.incidents.record(incident)
        except Exception:
            log.exception("incident NOT stored id=%s request_id=%s", incident.id, info.request_id)
            self.metrics.store_errors.labels("record_incident").inc()
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
