"""/admin: incidents, reports, users, complaints and policy reload, behind admin tokens.

Lists answer ``{"object": "list", "data": [...], "next": cursor}``, newest first, with
``limit`` and ``after``. Changes record the token's name as the actor.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin import PageQuery, reload_policies
from gateway.app import AppState
from gateway.errors import NotFound
from gateway.records import Page
from gateway.responses import json_response


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


async def reload_policy(request: Request) -> Response:
    state, actor = _state(request)
    result = await reload_policies(state)
    return json_response({**result, "actor": actor})


routes = [
    Route("/admin/incidents", list_incidents, methods=["GET"]),
    Route("/admin/incidents/{id}", get_incident, methods=["GET"]),
    Route("/admin/policy/reload", reload_policy, methods=["POST"]),
]
