"""Chat completions through the gateway: screen input, forward, screen output (whole or streamed)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.app import AppState
from gateway.duties import EnforcementSettings, ExplicitLabel
from gateway.enforcement import STRIKING_ACTIONS, Standing, identify
from gateway.errors import (
    ContentBlocked,
    GatewayError,
    UpstreamUnavailable,
)
from gateway.labels import LABEL_HEADER, Labeler, labeled, labeled_body, labeler_for
from gateway.openai_chat import (
    ChatRequest,
    apply_output,
    input_segments,
    output_segments,
    parse_json_object,
    redact_payload,
    refusal_completion,
    refusal_stream,
    validate_chat,
)
from gateway.recorder import RequestInfo
from gateway.responses import GuardedStreamResponse, RawResponse, race_disconnect, read_body
from gateway.routing import Route
from gateway.screening import Decision, Segment, screen
from gateway.stream.guard import StreamGuard
from gateway.stream.labeling import StreamLabel
from gateway.upstream import forward_headers, open_upstream, raw_response_headers, response_headers

__all__ = ["handle_chat"]

ROUTE = "/v1/chat/completions"
_LABEL_HEADER = LABEL_HEADER.encode()
#: Upstream headers the gateway sets itself (an upstream's own AIGC label is replaced).
_REPLACED = frozenset({b"content-type", _LABEL_HEADER})


@dataclass
class _Call:
    state: AppState
    route: Route
    chat: ChatRequest
    info: RequestInfo
    t0: float
    labeler: Labeler
    #: The explicit label for this request's answer; None when off or the answer must be JSON.
    explicit: ExplicitLabel | None
    enforcement: EnforcementSettings | None = None
    standing: Standing = field(default_factory=Standing)

    async def record(
        self, decision: Decision, segments: list[Segment], exposed: int = 0, offsets: Any = None
    ) -> str:
        """Record the incident, then the strike, both before the response carrying it is sent
        (a stream's cut lands here too), so the user's very next request sees them."""
        incident_id = await self.state.recorder.record(decision, segments, self.info, exposed, offsets)
        user = self.info.user
        if self.enforcement is not None and user is not None and decision.action in STRIKING_ACTIONS:
            after = await self.state.enforcer.strike(user, self.enforcement, incident_id)
            self.standing = after or self.standing
        return incident_id

    def notice(self) -> dict[str, str]:
        return self.standing.notice(self.enforcement) if self.enforcement is not None else {}


async def handle_chat(request: Request) -> Response:
    state: AppState = request.app.state.modgate
    assert state.router is not None
    client_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
    caller = state.router.authenticate(client_headers.get("authorization"), client_headers.get("x-api-key"))
    body = await read_body(request.receive)
    payload = parse_json_object(body)
    chat = validate_chat(payload)
    route = state.router.resolve(request.scope["path"], chat.model, caller)
    rid = request.scope["state"]["request_id"]
    labeler = labeler_for(state.config.provider, route.policy)
    user = await state.pseudonym(identify(chat.user, client_headers.get("x-modgate-user"), caller.user))
    call = _Call(
        state,
        route,
        chat,
        RequestInfo(rid, caller.tenant, route.name, chat.model, user),
        request.scope["state"]["t0"],
        labeler,
        labeler.explicit((chat.model_extra or {}).get("response_format")),
        route.policy.spec.enforcement,
    )
    if call.enforcement is not None and user is not None:
        call.standing = await state.enforcer.check(user, call.enforcement)
    forward = forward_headers(client_headers, route.upstream, caller, rid)
    try:
        response = await _screened(request, call, payload, body, forward)
    except GatewayError as exc:
        exc.headers.update(call.notice())
        raise
    response.headers.update(call.notice())
    return response


async def _screened(
    request: Request, call: _Call, payload: dict[str, Any], body: bytes, headers: dict[str, str]
) -> Response:
    state, route, chat = call.state, call.route, call.chat
    segments = input_segments(chat)
    decision = await screen(route.policy, segments, "input", state.metrics, route=route.name)
    if decision.action != "allow":
        incident_id = await call.record(decision, segments)
        note = decision.note(incident_id)
        if decision.action == "block":
            raise ContentBlocked("the request was blocked by the content policy", modgate=note)
        if decision.action == "refuse":
            return _refusal(call, note)
        if decision.action == "redact":
            redact_payload(payload, decision, segments, route.policy.spec.refusal.redaction)
            body = orjson.dumps(payload)
    headers["content-type"] = "application/json"
    if chat.stream:
        return await _stream(call, headers, body)
    return await race_disconnect(request, _complete(call, headers, body))


async def _complete(call: _Call, headers: dict[str, str], body: bytes) -> Response:
    state = call.state
    sent = time.perf_counter()
    response, _ = await open_upstream(call.route.upstream, "POST", ROUTE, headers, body, state.metrics)
    try:
        raw = await response.aread()
    finally:
        await response.aclose()
    upstream_seconds = time.perf_counter() - sent
    try:
        result = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamUnavailable("the upstream answered with a body that is not JSON") from exc
    if not isinstance(result, dict):
        raise UpstreamUnavailable("the upstream answered with a body that is not a JSON object")
    segments = output_segments(result)
    decision = await screen(call.route.policy, segments, "output", state.metrics, route=call.route.name)
    out_headers = [(k, v) for k, v in raw_response_headers(response) if k not in _REPLACED]
    out_headers.append((b"content-type", b"application/json"))
    if decision.action != "allow":
        incident_id = await call.record(decision, segments)
        apply_output(result, decision, segments, call.route.policy, decision.note(incident_id))
    unchanged = raw if decision.action == "allow" else None
    raw, label = labeled_body(call.labeler, call.explicit, result, unchanged, call.info.request_id)
    if label is not None:
        out_headers.append((_LABEL_HEADER, label))
    added = time.perf_counter() - call.t0 - upstream_seconds
    state.metrics.child(state.metrics.added_seconds, ROUTE).observe(max(0.0, added))
    return RawResponse(raw, out_headers)


async def _stream(call: _Call, headers: dict[str, str], body: bytes) -> Response:
    state = call.state
    response, _ = await open_upstream(call.route.upstream, "POST", ROUTE, headers, body, state.metrics)
    ctype = response.headers.get("content-type", "")
    if not ctype.startswith("text/event-stream"):
        await response.aclose()
        raise UpstreamUnavailable(f"the upstream did not stream (content-type {ctype or 'missing'})")
    policy = call.route.policy
    mode = policy.spec.streaming.mode

    guard = StreamGuard(
        policy,
        call.record,
        response.aclose,
        metrics=state.metrics,
        route=call.route.name,
        on_holdback=state.metrics.holdback_seconds.observe,
        on_cut=lambda d: _count_cut(state, d, mode),
        label=StreamLabel(call.explicit) if call.explicit is not None else None,
        choices=call.chat.n or 1,
    )

    return GuardedStreamResponse(
        guard.run(response.aiter_bytes()),
        on_close=response.aclose,
        error_event=_error_event,
        headers={**response_headers(response), **_stream_label(call)},
    )


def _stream_label(call: _Call) -> dict[str, str]:
    """The implicit label of a stream: its headers leave before any chunk names an id, so the
    request id stands for the produce id."""
    if not call.labeler.implicit:
        return {}
    rid = call.info.request_id
    return {LABEL_HEADER: call.labeler.metadata(rid, rid).decode()}


def _refusal(call: _Call, note: dict[str, Any]) -> Response:
    """The canned reply to a refused request, labelled like any generated answer."""
    chat, policy = call.chat, call.route.policy
    if chat.stream:
        message = policy.spec.refusal.message
        if call.explicit is not None:
            message = labeled(message, call.explicit)
        events = refusal_stream(chat, policy, note, message)
        return Response(b"".join(events), media_type="text/event-stream", headers=_stream_label(call))
    completion = refusal_completion(chat, policy, note)
    body, label = labeled_body(call.labeler, call.explicit, completion, None, call.info.request_id)
    headers = [(b"content-type", b"application/json")]
    if label is not None:
        headers.append((_LABEL_HEADER, label))
    return RawResponse(body, headers)


def _count_cut(state: AppState, decision: Decision, mode: str) -> None:
    for risk in decision.risks():
        state.metrics.stream_cuts.labels(risk["code"], mode).inc()


def _error_event(exc: GatewayError) -> bytes:
    return b"data: " + orjson.dumps(exc.body()) + b"\n\n"
