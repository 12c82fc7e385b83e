"""The Anthropic Messages dialect: request → segments, decisions → Messages and errors.

Only the fields the gateway reads are validated; every other field, known or not, is sent
upstream untouched (APIs grow fields faster than gateways). Content blocks are screened by
type: text wherever a block carries it, tool results, tool-call inputs (as JSON text) and
thinking in the assistant's history; images, documents and redacted thinking are not text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.responses import Response

from gateway.duties import ExplicitLabel
from gateway.errors import GatewayError, UpstreamStatus
from gateway.incidents import new_id
from gateway.labels import labeled
from gateway.openai_chat import redact_payload, validate_body
from gateway.policy import Policy
from gateway.responses import json_response
from gateway.screening import Decision, Segment

__all__ = [
    "MessagesRequest",
    "apply_output",
    "error_body",
    "error_response",
    "input_segments",
    "label_message",
    "output_segments",
    "redact_request",
    "refusal_message",
    "validate_messages",
]

#: Anthropic's error type per HTTP status; 502 and 504 (the gateway's upstream failures) are
#: ``api_error`` with their own status, as are other 5xx.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_KNOWN_TYPES = frozenset(ERROR_TYPES.values())
#: Blocks whose ``content`` holds text blocks the client supplies (a tool's output, a search
#: result handed to the model): screened on the ``tool`` channel.
_NESTED = frozenset({"tool_result", "mcp_tool_result", "search_result"})
#: Tool calls, whose ``input`` is screened as JSON text (a server tool's query is the model's
#: words too).
_TOOL_CALLS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Block(_Open):
    type: StrictStr
    text: StrictStr | None = None
    thinking: StrictStr | None = None
    #: A tool result's content: a string or blocks (server tools' results may hold an object).
    content: StrictStr | list[_Block] | dict[str, Any] | None = None
    #: A tool call's arguments (any JSON; the API wants an object).
    input: Any = None


class _Message(_Open):
    role: StrictStr
    content: StrictStr | list[_Block]


class _Metadata(_Open):
    user_id: StrictStr | None = None


class MessagesRequest(_Open):
    model: StrictStr = Field(..., min_length=1)
    messages: list[_Message] = Field(..., min_length=1)
    system: StrictStr | list[_Block] | None = None
    # Strict: "yes" must not become True on the way upstream.
    stream: StrictBool | None = False
    metadata: _Metadata | None = None

    @property
    def user(self) -> str | None:
        """The end user, for enforcement: ``metadata.user_id``."""
        return self.metadata.user_id if self.metadata is not None else None

    def output_format(self) -> Any:
        """The structured-output format asked for, if any (an answer that must be JSON gets no
        explicit label): ``output_format`` or ``output_config.format``."""
        extra = self.model_extra or {}
        config = extra.get("output_config")
        return extra.get("output_format") or (config.get("format") if isinstance(config, dict) else None)


def validate_messages(payload: dict[str, Any]) -> MessagesRequest:
    return validate_body(MessagesRequest, payload)


def _block_segments(block: _Block, channel: str, where: tuple[str | int, ...]) -> list[Segment]:
    if block.type in ("image", "redacted_thinking"):
        return []
    if block.type == "document":
        return _document_segments(block, channel, where)
    if block.type in _TOOL_CALLS:
        if block.input is None:
            return []
        return [Segment(json.dumps(block.input, ensure_ascii=False), "assistant", (*where, "input"))]
    if block.type in _NESTED:
        if isinstance(block.content, str):
            return [Segment(block.content, "tool", (*where, "content"))] if block.content else []
        out = []
        for k, part in enumerate(block.content if isinstance(block.content, list) else ()):
            out.extend(_block_segments(part, "tool", (*where, "content", k)))
        return out
    out = [Segment(block.text, channel, (*where, "text"))] if block.text else []
    if block.type == "thinking" and block.thinking:
        out.append(Segment(block.thinking, "assistant", (*where, "thinking")))
    return out


def _document_segments(block: _Block, channel: str, where: tuple[str | int, ...]) -> list[Segment]:
    """A plain-text document is text the client sends like any other (a PDF or an image is
    not screened by the text tier)."""
    source = (block.model_extra or {}).get("source")
    if isinstance(source, dict) and source.get("type") == "text":
        data = source.get("data")
        if isinstance(data, str) and data:
            return [Segment(data, channel, (*where, "source", "data"))]
    return []


def input_segments(request: MessagesRequest) -> list[Segment]:
    """Every text the client sends: the system prompt, each message's text, tool results, and
    the assistant's history (its text, thinking and tool-call inputs)."""
    segments: list[Segment] = []
    if isinstance(request.system, str):
        if request.system:
            segments.append(Segment(request.system, "system", ("system",)))
    else:
        for j, block in enumerate(request.system or ()):
            segments.extend(_block_segments(block, "system", ("system", j)))
    for i, message in enumerate(request.messages):
        channel = "assistant" if message.role == "assistant" else "user"
        if isinstance(message.content, str):
            if message.content:
                segments.append(Segment(message.content, channel, ("messages", i, "content")))
            continue
        for j, block in enumerate(message.content):
            segments.extend(_block_segments(block, channel, ("messages", i, "content", j)))
    return segments


