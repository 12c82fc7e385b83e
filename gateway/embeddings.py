"""OpenAI embeddings through the gateway: the input is screened, the answer (vectors) is not.

``block`` and ``refuse`` both answer 400 ``content_filter`` with the incident id: an embedding
has no text answer to carry a canned reply. ``redact`` forwards the masked input; ``flag``
forwards it unchanged. Inputs given as token ids are rejected or pass unscreened, as the
policy's ``token_ids`` says (as in legacy completions).
The upstream's answer passes as it came (status, headers, body) and carries no AIGC label:
vectors are not content shown to a reader.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import ContentBlocked
from gateway.exchange import Call, arrive, open_call, screen_input, with_notice
from gateway.openai_chat import validate_body
from gateway.openai_completions import TextOrTokens, check_token_ids, text_segments
from gateway.responses import RawResponse, race_disconnect
from gateway.upstream import open_upstream, raw_response_headers

__all__ = ["ROUTE", "EmbeddingsRequest", "handle_embeddings"]

ROUTE = "/v1/embeddings"


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(..., min_length=1)
    input: TextOrTokens
    user: str | None = None


_Call = Call[EmbeddingsRequest]


async def handle_embeddings(request: Request) -> Response:
    arrival = await arrive(request)
    embeddings = validate_body(EmbeddingsRequest, arrival.payload)
    call = await open_call(request, arrival, embeddings, embeddings.model, embeddings.user, None)
    return await with_notice(call, _screened(request, call, arrival.payload, arrival.body))


async def _screened(request: Request, call: _Call, payload: dict[str, Any], body: bytes) -> Response:
    check_token_ids(call.request.input, "input", call.route.policy)
    segments = text_segments(call.request.input, "input")
    body, refusal = await screen_input(call, segments, payload, body)
    if refusal is not None:
        raise ContentBlocked("the request was refused by the content policy", modgate=refusal)
    return await race_disconnect(request, _forward(call, body))


async def _forward(call: _Call, body: bytes) -> Response:
    """The upstream's answer, unparsed: vectors are neither screened nor worth decoding."""
    metrics = call.state.metrics
    sent = time.perf_counter()
    response, _ = await open_upstream(
        call.route.upstream, "POST", ROUTE, call.upstream_headers, body, metrics
    )
    try:
        raw = await response.aread()
    finally:
        await response.aclose()
    metrics.child(metrics.added_seconds, ROUTE).observe(max(0.0, sent - call.t0))
    return RawResponse(raw, raw_response_headers(response), response.status_code)
