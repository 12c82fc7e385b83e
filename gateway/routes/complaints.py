"""POST /v1/complaints: a user's complaint (Interim Measures Art. 15), answered by the deadline
in the default policy's ``complaints.response_deadline``; listed and resolved by the admin API.

Ids given by the client are stored as given, even unknown ones. The text and the contact
details are personal data: they go to the store only, never to the logs.
"""

from __future__ import annotations

import logging
import re
import time

from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.app import AppState
from gateway.errors import ServiceUnavailable
from gateway.incidents import new_id
from gateway.openai_chat import parse_json_object, validate_body
from gateway.records import Complaint
from gateway.responses import json_response

log = logging.getLogger("modgate.complaints")

_LOGGABLE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _loggable(given: str | None) -> str | None:
    """A client-given id for the log line only when it looks like an id: it is client text."""
    return given if given is None or _LOGGABLE_ID.match(given) else "<not an id>"


class ComplaintRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: StrictStr = Field(..., min_length=1, max_length=10_000, description="What the complaint is about.")
    request_id: StrictStr | None = Field(None, max_length=256, description="x-request-id of the request.")
    incident_id: StrictStr | None = Field(None, max_length=256, description="modgate.incident_id shown.")
    contact: StrictStr | None = Field(None, max_length=1_000, description="How to reach the complainant.")


async def create_complaint(request: Request) -> Response:
    state: AppState = request.app.state.modgate
    if state.router is None:
        raise ServiceUnavailable("the gateway is starting")
    state.router.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
    given = validate_body(ComplaintRequest, parse_json_object(await request.body()))
    now = time.time()
    complaint = Complaint(
        id=new_id("cmp"),
        created_at=now,
        text=given.text,
        due_at=now + state.default_policy.spec.complaints.response_deadline,
        request_id=given.request_id,
        incident_id=given.incident_id,
        contact=given.contact,
    )
    try:
        await state.store.complaints.create(complaint)
    except Exception as exc:
        log.exception("complaint NOT stored id=%s", complaint.id)
        state.metrics.child(state.metrics.store_errors, "complaint").inc()
        raise ServiceUnavailable("the complaint could not be stored; please try again") from exc
    log.info(
        "complaint id=%s request_id=%s incident_id=%s due_at=%.0f",
        complaint.id,
        _loggable(complaint.request_id),
        _loggable(complaint.incident_id),
        complaint.due_at,
    )
    body = {"id": complaint.id, "object": "complaint", "status": complaint.status}
    return json_response({**body, "created_at": complaint.created_at, "due_at": complaint.due_at}, 201)


routes = [Route("/v1/complaints", create_complaint, methods=["POST"])]
