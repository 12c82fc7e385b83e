"""One screened exchange, whatever the API dialect: who calls, which route, the user's standing,
input screening, the upstream answer, records and strikes.

The dialect handlers (``gateway.chat``, ``gateway.messages``) read their own request shape and
build their own answers; everything here is the same for every dialect.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.app import AppState
from gateway.duties import EnforcementSettings, ExplicitLabel
from gateway.enforcement import Standing, identify
from gateway.errors import ContentBlocked, GatewayError, UpstreamUnavailable
from gateway.labels import LABEL_HEADER, Labeler, label_completion, labeled_body, labeler_for
from gateway.openai_chat import parse_json_object, redact_payload
from gateway.recorder import RequestInfo
from gateway.responses import GuardedStreamResponse, RawResponse, read_body
from gateway.routing import Caller, Route
from gateway.screening import Decision, Segment, screen
from gateway.stream.guard import StreamGuard
from gateway.stream.labeling import StreamLabel
from gateway.stream.shape import StreamShape
from gateway.upstream import (
    UpstreamResponse,
    forward_headers,
    open_upstream,
    raw_response_headers,
    response_headers,
)

__all__ = [
    "LABEL_HEADER_RAW",
    "Arrival",
    "Call",
    "UpstreamAnswer",
    "answer_whole",
    "arrive",
    "complete",
    "guard_stream",
    "labeled_json",
    "open_call",
    "open_stream",
    "screen_input",
    "screen_output",
    "send_answer",
    "with_notice",
]

R = TypeVar("R")

LABEL_HEADER_RAW = LABEL_HEADER.encode()
#: Upstream headers the gateway sets itself (an upstream's own AIGC label is replaced).
_REPLACED = frozenset({b"content-type", LABEL_HEADER_RAW})


@dataclass
class Arrival:
    """A request as it arrived: its headers, the authenticated caller and the JSON body."""

    state: AppState
    headers: dict[str, str]
    caller: Caller
    body: bytes
    payload: dict[str, Any]


async def arrive(request: Request) -> Arrival:
    """Authenticate the caller, then read the body as a JSON object (400 otherwise)."""
    state: AppState = request.app.state.modgate
    assert state.router is not None
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
    caller = state.router.authenticate(headers.get("authorization"), headers.get("x-api-key"))
    body = await read_body(request.receive)
    return Arrival(state, headers, caller, body, parse_json_object(body))


@dataclass
class Call(Generic[R]):
    """Everything one screened call needs, whatever the dialect; ``request`` is the dialect's
    validated request model."""

    state: AppState
    route: Route
    request: R
    info: RequestInfo
    t0: float
    labeler: Labeler
    #: The explicit label for this request's answer; None when off or the answer must be JSON.
    explicit: ExplicitLabel | None
    #: The headers to send upstream (the upstream's credentials, the request id).
    upstream_headers: dict[str, str]
    enforcement: EnforcementSettings | None = None
    standing: Standing = field(default_factory=Standing)

    async def record(
        self, decision: Decision, segments: list[Segment], exposed: int = 0, offsets: Any = None
    ) -> str:
        """Record the incident, then the strike, both before the response carrying it is sent
        (a stream's cut lands here too), so the user's very next request sees them."""
        incident_id = await self.state.recorder.record(decision, segments, self.info, exposed, offsets)
        user = self.info.user
        if self.enforcement is not None and user is not None and decision.stops:
            after = await self.state.enforcer.strike(user, self.enforcement, incident_id)
            self.standing = after or self.standing
        return incident_id

    def notice(self) -> dict[str, str]:
        return self.standing.notice(self.enforcement) if self.enforcement is not None else {}

    def stream_label(self) -> dict[str, str]:
        """The implicit label of a stream: its headers leave before any event names an id, so
        the request id stands for the produce id."""
        if not self.labeler.implicit:
            return {}
        rid = self.info.request_id
        return {LABEL_HEADER: self.labeler.metadata(rid, rid).decode()}


async def open_call(
    request: Request,
    arrival: Arrival,
    validated: R,
    model: str,
    body_user: str | None,
    response_format: Any,
) -> Call[R]:
    """Route the call, name its user (body, ``X-Modgate-User``, the key's user) and check the
    user's standing first: a suspended or restricted user is answered before any screening."""
    state, caller = arrival.state, arrival.caller
    assert state.router is not None
    route = state.router.resolve(request.scope["path"], model, caller)
    rid = request.scope["state"]["request_id"]
    labeler = labeler_for(state.config.provider, route.policy)
    upstream_headers = forward_headers(arrival.headers, route.upstream, caller, rid)
    upstream_headers["content-type"] = "application/json"
    user = await state.pseudonym(identify(body_user, arrival.headers.get("x-modgate-user"), caller.user))
    call = Call(
        state,
        route,
        validated,
        RequestInfo(rid, caller.tenant, route.name, model, user),
        request.scope["state"]["t0"],
        labeler,
        labeler.explicit(response_format),
        upstream_headers,
        route.policy.spec.enforcement,
    )
    if call.enforcement is not None and user is not None:
        call.standing = await state.enforcer.check(user, call.enforcement)
    return call


async def with_notice(call: Call[Any], work: Awaitable[Response]) -> Response:
    """``work``'s response, or its error, with the user's enforcement notice headers."""
    try:
        response = await work
    except GatewayError as exc:
        exc.headers.update(call.notice())
        raise
    response.headers.update(call.notice())
    return response


Redactor = Callable[[dict[str, Any], Decision, Sequence[Segment], str], None]


async def screen_input(
    call: Call[Any],
    segments: list[Segment],
    payload: dict[str, Any],
    body: bytes,
    redact: Redactor = redact_payload,
) -> tuple[bytes, dict[str, Any] | None]:
    """Screen the request's texts: the body to forward (re-serialised when ``redact`` masked
    it), and the ``modgate`` note when the request is refused. A blocked request raises
    :class:`ContentBlocked`; the upstream is then never called."""
    route = call.route
    decision = await screen(route.policy, segments, "input", call.state.metrics, route=route.name)
    if decision.action == "allow":
        return body, None
    incident_id = await call.record(decision, segments)
    note = decision.note(incident_id)
    if decision.action == "block":
        raise ContentBlocked("the request was blocked by the content policy", modgate=note)
    if decision.action == "refuse":
        return body, note
    if decision.action == "redact":
        redact(payload, decision, segments, route.policy.spec.refusal.redaction)
        body = orjson.dumps(payload)
    return body, None


@dataclass
class UpstreamAnswer:
    """A complete upstream answer: the parsed object, its bytes, the headers to pass on and the
    seconds the upstream took."""

    result: dict[str, Any]
    raw: bytes
    headers: list[tuple[bytes, bytes]]
    seconds: float


async def complete(call: Call[Any], path: str, body: bytes) -> UpstreamAnswer:
    """POST ``body`` upstream and read the whole answer. An error status keeps its status and
    body (:class:`UpstreamStatus`); a body that is not a JSON object is a 502."""
    sent = time.perf_counter()
    upstream = call.route.upstream
    response, _ = await open_upstream(upstream, "POST", path, call.upstream_headers, body, call.state.metrics)
    return await read_answer(response, sent)


async def read_answer(response: UpstreamResponse, sent: float) -> UpstreamAnswer:
    """Read an open upstream response whole, as a JSON object (else a 502)."""
    try:
        raw = await response.aread()
    finally:
        await response.aclose()
    seconds = time.perf_counter() - sent
    try:
        result = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamUnavailable("the upstream answered with a body that is not JSON") from exc
    if not isinstance(result, dict):
        raise UpstreamUnavailable("the upstream answered with a body that is not a JSON object")
    headers = [(k, v) for k, v in raw_response_headers(response) if k not in _REPLACED]
    headers.append((b"content-type", b"application/json"))
    return UpstreamAnswer(result, raw, headers, seconds)


async def screen_output(
    call: Call[Any],
    answer: UpstreamAnswer,
    segments: list[Segment],
    apply: Callable[[Decision, dict[str, Any]], None],
) -> Decision:
    """Screen the answer's texts; on anything but allow, record the incident and ``apply`` the
    decision to ``answer.result`` with its ``modgate`` note."""
    route = call.route
    decision = await screen(route.policy, segments, "output", call.state.metrics, route=route.name)
    if decision.action != "allow":
        incident_id = await call.record(decision, segments)
        apply(decision, decision.note(incident_id))
    return decision


def send_answer(
    call: Call[Any], route_path: str, answer: UpstreamAnswer, body: bytes, label: bytes | None
) -> Response:
    """The screened, labelled answer; the time the gateway added is observed here."""
    headers = answer.headers
    if label is not None:
        headers.append((LABEL_HEADER_RAW, label))
    metrics = call.state.metrics
    added = time.perf_counter() - call.t0 - answer.seconds
    metrics.child(metrics.added_seconds, route_path).observe(max(0.0, added))
    return RawResponse(body, headers)


Segmenter = Callable[[dict[str, Any]], list[Segment]]
Applier = Callable[[dict[str, Any], Decision, Sequence[Segment], Any, dict[str, Any]], None]
LabelText = Callable[[dict[str, Any], ExplicitLabel], bool]


async def answer_whole(
    call: Call[Any],
    path: str,
    body: bytes,
    segments_of: Segmenter,
    apply_output: Applier,
    label_text: LabelText = label_completion,
) -> Response:
    """A plain (not streamed) exchange after input screening, in a dialect's own shapes: its
    answer's texts (``segments_of``), how a decision rewrites the answer (``apply_output``) and
    where the explicit label goes (``label_text``)."""
    answer = await complete(call, path, body)
    result, policy = answer.result, call.route.policy
    segments = segments_of(result)

    def apply(decision: Decision, note: dict[str, Any]) -> None:
        apply_output(result, decision, segments, policy, note)

    decision = await screen_output(call, answer, segments, apply)
    unchanged = answer.raw if decision.action == "allow" else None
    raw, label = labeled_body(
        call.labeler, call.explicit, result, unchanged, call.info.request_id, label_text
    )
    return send_answer(call, path, answer, raw, label)


def labeled_json(
    call: Call[Any], answer: dict[str, Any], label_text: LabelText = label_completion
) -> Response:
    """An answer the gateway wrote itself (a canned refusal), labelled like a generated one."""
    body, label = labeled_body(call.labeler, call.explicit, answer, None, call.info.request_id, label_text)
    headers = [(b"content-type", b"application/json")]
    if label is not None:
        headers.append((LABEL_HEADER_RAW, label))
    return RawResponse(body, headers)


async def open_stream(
    call: Call[Any],
    path: str,
    body: bytes,
    shape: StreamShape,
    error_event: Callable[[GatewayError], bytes],
    *,
    label: StreamLabel | None = None,
    choices: int = 1,
) -> Response:
    """The upstream's stream through the stream guard, in the dialect ``shape`` reads and
    writes; ``error_event`` renders an error that ends the stream midway."""
    response, _ = await open_upstream(
        call.route.upstream, "POST", path, call.upstream_headers, body, call.state.metrics
    )
    ctype = response.headers.get("content-type", "")
    if not ctype.startswith("text/event-stream"):
        await response.aclose()
        raise UpstreamUnavailable(f"the upstream did not stream (content-type {ctype or 'missing'})")
    return guard_stream(call, response, shape, error_event, label=label, choices=choices)


def guard_stream(
    call: Call[Any],
    response: UpstreamResponse,
    shape: StreamShape,
    error_event: Callable[[GatewayError], bytes],
    *,
    label: StreamLabel | None = None,
    choices: int = 1,
) -> Response:
    """An open upstream stream through the stream guard."""
    state = call.state
    policy = call.route.policy
    mode = policy.spec.streaming.mode

    def count_cut(decision: Decision) -> None:
        for risk in decision.risks():
            state.metrics.stream_cuts.labels(risk["code"], mode).inc()

    guard = StreamGuard(
        policy,
        call.record,
        response.aclose,
        metrics=state.metrics,
        route=call.route.name,
        shape=shape,
        on_holdback=state.metrics.holdback_seconds.observe,
        on_cut=count_cut,
        label=label,
        choices=choices,
    )
    return GuardedStreamResponse(
        guard.run(response.aiter_bytes()),
        on_close=response.aclose,
        error_event=error_event,
        headers={**response_headers(response), **call.stream_label()},
    )
