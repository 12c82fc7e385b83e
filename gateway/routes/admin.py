"""/admin: incidents, reports, users, complaints and policy reload, behind admin tokens.

Lists answer ``{"object": "list", "data": [...], "next": cursor}``, newest first, with
``limit`` and ``after``. Changes record the token's name as the actor.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin import Conflict, PageQuery, reload_policies
from gateway.app import AppState
from gateway.errors import InvalidRequest, NotFound
from gateway.openai_chat import parse_json_object
from gateway.records import REPORT_STATES, InvalidTransition, Page, ReportState
from gateway.responses import json_response

MAX_NOTE = 4000


def _state(request: Request) -> tuple[AppState, str]:
    """The app state and the caller's actor name (401/404 before anything else happens)."""
    state: AppState = request.app.state.modgate
    return state, state.admin.actor(request.headers.get("authorization"))


def _list(page: Page[Any]) -> Response:
    return json_response({"object": "list", "data": [r.to_dict() for r in page.data], "next": page.next})


async def list_incidents(request: Request) -> Response:
    state, _ = _state(request)
    query = PageQuery.parse(request.query_params)
    return _list(await state.store.incidents.list(query.limit, query.after))


async def get_incident(request: Request) -> Response:
    state, _ = _state(request)
    incident = await state.store.incidents.get(request.path_params["id"])
    if incident is None:
        raise NotFound("no such incident")
    return json_response(incident.to_dict())


async def list_reports(request: Request) -> Response:
    state, _ = _state(request)
    query = PageQuery.parse(request.query_params)
    wanted = request.query_params.get("state")
    if wanted is not None and wanted not in REPORT_STATES:
        raise InvalidRequest(f"state must be one of {', '.join(REPORT_STATES)}", param="state")
    return _list(await state.store.reports.list(wanted, query.limit, query.after))


async def get_report(request: Request) -> Response:
    state, _ = _state(request)
    report = await state.store.reports.get(request.path_params["id"])
    if report is None:
        raise NotFound("no such report")
    return json_response(report.to_dict())


_STEP: dict[str, ReportState] = {"confirm": "confirmed", "dismiss": "dismissed", "file": "filed"}


async def move_report(request: Request) -> Response:
    """POST /admin/reports/{id}/confirm|dismiss|file, body ``{"note": "..."}`` (optional)."""
    state, actor = _state(request)
    step = _STEP.get(request.path_params["step"])
    if step is None:
        raise NotFound(f"no such endpoint: {request.url.path}")
    note = await _note(request)
    try:
        report = await state.store.reports.transition(request.path_params["id"], step, actor, note)
    except KeyError:
        raise NotFound("no such report") from None
    except InvalidTransition as exc:
        raise Conflict(str(exc)) from None
    return json_response(report.to_dict())


async def _note(request: Request, field: str = "note") -> str:
    body = await request.body()
    if not body.strip():
        return ""
    payload = parse_json_object(body)
    unknown = set(payload) - {field}
    if unknown:
        raise InvalidRequest(f"unknown field {sorted(unknown)[0]!r}", param=sorted(unknown)[0])
    value = payload.get(field, "")
    if not isinstance(value, str) or len(value) > MAX_NOTE:
        raise InvalidRequest(f"{field} must be a string of at most {MAX_NOTE} characters", param=field)
    return value


async def reload_policy(request: Request) -> Response:
    state, actor = _state(request)
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
