"""The OpenAI Responses API through the gateway (``POST /v1/responses``): screen the input,
forward, screen the whole Response or its stream (``gateway.stream.responses_api``).

Errors are OpenAI-shaped, as the API's own are, so they are rendered where every other
endpoint's are (the hot path).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.exchange import (
    Call,
    answer_whole,
    arrive,
    labeled_json,
    open_call,
    open_stream,
    screen_input,
    with_notice,
)
from gateway.responses import race_disconnect
from gateway.responses_api import (
    ResponsesRequest,
    apply_output,
    input_segments,
    label_response,
    output_segments,
    refusal_response,
    validate_responses,
)
from gateway.stream.responses_api import ResponsesShape, response_events

__all__ = ["ROUTE", "handle_responses"]

ROUTE = "/v1/responses"

_Call = Call[ResponsesRequest]


async def handle_responses(request: Request) -> Response:
    arrival = await arrive(request)
    req = validate_responses(arrival.payload)
    call = await open_call(request, arrival, req, req.model or "", req.end_user, req.output_format())
    return await with_notice(call, _screened(request, call, arrival.payload, arrival.body))


async def _screened(request: Request, call: _Call, payload: dict[str, Any], body: bytes) -> Response:
    body, refusal = await screen_input(call, input_segments(call.request), payload, body)
    if refusal is not None:
        return _refusal(call, refusal)
    if call.request.stream:
        # One shape per stream: it numbers the events, error events included.
        shape = ResponsesShape()
        return await open_stream(call, ROUTE, body, shape, shape.error_event)
    return await race_disconnect(request, _complete(call, body))


async def _complete(call: _Call, body: bytes) -> Response:
    return await answer_whole(call, ROUTE, body, output_segments, apply_output, label_response)


def _refusal(call: _Call, note: dict[str, Any]) -> Response:
    """The canned reply to a refused request, labelled like any generated answer (as a stream
    when one was asked for)."""
    response = refusal_response(call.request, call.route.policy, note)
    if call.request.stream:
        if call.explicit is not None:
            label_response(response, call.explicit)
        events = response_events(response)
        return Response(events, media_type="text/event-stream", headers=call.stream_label())
    return labeled_json(call, response, label_response)
