"""Chat completions through the gateway: screen input, forward, screen output (whole or streamed)."""

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
from gateway.labels import labeled
from gateway.openai_chat import (
    ChatRequest,
    apply_output,
    error_event,
    input_segments,
    output_segments,
    refusal_completion,
    refusal_stream,
    validate_chat,
)
from gateway.responses import race_disconnect
from gateway.stream.labeling import StreamLabel
from gateway.stream.shape import OpenAIChatShape

__all__ = ["handle_chat"]

ROUTE = "/v1/chat/completions"

_Call = Call[ChatRequest]


async def handle_chat(request: Request) -> Response:
    arrival = await arrive(request)
    chat = validate_chat(arrival.payload)
    response_format = (chat.model_extra or {}).get("response_format")
    call = await open_call(request, arrival, chat, chat.model, chat.user, response_format)
    return await with_notice(call, _screened(request, call, arrival.payload, arrival.body))


async def _screened(request: Request, call: _Call, payload: dict[str, Any], body: bytes) -> Response:
    body, refusal = await screen_input(call, input_segments(call.request), payload, body)
    if refusal is not None:
        return _refusal(call, refusal)
    if call.request.stream:
        return await _stream(call, body)
    return await race_disconnect(request, _complete(call, body))


async def _complete(call: _Call, body: bytes) -> Response:
    return await answer_whole(call, ROUTE, body, output_segments, apply_output)


async def _stream(call: _Call, body: bytes) -> Response:
    label = StreamLabel(call.explicit) if call.explicit is not None else None
    return await open_stream(
        call, ROUTE, body, OpenAIChatShape(), error_event, label=label, choices=call.request.n or 1
    )


def _refusal(call: _Call, note: dict[str, Any]) -> Response:
    """The canned reply to a refused request, labelled like any generated answer."""
    chat, policy = call.request, call.route.policy
    if chat.stream:
        message = policy.spec.refusal.message
        if call.explicit is not None:
            message = labeled(message, call.explicit)
        events = refusal_stream(chat, policy, note, message)
        return Response(b"".join(events), media_type="text/event-stream", headers=call.stream_label())
    return labeled_json(call, refusal_completion(chat, policy, note))
