"""GET /healthz (alive), /readyz (policy loaded, classifiers warm, store reachable), /metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.app import AppState
from gateway.responses import json_response


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 "ready"; 200 "degraded" when only the store is down (decisions are still enforced and
    records wait in the spool); 503 "not ready" while policies or classifiers are not."""
    state: AppState = request.app.state.modgate
    store_ok = await state.store.ping()
    checks = {
        "policy": state.default_policy is not None,
        "classifiers": state.ready.get("classifiers", False),
        "store": store_ok,
    }
    serving = checks["policy"] and checks["classifiers"]
    status = "not ready" if not serving else "ready" if store_ok else "degraded"
    warnings = await state.store.warnings() if store_ok else ["the store does not answer"]
    body = {
        "status": status,
        "checks": checks,
        "spooled": state.recorder.spool.pending(),
        "warnings": warnings,
        "policy": {"name": state.default_policy.name, "version": state.default_policy.version},
        "routes": len(state.router.routes) if state.router else 0,
    }
    return json_response(body, 200 if serving else 503)


async def metrics(request: Request) -> Response:
    state: AppState = request.app.state.modgate
    await _store_gauges(state)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def _store_gauges(state: AppState) -> None:
    """Queue depths come from the store, so every replica reports the same shared figures."""
    try:
        counts = await state.store.reports.counts()
        outbox = await state.store.reports.outbox()
        complaints = await state.store.complaints.count_open()
    except Exception:  # a scrape must not fail because the store is down; the gauges keep their last values
        state.metrics.store_errors.labels("metrics").inc()
        return
    for report_state, count in counts.items():
        state.metrics.reports.labels(report_state).set(count)
    for kind, count in outbox.items():
        state.metrics.report_outbox.labels(kind).set(count)
    state.metrics.complaints_open.set(complaints)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
