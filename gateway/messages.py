"""Anthropic Messages through the gateway: screen input, forward, screen the whole Message.

Every error raised while handling ``/v1/messages`` is answered in Anthropic's error shape,
so the official ``anthropic`` SDK raises its own exception classes. Streams go through the
stream guard in Anthropic's event shape (``gateway.stream.anthropic``).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.anthropic_messages import (
    MessagesRequest,
    apply_output,
    error_body,
    error_response,
    input_segments,
    label_message,
    output_segments,
    redact_request,
    refusal_message,
    validate_messages,
)
from gateway.errors import GatewayError
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
from gateway.stream.anthropic import AnthropicShape, message_events
from gateway.stream.sse import event_bytes

__all__ = ["ROUTE", "handle_messages"]

log = logging.getLogger(__name__)

ROUTE = "/v1/messages"

_Call = Call[MessagesRequest]


async def handle_messages(request: Request) -> Response:
    """``POST /v1/messages``; never raises: errors are rendered here, Anthropic-shaped."""
    try:
        arrival = await arrive(request)
        messages = validate_messages(arrival.payload)
        call = await open_call(
            request, arrival, messages, messages.model, messages.user, messages.output_format()
        )
        return await with_notice(call, _screened(request, call, arrival.payload, arrival.body))
    except GatewayError as exc:
        return error_response(exc)
    except Exception:
        log.exception("unhandled error request_id=%s", request.scope.get("state", {}).get("request_id"))
        return error_response(GatewayError("internal gateway error", code="internal_error"))


async def _screened(request: Request, call: _Call, payload: dict[str, Any], body: bytes) -> Response:
    segments = input_segments(call.request)
    # A tool call's input is screened as JSON text; masked, it must go back as an object.
    body, refusal = await screen_input(call, segments, payload, body, redact=redact_request)
    if call.request.stream:
        return await _stream(call, body, refusal)
    if refusal is not None:
        return _refusal(call, refusal)
    return await race_disconnect(request, _complete(call, body))


async def _stream(call: _Call, body: bytes, refusal: dict[str, Any] | None) -> Response:
    """``stream: true``, after input screening: the guarded upstream stream, or (``refusal``
    set) the canned reply as a stream."""
    if refusal is not None:
        message = refusal_message(call.request, call.route.policy, refusal)
        if call.explicit is not None:
            label_message(message, call.explicit)
        events = message_events(message)
        return Response(events, media_type="text/event-stream", headers=call.stream_label())
    return await open_stream(call, ROUTE, body, AnthropicShape(call.explicit), _error_event)


def _error_event(exc: GatewayError) -> bytes:
    """An error that ends a stream midway, as Anthropic sends one (``event: error``)."""
    return event_bytes(error_body(exc))


async def _complete(call: _Call, body: bytes) -> Response:
    return await answer_whole(call, ROUTE, body, output_segments, apply_output, label_message)


def _refusal(call: _Call, note: dict[str, Any]) -> Response:
    """The canned reply to a refused request, labelled like any generated answer."""
    return labeled_json(call, refusal_message(call.request, call.route.policy, note), label_message)
