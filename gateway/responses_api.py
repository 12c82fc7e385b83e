"""The OpenAI Responses dialect (``POST /v1/responses``): request → segments, decisions → Response
objects.

Only the fields the gateway reads are validated; every other field, known or not, is sent
upstream untouched (APIs grow fields faster than gateways). Screened input: ``instructions``,
``input`` as text or as items (messages' text parts, tool results, and the assistant's history:
its text and tool-call arguments). Not screened:

* images and files: the text classifiers have no text to read in them (a file's text would
  have to be extracted first);
* reasoning items: the model's own earlier reasoning, mostly encrypted, which the client hands
  back unread;
* earlier turns the upstream keeps (``previous_response_id``, ``conversation``): they were
  screened when they passed through.

Output: every generated text of the Response's ``output`` items (message text and refusals,
reasoning summaries and text, tool-call arguments), the same texts the stream shape
(``gateway/stream/responses_api.py``) screens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr

from gateway.duties import ExplicitLabel
from gateway.incidents import new_id
from gateway.labels import labeled
from gateway.openai_chat import redact_payload, validate_body
from gateway.policy import Policy
from gateway.screening import Decision, Segment

__all__ = [
    "PART_TEXT",
    "TOOL_CALLS",
    "ResponsesRequest",
    "apply_output",
    "input_segments",
    "item_texts",
    "label_response",
    "output_segments",
    "refusal_item",
    "refusal_response",
    "validate_responses",
]

_ROLE_CHANNEL = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
#: Output part type -> (channel, the field holding its text).
PART_TEXT = {
    "output_text": ("content", "text"),
    "refusal": ("refusal", "refusal"),
    "summary_text": ("reasoning", "text"),
    "reasoning_text": ("reasoning_text", "text"),
}
#: Tool-call item type -> the field holding the model's arguments.
TOOL_CALLS = {"function_call": "arguments", "custom_tool_call": "input"}
#: Input items that hand a tool's result to the model: their ``output`` is screened as ``tool``.
_TOOL_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})
_EMPTY_USAGE = {
    "input_tokens": 0,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 0,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 0,
}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Part(_Open):
    type: StrictStr
    text: StrictStr | None = None
    #: An assistant refusal handed back in the history.
    refusal: StrictStr | None = None


class _Item(_Open):
    #: A message may leave its type out (``{"role", "content"}``).
    type: StrictStr | None = None
    role: StrictStr | None = None
    content: StrictStr | list[_Part] | None = None
    #: A tool's result: text, parts, or an object (a computer call's screenshot).
    output: StrictStr | list[_Part] | dict[str, Any] | None = None
    arguments: StrictStr | None = None
    #: A custom tool call's input (other item types use the name for other things).
    input: Any = None


class _Text(_Open):
    format: dict[str, Any] | None = None


class ResponsesRequest(_Open):
    #: Optional: a stored prompt (``prompt: {id}``) may name the model.
    model: StrictStr | None = None
    input: StrictStr | list[_Item] | None = None
    instructions: StrictStr | None = None
    # Strict: "yes" must not become True on the way upstream.
    stream: StrictBool | None = False
    user: StrictStr | None = None
    safety_identifier: StrictStr | None = None
    text: _Text | None = None

    @property
    def end_user(self) -> str | None:
        """The end user, for enforcement: ``safety_identifier``, else the older ``user``."""
        return self.safety_identifier or self.user

    def output_format(self) -> Any:
        """The output format asked for (``text.format``): an answer that must be JSON gets no
        explicit label."""
        return self.text.format if self.text is not None else None


def validate_responses(payload: dict[str, Any]) -> ResponsesRequest:
    return validate_body(ResponsesRequest, payload)


def _text_segments(value: Any, channel: str, where: tuple[str | int, ...]) -> list[Segment]:
    if isinstance(value, str):
        return [Segment(value, channel, where)] if value else []
    out = []
    for j, part in enumerate(value if isinstance(value, list) else ()):
        # Image and file parts carry no text for the text classifiers.
        if part.text:
            out.append(Segment(part.text, channel, (*where, j, "text")))
        if part.refusal:
            out.append(Segment(part.refusal, channel, (*where, j, "refusal")))
    return out


def _item_segments(item: _Item, where: tuple[str | int, ...]) -> list[Segment]:
    if item.type in _TOOL_OUTPUTS:
        return _text_segments(item.output, "tool", (*where, "output"))
    if item.type in TOOL_CALLS:
        field = TOOL_CALLS[item.type]
        text = item.arguments if field == "arguments" else item.input
        return [Segment(text, "assistant", (*where, field))] if isinstance(text, str) and text else []
    if item.role is None or item.type not in (None, "message"):
        return []  # reasoning items, item references, built-in tools' calls: nothing the client wrote
    return _text_segments(item.content, _ROLE_CHANNEL.get(item.role, "user"), (*where, "content"))


def input_segments(request: ResponsesRequest) -> list[Segment]:
    """Every text the client sends: instructions, the input text or its items' texts."""
    segments = []
    if request.instructions:
        segments.append(Segment(request.instructions, "system", ("instructions",)))
    if isinstance(request.input, str):
        if request.input:
            segments.append(Segment(request.input, "user", ("input",)))
        return segments
    for i, item in enumerate(request.input or ()):
        segments.extend(_item_segments(item, ("input", i)))
    return segments