def output_segments(message: dict[str, Any]) -> list[Segment]:
    """A Message's generated texts: text, thinking (``reasoning``) and tool-call inputs."""
    segments = []
    for k, block in enumerate(message.get("content") or ()):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in _TOOL_CALLS and "input" in block:
            text = json.dumps(block["input"], ensure_ascii=False)
            segments.append(Segment(text, "tool_arguments", ("content", k, "input")))
        elif kind == "thinking" and isinstance(block.get("thinking"), str) and block["thinking"]:
            segments.append(Segment(block["thinking"], "reasoning", ("content", k, "thinking")))
        elif isinstance(block.get("text"), str) and block["text"]:
            segments.append(Segment(block["text"], "content", ("content", k, "text")))
    return segments


def redact_request(
    payload: dict[str, Any], decision: Decision, segments: Sequence[Segment], mask: str
) -> None:
    """Mask every redact hit's spans in place; a tool call's input goes back as an object."""
    redact_payload(payload, decision, segments, mask)
    masked = {h.segment for h in decision.hits if h.action == "redact"}
    _restore_inputs(payload, [segments[i] for i in sorted(masked)])


def _restore_inputs(root: dict[str, Any], masked: Sequence[Segment]) -> None:
    """Masked tool-call inputs were written back as JSON text: parse them back into objects."""
    for segment in masked:
        if segment.where[-1] != "input":
            continue
        node: Any = root
        for step in segment.where[:-1]:
            node = node[step]
        value = node["input"]
        if isinstance(value, str):
            try:
                node["input"] = json.loads(value)
            except ValueError:
                # The mask cut through the JSON's structure: an empty input loses the call's
                # arguments, not its place in the conversation (the API wants an object).
                node["input"] = {}


def apply_output(
    message: dict[str, Any],
    decision: Decision,
    segments: Sequence[Segment],
    policy: Policy,
    annotation: dict[str, Any],
) -> None:
    """Replace a stopped Message's content with the canned reply, or mask redacted spans, in
    place; every non-allow decision adds the ``modgate`` note."""
    if decision.stops:
        message["content"] = [{"type": "text", "text": policy.spec.refusal.message}]
        message["stop_reason"] = "refusal"
        message["stop_sequence"] = None
    elif decision.action == "redact":
        redact_request(message, decision, segments, policy.spec.refusal.redaction)
    if decision.action != "allow":
        message["modgate"] = annotation


def refusal_message(request: MessagesRequest, policy: Policy, annotation: dict[str, Any]) -> dict[str, Any]:
    """A complete Message carrying the policy's canned reply to a refused request."""
    return {
        "id": new_id("msg_modgate"),
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": [{"type": "text", "text": policy.spec.refusal.message}],
        "stop_reason": "refusal",
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
        "modgate": annotation,
    }


def label_message(message: dict[str, Any], label: ExplicitLabel) -> bool:
    """Add the explicit label to a Message's text, in place: into the first text block (start)
    or the last (end); never into thinking or tool calls. True when anything changed."""
    texts = [
        b
        for b in message.get("content") or ()
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str) and b["text"]
    ]
    if not texts:
        return False
    block = texts[0] if label.position == "start" else texts[-1]
    block["text"] = labeled(block["text"], label)
    return True


def error_body(exc: GatewayError) -> dict[str, Any]:
    """``exc`` in Anthropic's error shape. An upstream's own Anthropic error body is passed on
    as it came; the gateway's errors carry ``modgate`` (the incident) and their code."""
    kept = exc.upstream_body if isinstance(exc, UpstreamStatus) else None
    if isinstance(kept, dict) and kept.get("type") == "error" and isinstance(kept.get("error"), dict):
        return kept
    if isinstance(exc, UpstreamStatus) and exc.type in _KNOWN_TYPES:
        kind = exc.type
    else:
        kind = ERROR_TYPES.get(exc.status, "api_error" if exc.status >= 500 else "invalid_request_error")
    err: dict[str, Any] = {"type": kind, "message": exc.message}
    if exc.code is not None and not isinstance(exc, UpstreamStatus):
        err["details"] = {"error_code": exc.code}
    if exc.modgate:
        err["modgate"] = exc.modgate
    return {"type": "error", "error": err}


def error_response(exc: GatewayError) -> Response:
    """The one rendering of a :class:`GatewayError` on ``/v1/messages``."""
    return json_response(error_body(exc), exc.status, exc.headers or None)
