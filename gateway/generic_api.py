"""The generic adapter: any JSON API, described per route in the gateway config.

The operator names where the request's texts are (``input``), where the answer's texts are
(``output``), and, for answers that stream, where each event's text is (``stream.delta``) and
whether events come as SSE or JSON lines. Selectors are JSONPath-like (``gateway.jsonpath``).
A refused request is answered with ``refusal`` (by default an answer built from the first
``output`` selector, holding the policy's message); a blocked one with ``block`` (by default
the gateway's OpenAI-shaped error). ``{message}`` in a template's strings becomes the policy's
refusal message, and a ``modgate`` object names the incident.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.jsonpath import Selector, set_path
from gateway.openai_chat import redact_payload
from gateway.policy import Policy
from gateway.screening import Decision, Segment
from gateway.stream.generic import GenericShape, fill

__all__ = ["GenericAdapter", "GenericStream", "apply_output", "input_segments", "output_segments", "refusal"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _selector(source: str) -> str:
    Selector.parse(source)  # refused when the config loads, not on the first request
    return source


class GenericStream(_Strict):
    format: Literal["sse", "jsonl"] = Field("sse", description="How the answer's events are framed.")
    delta: str = Field(..., description="Selector of each event's text, e.g. $.token.text.")
    end: str | None = Field(None, description="Selector of a field that is true on the last event.")
    done_marker: str | None = Field(None, description="SSE data that ends the stream, e.g. [DONE].")
    cut: dict[str, Any] | None = Field(
        None, description="The event sent when a stream is cut ({message} filled in); default {error: ...}."
    )

    @field_validator("delta", "end")
    @classmethod
    def _selectors(cls, source: str | None) -> str | None:
        return source if source is None else _selector(source)


class GenericAdapter(_Strict):
    input: list[str] = Field(..., min_length=1, description="Selectors of the request's texts.")
    output: list[str] = Field(default_factory=list, description="Selectors of a whole answer's texts.")
    user: str | None = Field(None, description="Selector of the end user's id, for enforcement.")
    model: str | None = Field(None, description="Selector of the model name, for routes by model.")
    stream: GenericStream | None = Field(None, description="How the answer streams, when it does.")
    refusal: dict[str, Any] | None = Field(
        None, description="The answer to a refused request ({message} filled in); default: built from output."
    )
    block: dict[str, Any] | None = Field(
        None, description="The 400 body for a blocked request ({message} filled in); default: an error."
    )

    @field_validator("input", "output")
    @classmethod
    def _selectors(cls, sources: list[str]) -> list[str]:
        return [_selector(s) for s in sources]

    @field_validator("user", "model")
    @classmethod
    def _one(cls, source: str | None) -> str | None:
        return source if source is None else _selector(source)

    def value(self, selector: str | None, payload: Any) -> str | None:
        if selector is None:
            return None
        found = Selector.parse(selector).first_text(payload)
        return found[1] if found else None

    def shape(self, jsonl: bool) -> GenericShape:
        assert self.stream is not None
        settings = self.stream
        return GenericShape(
            Selector.parse(settings.delta),
            jsonl=jsonl,
            done_marker=None if jsonl else settings.done_marker,
            end=Selector.parse(settings.end) if settings.end else None,
            cut_event=settings.cut,
        )


def _segments(selectors: Sequence[str], payload: Any, channel: str) -> list[Segment]:
    return [
        Segment(text, channel, path)
        for source in selectors
        for path, text in Selector.parse(source).texts(payload)
    ]


def input_segments(adapter: GenericAdapter, payload: Any) -> list[Segment]:
    return _segments(adapter.input, payload, "user")


def output_segments(adapter: GenericAdapter, answer: Any) -> list[Segment]:
    return _segments(adapter.output, answer, "content")


def refusal(adapter: GenericAdapter, policy: Policy, note: dict[str, Any]) -> dict[str, Any]:
    """The answer to a refused request."""
    message = policy.spec.refusal.message
    if adapter.refusal is not None:
        body = fill(adapter.refusal, message)
    else:
        first = Selector.parse(adapter.output[0]).build(message) if adapter.output else None
        body = first or {"message": message}
    return {**body, "modgate": note}


def apply_output(
    answer: dict[str, Any],
    decision: Decision,
    segments: Sequence[Segment],
    policy: Policy,
    note: dict[str, Any],
) -> None:
    """The decision on a whole answer, in place: the refusal message in place of the first text
    (the others emptied) when it stops, masks when it redacts, and the ``modgate`` note."""
    if decision.stops:
        for i, segment in enumerate(segments):
            set_path(answer, segment.where, policy.spec.refusal.message if i == 0 else "")
    elif decision.action == "redact":
        redact_payload(answer, decision, segments, policy.spec.refusal.redaction)
    answer["modgate"] = note
