"""Any JSON API through the gateway, as its route's ``adapter`` describes it: screen the
request's texts, forward, then screen the whole answer or guard its stream (SSE or JSON lines,
told apart by the upstream's content type).

An answer that streams on a route whose adapter says nothing of streams is refused (502): the
gateway never passes text it cannot screen.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import ContentBlocked, GatewayError, NotFound, UpstreamUnavailable
from gateway.exchange import (
    Call,
    arrive,
    guard_stream,
    open_call,
    read_answer,
    screen_input,
    screen_output,
    send_answer,
    with_notice,
)
from gateway.generic_api import GenericAdapter, apply_output, input_segments, output_segments, refusal
from gateway.labels import labeled_body
from gateway.responses import json_response, race_disconnect
from gateway.routing import Route
from gateway.screening import Decision
from gateway.stream.generic import fill
from gateway.upstream import open_upstream

__all__ = ["handle_generic"]

_JSONL = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/jsonlines")


async def handle_generic(request: Request, route: Route) -> Response:
    adapter = route.config.adapter
    assert adapter is not None
    arrival = await arrive(request)
    payload = arrival.payload
    model = adapter.value(adapter.model, payload) or ""
    call = await open_call(request, arrival, adapter, model, adapter.value(adapter.user, payload), None)
    if call.route.config.adapter is not adapter:
        # The caller's key or the model led to another route: only the adapter that read the
        # request may answer it.
        raise NotFound(f"no route with this adapter serves {request.url.path} for this caller")
    call.explicit = None  # an arbitrary JSON answer has no place where a label text belongs
    return await with_notice(call, _screened(request, call, payload, arrival.body))


async def _screened(
    request: Request, call: Call[GenericAdapter], payload: dict[str, Any], body: bytes
) -> Response:
    adapter = call.request
    try:
        body, note = await screen_input(call, input_segments(adapter, payload), payload, body)
    except ContentBlocked as exc:
        if adapter.block is None:
            raise
        return json_response(
            {**fill(adapter.block, call.route.policy.spec.refusal.message), "modgate": exc.modgate}, 400
        )
    if note is not None:
        return json_response(refusal(adapter, call.route.policy, note), 200)
    return await race_disconnect(request, _forward(call, request, body))


async def _forward(call: Call[GenericAdapter], request: Request, body: bytes) -> Response:
    adapter = call.request
    sent = time.perf_counter()
    path, query = request.url.path, request.url.query
    response, _ = await open_upstream(
        call.route.upstream, "POST", path, call.upstream_headers, body, call.state.metrics, query
    )
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("text/event-stream", *_JSONL):
        if adapter.stream is None:
            await response.aclose()
            raise UpstreamUnavailable(
                "the upstream streamed, and this route's adapter has no stream settings"
            )
        shape = adapter.shape(jsonl=ctype != "text/event-stream")

        def error_event(exc: GatewayError) -> bytes:
            return shape.encode(exc.body())

        return guard_stream(call, response, shape, error_event)
    answer = await read_answer(response, sent)
    segments = output_segments(adapter, answer.result)
    policy = call.route.policy

    def apply(decision: Decision, note: dict[str, Any]) -> None:
        apply_output(answer.result, decision, segments, policy, note)

    decision = await screen_output(call, answer, segments, apply)
    unchanged = answer.raw if decision.action == "allow" else None
    raw, label = labeled_body(call.labeler, None, answer.result, unchanged, call.info.request_id)
    return send_answer(call, path, answer, raw, label)
