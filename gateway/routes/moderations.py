"""POST /v1/moderations: the OpenAI moderation API, answered by the active policy."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.app import AppState
from gateway.errors import InvalidRequest
from gateway.incidents import new_id
from gateway.openai_chat import parse_json_object
from gateway.policy import severity
from gateway.responses import json_response
from gateway.screening import Segment, screen


def _inputs(payload: dict[str, Any]) -> list[str]:
    value = payload.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        texts = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                texts.append(item)
            elif isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
                texts.append(item["text"])
            elif isinstance(item, dict) and item.get("type") == "image_url":
                continue  # images are not screened by the text tier
            else:
                raise InvalidRequest(f"input.{i}: expected a string or a text part", param=f"input.{i}")
        return texts
    raise InvalidRequest("input: expected a string or a non-empty list of strings", param="input")


async def moderations(request: Request) -> Response:
    state: AppState = request.app.state.modgate
    payload = parse_json_object(await request.body())
    texts = _inputs(payload)
    model = payload.get("model") if isinstance(payload.get("model"), str) else None
    policy, route = state.default_policy, None
    if state.router is not None:
        caller = state.router.authenticate(
            request.headers.get("authorization"), request.headers.get("x-api-key")
        )
        route = state.router.find(request.url.path, model, caller)
        policy = route.policy if route is not None else state.router.default_policy
    segments = [Segment(t, "user") for t in texts]
    decision = await screen(policy, segments, "input", state.metrics, route=route.name if route else None)
    results = []
    for i, scores in enumerate(decision.scores):
        hits = [h for h in decision.hits if h.segment == i]
        # A category is flagged when the policy would act on it, so `flagged` means what the
        # gateway itself would do with this text as input; raw scores are all in category_scores.
        categories = {
            code: policy.action_for(code, score, "input") != "allow" for code, score in scores.items()
        }
        action = max((h.action for h in hits), key=severity, default="allow")
        results.append(
            {
                "flagged": action != "allow",
                "categories": categories,
                "category_scores": {code: round(score, 6) for code, score in scores.items()},
                "modgate": {
                    "action": action,
                    "risks": [
                        {
                            "code": h.code,
                            "score": round(h.score, 6),
                            "classifier": h.classifier,
                            "action": h.action,
                        }
                        for h in hits
                    ],
                },
            }
        )
    return json_response(
        {"id": new_id("modr"), "model": f"modgate/{policy.name}@{policy.version}", "results": results}
    )


#: Served by HotPathMiddleware (see gateway/middleware.py), not by the router.
hot = {("POST", "/v1/moderations"): moderations}
