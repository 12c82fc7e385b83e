"""/admin/users and /admin/complaints: a user's enforcement record and reinstatement, and the
complaints queue (Art. 15) with its response deadlines.

``{id}`` in ``/admin/users/{id}`` is the user id as clients send it; the gateway looks it up by
its pseudonym, so the raw id is never stored.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin import Conflict, PageQuery, admin_call, list_response, read_text_field
from gateway.app import AppState
from gateway.enforcement import standing
from gateway.errors import InvalidRequest, NotFound, ServiceUnavailable
from gateway.records import Complaint, ComplaintStatus, UserRecord
from gateway.responses import json_response

COMPLAINT_STATUSES: tuple[ComplaintStatus, ...] = ("open", "resolved")


async def _pseudonym(state: AppState, raw: str) -> str:
    user = await state.pseudonym(raw)
    if user is None:
        raise ServiceUnavailable("the pseudonym key is not available (the store does not answer)")
    return user


def _user_body(state: AppState, record: UserRecord) -> dict[str, Any]:
    settings = state.default_policy.spec.enforcement
    body = record.to_dict()
    if settings is not None:
        now = time.time()
        current = standing(record, settings, now)
        body["standing"] = {"status": current.status, "until": current.until}
        body["strikes_in_window"] = sum(1 for at in record.strikes if at >= now - settings.window)
    return body


async def get_user(request: Request) -> Response:
    state, _ = admin_call(request)
    user = await _pseudonym(state, request.path_params["id"])
    record = await state.store.users.get(user) or UserRecord(user)
    return json_response(_user_body(state, record))


async def reinstate_user(request: Request) -> Response:
    state, actor = admin_call(request)
    note = await read_text_field(request, "note")
    user = await _pseudonym(state, request.path_params["id"])
    record = await state.store.users.reinstate(user, actor, note)
    return json_response(_user_body(state, record))


def _due(complaint: Complaint) -> dict[str, Any]:
    return {"overdue": complaint.overdue(time.time())}


async def list_complaints(request: Request) -> Response:
    state, _ = admin_call(request)
    query = PageQuery.parse(request.query_params)
    wanted = request.query_params.get("status")
    if wanted is not None and wanted not in COMPLAINT_STATUSES:
        raise InvalidRequest("status must be open or resolved", param="status")
    page = await state.store.complaints.list(wanted, query.limit, query.after)
    return list_response(page, _due)


async def get_complaint(request: Request) -> Response:
    state, _ = admin_call(request)
    complaint = await state.store.complaints.get(request.path_params["id"])
    if complaint is None:
        raise NotFound("no such complaint")
    return json_response({**complaint.to_dict(), **_due(complaint)})


async def resolve_complaint(request: Request) -> Response:
    """POST /admin/complaints/{id}/resolve, body ``{"resolution": "..."}`` (required)."""
    state, actor = admin_call(request)
    resolution = await read_text_field(request, "resolution", required=True)
    try:
        complaint: Complaint = await state.store.complaints.resolve(
            request.path_params["id"], actor, resolution
        )
    except KeyError:
        raise NotFound("no such complaint") from None
    except ValueError as exc:
        raise Conflict(str(exc)) from None
    return json_response({**complaint.to_dict(), **_due(complaint)})


routes = [
    Route("/admin/users/{id}", get_user, methods=["GET"]),
    Route("/admin/users/{id}/reinstate", reinstate_user, methods=["POST"]),
    Route("/admin/complaints", list_complaints, methods=["GET"]),
    Route("/admin/complaints/{id}", get_complaint, methods=["GET"]),
    Route("/admin/complaints/{id}/resolve", resolve_complaint, methods=["POST"]),
]
