"""/admin: incidents, reports, users, complaints and policy reload, behind admin tokens.

Lists answer ``{"object": "list", "data": [...], "next": cursor}``, newest first, with
``limit`` and ``after``. Changes record the token's name as the actor.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin import Conflict, PageQuery, admin_call, list_response, read_text_field, reload_policies
from gateway.errors import InvalidRequest, NotFound
from gateway.records import REPORT_STATES, InvalidTransition, ReportState
from gateway.responses import json_response


async def list_incidents(request: Request) -> Response:
    state, _ = admin_call(request)
    query = PageQuery.parse(request.query_params)
    return list_response(await state.store.incidents.list(query.limit, query.after))


async def get_incident(request: Request) -> Response:
    state, _ = admin_call(request)
    incident = await state.store.incidents.get(request.path_params["id"])
    if incident is None:
        raise NotFound("no such incident")
    return json_response(incident.to_dict())


async def list_reports(request: Request) -> Response:
    state, _ = admin_call(request)
    query = PageQuery.parse(request.query_params)
    wanted = request.query_params.get("state")
    if wanted is not None and wanted not in REPORT_STATES:
        raise InvalidRequest(f"state must be one of {', '.join(REPORT_STATES)}", param="state")
    return list_response(await state.store.reports.list(wanted, query.limit, query.after))


async def get_report(request: Request) -> Response:
    state, _ = admin_call(request)
    report = await state.store.reports.get(request.path_params["id"])
    if report is None:
        raise NotFound("no such report")
    return json_response(report.to_dict())


_STEP: dict[str, ReportState] = {"confirm": "confirmed", "dismiss": "dismissed", "file": "filed"}


async def move_report(request: Request) -> Response:
    """POST /admin/reports/{id}/confirm|dismiss|file, body ``{"note": "..."}`` (optional)."""
    state, actor = admin_call(request)
    step = _STEP.get(request.path_params["step"])
    if step is None:
        raise NotFound(f"no such endpoint: {request.url.path}")
    note = await read_text_field(request, "note")
    try:
        report = await state.store.reports.transition(request.path_params["id"], step, actor, note)
    except KeyError:
        raise NotFound("no such report") from None
    except InvalidTransition as exc:
        raise Conflict(str(exc)) from None
    return json_response(report.to_dict())


async def reload_policy(request: Request) -> Response:
    state, actor = admin_call(request)
    result = await reload_policies(state)
    return json_response({**result, "actor": actor})


routes = [
    Route("/admin/incidents", list_incidents, methods=["GET"]),
    Route("/admin/incidents/{id}", get_incident, methods=["GET"]),
    Route("/admin/reports", list_reports, methods=["GET"]),
    Route("/admin/reports/{id}", get_report, methods=["GET"]),
    Route("/admin/reports/{id}/{step:str}", move_report, methods=["POST"]),
    Route("/admin/policy/reload", reload_policy, methods=["POST"]),
]