def item_texts(item: Mapping[str, Any]) -> Iterator[tuple[str, int, tuple[str | int, ...], str]]:
    """The generated texts of one output item: channel, index in the item (part or summary
    index; 0 for a tool call), path in the item, and the text (maybe empty)."""
    kind = item.get("type")
    if kind in TOOL_CALLS:
        field = TOOL_CALLS[str(kind)]
        if isinstance(text := item.get(field), str):
            yield "tool_arguments", 0, (field,), text
        return
    if kind not in ("message", "reasoning"):
        return
    for name in ("summary", "content"):
        parts = item.get(name)
        for j, part in enumerate(parts if isinstance(parts, list) else ()):
            found = PART_TEXT.get(str(part.get("type"))) if isinstance(part, dict) else None
            if found is not None and isinstance(text := part.get(found[1]), str):
                yield found[0], j, (name, j, found[1]), text


def _items(response: Mapping[str, Any]) -> list[Any]:
    output = response.get("output")
    return output if isinstance(output, list) else []


def output_segments(response: Mapping[str, Any]) -> list[Segment]:
    """A Response's generated texts, in output order."""
    segments = []
    for k, item in enumerate(_items(response)):
        if isinstance(item, dict):
            for channel, _, path, text in item_texts(item):
                if text:
                    segments.append(Segment(text, channel, ("output", k, *path)))
    return segments


def refusal_item(message: str) -> dict[str, Any]:
    """A completed assistant message carrying ``message``."""
    part = {"type": "output_text", "text": message, "annotations": [], "logprobs": []}
    return {
        "id": new_id("msg_modgate"),
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }


def _sync_output_text(response: dict[str, Any]) -> None:
    """Keep the ``output_text`` convenience field (some servers send it; the SDKs compute it)
    equal to the message texts it sums up."""
    if isinstance(response.get("output_text"), str):
        response["output_text"] = "".join(
            text
            for item in _items(response)
            if isinstance(item, dict) and item.get("type") == "message"
            for channel, _, _, text in item_texts(item)
            if channel == "content"
        )


def apply_output(
    response: dict[str, Any],
    decision: Decision,
    segments: Sequence[Segment],
    policy: Policy,
    annotation: dict[str, Any],
) -> None:
    """Replace a stopped Response's output with the canned reply (``status: "incomplete"``,
    ``incomplete_details.reason: "content_filter"``, as OpenAI's own filter answers), or mask
    redacted spans, in place; every non-allow decision adds the ``modgate`` note."""
    if decision.stops:
        response["output"] = [refusal_item(policy.spec.refusal.message)]
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    elif decision.action == "redact":
        redact_payload(response, decision, segments, policy.spec.refusal.redaction)
        for hit in decision.hits:
            if hit.action == "redact":
                _drop_logprobs(response, segments[hit.segment].where)
    if decision.action != "allow":
        response["modgate"] = annotation
    _sync_output_text(response)


def _drop_logprobs(root: dict[str, Any], where: tuple[str | int, ...]) -> None:
    """A masked part's log-probs would still spell the masked tokens out."""
    node: Any = root
    for step in where[:-1]:
        node = node[step]
    if isinstance(node, dict) and "logprobs" in node:
        node["logprobs"] = []


def refusal_response(request: ResponsesRequest, policy: Policy, annotation: dict[str, Any]) -> dict[str, Any]:
    """A complete Response carrying the policy's canned reply to a refused request."""
    return {
        "id": new_id("resp_modgate"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": request.model or "",
        "output": [refusal_item(policy.spec.refusal.message)],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": dict(_EMPTY_USAGE),
        "modgate": annotation,
    }


def label_response(response: dict[str, Any], label: ExplicitLabel) -> bool:
    """Add the explicit label to a Response's message text, in place: into the first text part
    (start) or the last (end); never into reasoning, refusals or tool calls. True when anything
    changed."""
    parts = [
        part
        for item in _items(response)
        if isinstance(item, dict) and item.get("type") == "message"
        for part in item.get("content") or ()
        if isinstance(part, dict) and part.get("type") == "output_text" and part.get("text")
    ]
    if not parts:
        return False
    part = parts[0] if label.position == "start" else parts[-1]
    part["text"] = labeled(part["text"], label)
    _sync_output_text(response)
    return True
