"""OpenAI legacy completions through the gateway: screen the prompt and suffix, forward, screen
each choice's text (whole, or streamed through the stream guard in ``text_completion`` chunks).
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
from gateway.labels import labeled
from gateway.openai_chat import error_event, validate_body
from gateway.openai_completions import (
    CompletionRequest,
    apply_output,
    check_token_ids,
    choice_count,
    input_segments,
    label_texts,
    output_segments,
    refusal_completion,
    refusal_stream,
)
from gateway.responses import race_disconnect
from gateway.stream.completions import CompletionsShape
from gateway.stream.labeling import StreamLabel

__all__ = ["ROUTE", "handle_completions"]

ROUTE = "/v1/completions"

_Call = Call[CompletionRequest]


async def handle_completions(request: Request) -> Response:
    arrival = await arrive(request)
    completion = validate_body(CompletionRequest, arrival.payload)
    # No response_format here: the explicit label, when the policy asks for one, always applies.
    call = await open_call(request, arrival, completion, completion.model, completion.user, None)
    return await with_notice(call, _screened(request, call, arrival.payload, arrival.body))


async def _screened(request: Request, call: _Call, payload: dict[str, Any], body: bytes) -> Response:
    check_token_ids(call.request.prompt, "prompt", call.route.policy)
    body, refusal = await screen_input(call, input_segments(call.request), payload, body)
    if refusal is not None:
        return _refusal(call, refusal)
    if call.request.stream:
        return await _stream(call, body)
    return await race_disconnect(request, _complete(call, body))


async def _complete(call: _Call, body: bytes) -> Response:
    return await answer_whole(call, ROUTE, body, output_segments, apply_output, label_texts)


async def _stream(call: _Call, body: bytes) -> Response:
    shape = CompletionsShape()
    label = StreamLabel(call.explicit, write=shape.write) if call.explicit is not None else None
    count = choice_count(call.request)
    return await open_stream(call, ROUTE, body, shape, error_event, label=label, choices=count)


def _refusal(call: _Call, note: dict[str, Any]) -> Response:
    """The canned reply to a refused request, labelled like any generated answer."""
    completion, policy = call.request, call.route.policy
    if completion.stream:
        message = policy.spec.refusal.message
        if call.explicit is not None:
            message = labeled(message, call.explicit)
        events = refusal_stream(completion, note, message)
        return Response(events, media_type="text/event-stream", headers=call.stream_label())
    return labeled_json(call, refusal_completion(completion, policy, note), label_texts)
