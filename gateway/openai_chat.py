"""The OpenAI chat-completions dialect: request → segments, decisions → responses.

Only the fields the gateway reads are validated; every other field, known or not, is sent
upstream untouched (APIs grow fields faster than gateways).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from gateway.errors import GatewayError, InvalidRequest
from gateway.incidents import new_id
from gateway.jsonpath import set_path
from gateway.policy import Policy
from gateway.screening import Decision, Segment, redact

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "ChatRequest",
    "apply_output",
    "error_event",
    "input_segments",
    "output_segments",
    "parse_json_object",
    "redact_payload",
    "refusal_completion",
    "refusal_stream",
    "validate_body",
]

_ROLE_CHANNEL = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Function(_Open):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(_Open):
    function: _Function | None = None


class _Part(_Open):
    type: str
    text: str | None = None


class _Message(_Open):
    role: str
    content: str | list[_Part] | None = None
    tool_calls: list[_ToolCall] | None = None


class ChatRequest(_Open):
    model: str = Field(..., min_length=1)
    messages: list[_Message] = Field(..., min_length=1)
    # Strict: "yes" must not become True, nor "2" become 2, on the way upstream.
    stream: StrictBool | None = False
    n: StrictInt | None = Field(None, ge=1, le=128)
    user: str | None = None


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Bytes → JSON object, with a 400 that says what is wrong (never what the text was)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:  # only now, off the hot path: tell bad encoding from bad syntax
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise InvalidRequest(f"request body is not valid UTF-8 (byte {bad.start})") from exc
        raise InvalidRequest(f"request body is not valid JSON: {exc.msg} at char {exc.pos}") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("request body must be a JSON object")
    return value


def validate_body(model: type[M], payload: dict[str, Any]) -> M:
    """``payload`` as ``model``; a 400 naming the first field that is wrong."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise InvalidRequest(f"{param}: {err['msg']}", param=param, code="invalid_value") from exc


def validate_chat(payload: dict[str, Any]) -> ChatRequest:
    return validate_body(ChatRequest, payload)


def input_segments(chat: ChatRequest) -> list[Segment]:
    """Every text the client sends: system, user, tool results, assistant history, text parts."""
    segments = []
    for i, message in enumerate(chat.messages):
        channel = _ROLE_CHANNEL.get(message.role, "tool_result")
        if isinstance(message.content, str):
            segments.append(Segment(message.content, channel, ("messages", i, "content")))
        elif message.content:
            for j, part in enumerate(message.content):
                if part.text:
                    segments.append(Segment(part.text, channel, ("messages", i, "content", j, "text")))
        for k, call in enumerate(message.tool_calls or ()):
            if call.function is not None and call.function.arguments:
                where = ("messages", i, "tool_calls", k, "function", "arguments")
                segments.append(Segment(call.function.arguments, "tool_arguments", where))
    return segments


def output_segments(response: dict[str, Any]) -> list[Segment]:
    segments = []
    for c, choice in enumerate(response.get("choices") or ()):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        for name in ("content", "reasoning_content", "reasoning", "refusal"):
            if isinstance(text := message.get(name), str) and text:
                segments.append(Segment(text, name, ("choices", c, "message", name)))
        for k, call in enumerate(message.get("tool_calls") or ()):
            args = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
            if isinstance(args, str) and args:
                where = ("choices", c, "message", "tool_calls", k, "function", "arguments")
                segments.append(Segment(args, "tool_arguments", where))
    return segments


def redact_payload(
    payload: dict[str, Any], decision: Decision, segments: Sequence[Segment], mask: str
) -> None:
    """Mask every redact hit's spans in place (the payload is then re-serialised)."""
    by_segment: dict[int, list[Any]] = {}
    for hit in decision.hits:
        if hit.action == "redact":
            by_segment.setdefault(hit.segment, []).extend(hit.spans)
    for index, spans in by_segment.items():
        segment = segments[index]
        set_path(payload, segment.where, redact(segment.text, spans, mask))


def _replace_message(choice: dict[str, Any], text: str) -> None:
    choice["message"] = {"role": "assistant", "content": text}


def apply_output(
    response: dict[str, Any],
    decision: Decision,
    segments: Sequence[Segment],
    policy: Policy,
    annotation: dict[str, Any],
    replace: Callable[[dict[str, Any], str], None] = _replace_message,
) -> None:
    """Replace stopped choices with the canned reply and mask redacted spans, in place.
    ``replace`` puts the reply into a choice (a chat message by default; legacy completions
    put it in ``text``). A changed choice loses its ``logprobs``: they spell the tokens of the
    text it no longer has, the stopped or masked text included."""
    stopped = {segments[h.segment].where[1] for h in decision.hits if h.stops}
    changed = {segments[h.segment].where[1] for h in decision.hits if h.stops or h.action == "redact"}
    redact_payload(response, decision, segments, policy.spec.refusal.redaction)
    for c in sorted(stopped):
        choice = response["choices"][c]
        replace(choice, policy.spec.refusal.message)
        choice["finish_reason"] = "content_filter"
    for c in changed:
        response["choices"][c]["logprobs"] = None
    if decision.action != "allow":
        response["modgate"] = annotation


def error_event(exc: GatewayError) -> bytes:
    """An error that ends a stream midway, as OpenAI sends one (the SDKs raise ``APIError``)."""
    return b"data: " + orjson.dumps(exc.body()) + b"\n\n"


def refusal_completion(chat: ChatRequest, policy: Policy, annotation: dict[str, Any]) -> dict[str, Any]:
    """A complete ``chat.completion`` carrying the policy's canned reply."""
    text = policy.spec.refusal.message
    choices = [  # a message per choice: the labels rewrite each in place
        {
            "index": i,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "content_filter",
            "logprobs": None,
        }
        for i in range(chat.n or 1)
    ]
    return {
        "id": new_id("chatcmpl-modgate"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.model,
        "choices": choices,
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "modgate": annotation,
    }


def refusal_stream(
    chat: ChatRequest, policy: Policy, annotation: dict[str, Any], message: str | None = None
) -> list[bytes]:
    """The canned reply (or ``message``, e.g. the reply with its label) as SSE events, ending
    in ``[DONE]``."""
    base = {"id": new_id("chatcmpl-modgate"), "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = chat.model
    events = []
    for i in range(chat.n or 1):
        delta = {"role": "assistant", "content": policy.spec.refusal.message if message is None else message}
        events.append({**base, "choices": [{"index": i, "delta": delta, "finish_reason": None}]})
        events.append({**base, "choices": [{"index": i, "delta": {}, "finish_reason": "content_filter"}]})
    events[-1]["modgate"] = annotation
    options = chat.model_extra.get("stream_options") if chat.model_extra else None
    if isinstance(options, dict) and options.get("include_usage"):
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        events.append({**base, "choices": [], "usage": usage})
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
