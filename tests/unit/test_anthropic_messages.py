"""The Anthropic Messages dialect alone: segments and their paths, write-backs, errors, keys."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from classifiers.base import Span
from gateway.anthropic_messages import (
    error_body,
    input_segments,
    label_message,
    output_segments,
    redact_request,
    validate_messages,
)
from gateway.config import UpstreamConfig
from gateway.duties import ExplicitLabel
from gateway.errors import (
    ContentBlocked,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnavailable,
    UserRestricted,
)
from gateway.routing import Upstream
from gateway.screening import Decision, Hit, Segment
from gateway.upstream import UpstreamClient

PAYLOAD: dict[str, Any] = {
    "model": "claude-test",
    "max_tokens": 10,
    "system": [{"type": "text", "text": "be kind"}],
    "messages": [
        {"role": "user", "content": "hello"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "plan", "signature": "s"},
                {"type": "redacted_thinking", "data": "xyz"},
                {"type": "text", "text": "ok"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"q": "北京"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "sunny"}]},
                {"type": "tool_result", "tool_use_id": "t2", "content": "rainy"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}},
                {
                    "type": "web_search_tool_result",
                    "tool_use_id": "t3",
                    "content": {"type": "x", "error_code": "y"},
                },
            ],
        },
    ],
    "metadata": {"user_id": "u-1"},
    "future": [1, 2],
}


def test_input_segments_channels_and_paths() -> None:
    request = validate_messages(PAYLOAD)
    got = [(s.text, s.channel, s.where) for s in input_segments(request)]
    assert got == [
        ("be kind", "system", ("system", 0, "text")),
        ("hello", "user", ("messages", 0, "content")),
        ("plan", "assistant", ("messages", 1, "content", 0, "thinking")),
        ("ok", "assistant", ("messages", 1, "content", 2, "text")),
        ('{"q": "北京"}', "assistant", ("messages", 1, "content", 3, "input")),
        ("sunny", "tool", ("messages", 2, "content", 0, "content", 0, "text")),
        ("rainy", "tool", ("messages", 2, "content", 1, "content")),
    ]
    assert request.user == "u-1" and request.model_extra == {"max_tokens": 10, "future": [1, 2]}


def test_string_system_and_output_format() -> None:
    request = validate_messages(
        {**PAYLOAD, "system": "sys", "output_config": {"format": {"type": "json_schema"}}}
    )
    assert input_segments(request)[0] == Segment("sys", "system", ("system",))
    assert request.output_format() == {"type": "json_schema"}


def _decision(segment: int, spans: tuple[Span, ...], action: Any = "redact") -> Decision:
    hit = Hit("X.test", 1.0, "lexicon", action, segment, spans)
    return Decision(action, "input", "p", "v1", (hit,))


def test_redacted_tool_input_goes_back_as_an_object() -> None:
    payload = json.loads(json.dumps(PAYLOAD))
    segments = input_segments(validate_messages(payload))
    index = next(i for i, s in enumerate(segments) if s.where[-1] == "input")
    start = segments[index].text.index("北京")
    redact_request(payload, _decision(index, (Span(start, start + 2, "X.test"),)), segments, "[R]")
    assert payload["messages"][1]["content"][3]["input"] == {"q": "[R]"}
    # A mask across the JSON's structure leaves an object all the same.
    payload = json.loads(json.dumps(PAYLOAD))
    redact_request(payload, _decision(index, (Span(0, 3, "X.test"),)), segments, "[R]")
    assert payload["messages"][1]["content"][3]["input"] == {}


def test_output_segments() -> None:
    message = {
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "hi"},
            {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
            {"type": "redacted_thinking", "data": "x"},
        ]
    }
    got = [(s.text, s.channel, s.where) for s in output_segments(message)]
    assert got == [
        ("hmm", "reasoning", ("content", 0, "thinking")),
        ("hi", "content", ("content", 1, "text")),
        ('{"a": 1}', "tool_arguments", ("content", 2, "input")),
    ]


def test_label_message_first_or_last_text_block() -> None:
    def message() -> dict[str, Any]:
        return {
            "content": [
                {"type": "text", "text": "a"},
                {"type": "tool_use", "input": {}},
                {"type": "text", "text": "b"},
            ]
        }

    start, end = message(), message()
    assert label_message(start, ExplicitLabel(text="[AI]", position="start"))
    assert label_message(end, ExplicitLabel(text="[AI]", position="end"))
    assert [b.get("text") for b in start["content"]] == ["[AI]\na", None, "b"]
    assert [b.get("text") for b in end["content"]] == ["a", None, "b\n[AI]"]
    assert not label_message({"content": [{"type": "tool_use", "input": {}}]}, ExplicitLabel(text="[AI]"))


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [
        (InvalidRequest("bad"), 400, "invalid_request_error"),
        (PayloadTooLarge("big"), 413, "request_too_large"),
        (Unauthorized("who"), 401, "authentication_error"),
        (NotFound("where"), 404, "not_found_error"),
        (UserRestricted("slow"), 429, "rate_limit_error"),
        (UpstreamUnavailable("down"), 502, "api_error"),
        (UpstreamTimeout("late"), 504, "api_error"),
        (ServiceUnavailable("draining"), 503, "api_error"),
        (UpstreamStatus(529, None, {}), 529, "overloaded_error"),
        (UpstreamStatus(418, None, {}), 418, "invalid_request_error"),
    ],
)
def test_error_types(exc: Any, status: int, kind: str) -> None:
    body = error_body(exc)
    assert exc.status == status and body["type"] == "error" and body["error"]["type"] == kind


def test_content_blocked_carries_the_incident() -> None:
    note = {"action": "block", "incident_id": "inc_1", "risks": ["A.1.d"], "policy_version": "v"}
    err = error_body(ContentBlocked("blocked", modgate=note))["error"]
    assert err == {
        "type": "invalid_request_error",
        "message": "blocked",
        "details": {"error_code": "content_filter"},
        "modgate": note,
    }


def test_upstream_error_bodies() -> None:
    anthropic_shaped = {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow"},
        "request_id": "r",
    }
    assert error_body(UpstreamStatus(429, anthropic_shaped, {})) == anthropic_shaped
    openai_shaped = {"error": {"message": "bad key", "type": "authentication_error", "code": "k"}}
    assert error_body(UpstreamStatus(401, openai_shaped, {})) == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "bad key"},
    }


def _upstream(dialect: Any, key: str | None) -> Upstream:
    config = UpstreamConfig(
        base_url="https://api.example/v1", dialect=dialect, api_key=SecretStr(key) if key else None
    )
    return Upstream("u", config, UpstreamClient(config))


def test_anthropic_upstream_takes_its_key_as_x_api_key() -> None:
    assert _upstream("anthropic", "sk-up").auth_headers("Bearer sk-client", "sk-client") == {
        "x-api-key": "sk-up"
    }
    # Without its own key (and so without gateway keys), the client's credentials pass.
    assert _upstream("anthropic", None).auth_headers(None, "sk-client") == {"x-api-key": "sk-client"}
    assert _upstream("anthropic", None).auth_headers("Bearer sk-c", None) == {"authorization": "Bearer sk-c"}
    # An OpenAI upstream is unchanged: a bearer token, never the client's x-api-key.
    assert _upstream("openai", "sk-up").auth_headers(None, "sk-client") == {"authorization": "Bearer sk-up"}
    assert _upstream("openai", None).auth_headers(None, "sk-client") == {}
