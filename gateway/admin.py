"""Admin services: who is calling (named bearer tokens), list paging, policy reload.

Tokens come from ``MODGATE_ADMIN_TOKEN`` (actor name "admin") and the gateway config's
``admin_tokens`` (name → token; the name is recorded on every change the token makes). With
no token configured the admin API does not exist (404), so it cannot be left open by mistake.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, InvalidRequest, NotFound, Unauthorized
from gateway.openai_chat import parse_json_object
from gateway.policy_loader import PolicyError
from gateway.records import Page
from gateway.responses import json_response

if TYPE_CHECKING:
    from gateway.app import AppState

__all__ = [
    "AdminAuth",
    "Conflict",
    "PageQuery",
    "admin_call",
    "list_response",
    "read_text_field",
    "reload_policies",
]

log = logging.getLogger("modgate.admin")

MAX_LIMIT = 500
#: A note or resolution is a few paragraphs, not a document (the CLI takes the same).
MAX_TEXT = 4000


class Conflict(GatewayError):
    """The change asked for does not fit the record's state (e.g. filing a dismissed report)."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class AdminAuth:
    def __init__(self, tokens: dict[str, str]) -> None:
        # Compare digests, so every comparison takes the same time whatever the token's length.
        self._tokens = [(hashlib.sha256(t.encode()).digest(), name) for name, t in tokens.items()]

    def actor(self, authorization: str | None) -> str:
        """The token's name; Unauthorized without a valid ``Authorization: Bearer`` token."""
        if not self._tokens:
            raise NotFound("the admin API is off: no admin token is configured")
        token = ""
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for known, name in self._tokens:  # no early exit: the time does not tell which matched
            if hmac.compare_digest(known, digest) and found is None:
                found = name
        if found is None or not token:
            raise Unauthorized("a valid admin token is required (Authorization: Bearer <token>)")
        return found


def admin_call(request: Request) -> tuple[AppState, str]:
    """The app state and the caller's actor name (401/404 before anything else happens)."""
    state: AppState = request.app.state.modgate
    return state, state.admin.actor(request.headers.get("authorization"))


def list_response(page: Page[Any], extra: Callable[[Any], dict[str, Any]] | None = None) -> Response:
    data = [{**r.to_dict(), **(extra(r) if extra else {})} for r in page.data]
    return json_response({"object": "list", "data": data, "next": page.next})


async def read_text_field(request: Request, field: str, *, required: bool = False) -> str:
    """The one string field a change takes (a note, a resolution) from a JSON body; the body
    may be empty when the field is optional."""
    body = await request.body()
    if not body.strip() and not required:
        return ""
    payload = parse_json_object(body)
    unknown = sorted(set(payload) - {field})
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", param=unknown[0])
    value = payload.get(field, "")
    if not isinstance(value, str) or len(value) > MAX_TEXT or (required and not value.strip()):
        need = "a non-empty string" if required else "a string"
        raise InvalidRequest(f"{field} must be {need} of at most {MAX_TEXT} characters", param=field)
    return value


@dataclass(frozen=True)
class PageQuery:
    limit: int
    after: str | None

    @classmethod
    def parse(cls, params: Any) -> PageQuery:
        raw = params.get("limit", "50")
        try:
            limit = int(raw)
        except ValueError:
            raise InvalidRequest("limit must be an integer", param="limit") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}", param="limit")
        return cls(limit, params.get("after") or None)


async def reload_policies(state: AppState) -> dict[str, Any]:
    """Load every policy file again; all or nothing: one bad file keeps every running policy."""
    from gateway.app import load_policies, warm  # gateway.app imports this module

    assert state.router is not None
    try:
        default, fresh = load_policies(state.settings, state.config)
    except PolicyError as exc:
        log.error("policy reload rejected; the running policies stay: %s", exc)
        raise InvalidRequest(f"policy reload rejected: {exc}", code="invalid_policy") from exc
    await warm([default, *fresh.values()])
    for route in state.router.routes:
        route.policy = fresh[state.config.policy_path(route.config.policy)]
    state.router.default_policy = default
    state.default_policy = default
    state.policies = fresh
    versions = {p.name: p.version for p in [default, *fresh.values()]}
    log.info("policies reloaded %s", ",".join(f"{k}@{v}" for k, v in versions.items()))
    return {"object": "policy.reload", "policies": [{"name": k, "version": v} for k, v in versions.items()]}
