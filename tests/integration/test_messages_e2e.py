"""Anthropic Messages end to end with the official anthropic client: gateway and a scripted
Anthropic upstream on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.conftest import AnthropicServer, Gateway, GatewayFactory, Upstream, mock

UPSTREAM_KEY = "sk-ant-upstream-secret-0001"
CONFIG = f"""
upstreams:
  claude: {{base_url: "{{anthropic}}", dialect: anthropic, api_key: "{UPSTREAM_KEY}"}}
  main: {{base_url: "{{upstream}}"}}
policies: {{test: policy.yaml}}  # the test policy the gateway factory writes
routes:
  - {{name: claude, path_prefix: /v1/messages, upstream: claude, policy: test}}
  - {{name: main, upstream: main, policy: test}}
"""
MSG = [{"role": "user", "content": "Tell me a story about a cat."}]
REFUSAL = "抱歉，我无法提供这方面的内容。Sorry, I can't help with that."


def _gateway(
    make_gateway: GatewayFactory, server: AnthropicServer, config: str = CONFIG, **kw: Any
) -> Gateway:
    return make_gateway(config=config.replace("{anthropic}", server.base), **kw)


@pytest.fixture
def claude(make_gateway: GatewayFactory, anthropic_upstream: AnthropicServer) -> Gateway:
    anthropic_upstream.app.clear()
    return _gateway(make_gateway, anthropic_upstream)


def _create(gateway: Gateway, script: dict[str, Any] | None = None, **kw: Any) -> Any:
    kw.setdefault("messages", MSG)
    return gateway.anthropic().messages.create(
        model="claude-test", max_tokens=64, extra_headers=mock(**(script or {})), **kw
    )


def _extra(message: Any) -> dict[str, Any]:
    return message.model_extra or {}


@pytest.mark.parametrize("text", ["Once upon a time, a cat.", "从前有一只猫，它很喜欢晒太阳。"])
def test_benign_message_passes_unchanged(
    claude: Gateway, anthropic_upstream: AnthropicServer, text: str
) -> None:
    raw = claude.anthropic().messages.with_raw_response.create(
        model="claude-test",
        max_tokens=64,
        messages=[{"role": "user", "content": text}],
        extra_headers=mock(text=text, extra={"future_field": {"kept": True}}),
    )
    message = raw.parse()
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == text  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.id == "msg_mock"
    assert _extra(message)["future_field"] == {"kept": True}
    assert "modgate" not in _extra(message)
    assert json.loads(raw.headers["x-aigc-label"])["AIGC"]["ProduceID"] == "msg_mock"
    assert _extra(message)["aigc"]["AIGC"]["Label"] == "1"
    assert raw.headers["x-request-id"]
    seen = anthropic_upstream.app.last()
    assert seen.path == "/v1/messages"
    assert seen.body["messages"][0]["content"] == text


def test_upstream_gets_its_own_key_and_the_clients_anthropic_headers(
    claude: Gateway, anthropic_upstream: AnthropicServer
) -> None:
    claude.anthropic(api_key="sk-ant-client-own-key").messages.create(
        model="claude-test",
        max_tokens=64,
        messages=MSG,
        extra_headers={"anthropic-beta": "test-beta-2025"},
        extra_body={"unknown_field": {"nested": [1, "二"]}, "top_k": 3},
    )
    seen = anthropic_upstream.app.last()
    assert seen.headers["x-api-key"] == UPSTREAM_KEY
    assert "authorization" not in seen.headers
    assert seen.headers["anthropic-version"]  # the SDK's, passed on
    assert seen.headers["anthropic-beta"] == "test-beta-2025"
    assert seen.body["unknown_field"] == {"nested": [1, "二"]} and seen.body["top_k"] == 3
    assert seen.body["max_tokens"] == 64


def test_without_upstream_or_gateway_keys_the_clients_key_passes(
    make_gateway: GatewayFactory, anthropic_upstream: AnthropicServer
) -> None:
    config = CONFIG.replace(f', api_key: "{UPSTREAM_KEY}"', "")
    gateway = _gateway(make_gateway, anthropic_upstream, config)
    key = "sk-ant-client-own-key"
    gateway.anthropic(api_key=key).messages.create(model="claude-test", max_tokens=64, messages=MSG)
    seen = anthropic_upstream.app.last().headers
    # SDK releases differ in where they put the key (x-api-key, or a bearer token): both pass.
    assert seen.get("x-api-key") == key or seen.get("authorization") == f"Bearer {key}"
    body = {"model": "claude-test", "max_tokens": 8, "messages": MSG}
    with gateway.http() as client:
        assert client.post("/v1/messages", json=body, headers={"x-api-key": key}).status_code == 200
    assert anthropic_upstream.app.last().headers["x-api-key"] == key


def test_gateway_keys_in_x_api_key(make_gateway: GatewayFactory, anthropic_upstream: AnthropicServer) -> None:
    config = CONFIG + 'keys:\n  - {name: team, key: "gw-team-key-00000001", tenant: acme, user: alice}\n'
    gateway = _gateway(make_gateway, anthropic_upstream, config)
    with pytest.raises(anthropic.AuthenticationError) as info:
        gateway.anthropic(api_key="sk-ant-wrong-key-000000").messages.create(
            model="claude-test", max_tokens=64, messages=MSG
        )
    assert info.value.body["type"] == "error"  # type: ignore[index]
    assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    gateway.anthropic(api_key="gw-team-key-00000001").messages.create(
        model="claude-test", max_tokens=64, messages=MSG
    )
    assert anthropic_upstream.app.last().headers["x-api-key"] == UPSTREAM_KEY


@pytest.mark.parametrize("text", ["how to zorblax a city", "请告诉我炸药配方"])
def test_blocked_input_is_an_anthropic_error(
    claude: Gateway, anthropic_upstream: AnthropicServer, text: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        _create(claude, messages=[{"role": "user", "content": text}])
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    err = body["error"]
    assert err["type"] == "invalid_request_error" and err["details"] == {"error_code": "content_filter"}
    incident_id = err["modgate"]["incident_id"]
    assert "A.1.d" in err["modgate"]["risks"]
    assert anthropic_upstream.app.requests == []
    incident = {i.id: i for i in claude.incidents()}[incident_id]
    assert incident.direction == "input" and incident.action == "block" and incident.route == "claude"


@pytest.mark.parametrize(
    ("system", "messages"),
    [
        ("You are zorblax.", MSG),
        ([{"type": "text", "text": "hello"}, {"type": "text", "text": "炸药配方"}], MSG),
        (None, [{"role": "user", "content": [{"type": "text", "text": "hi zorblax"}]}]),
        (
            None,
            [
                {"role": "user", "content": "look it up"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"q": "炸药配方"}}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
            ],
        ),
        (
            None,
            [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "plan: zorblax", "signature": "sig"},
                        {"type": "text", "text": "ok"},
                    ],
                },
                {"role": "user", "content": "go on"},
            ],
        ),
        (
            None,
            [
                {"role": "user", "content": "look it up"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "result: zorblax"}],
                        }
                    ],
                },
            ],
        ),
        (
            None,
            [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "zorblax"},
                        },
                        {"type": "text", "text": "summarise"},
                    ],
                }
            ],
        ),
    ],
    ids=["system", "system-blocks-zh", "text-block", "tool-use-input", "thinking", "tool-result", "document"],
)
def test_every_input_block_is_screened(
    claude: Gateway, anthropic_upstream: AnthropicServer, system: Any, messages: list[Any]
) -> None:
    kw = {"system": system} if system is not None else {}
    with pytest.raises(anthropic.BadRequestError) as info:
        _create(claude, messages=messages, **kw)
    assert info.value.body["error"]["modgate"]["action"] == "block"  # type: ignore[index]
    assert anthropic_upstream.app.requests == []


def test_images_and_redacted_thinking_pass(claude: Gateway, anthropic_upstream: AnthropicServer) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    messages = [
        {"role": "user", "content": [image, {"type": "text", "text": "what is this?"}]},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "zorblax"}]},
        {"role": "user", "content": "go on"},
    ]
    _create(claude, messages=messages)
    assert anthropic_upstream.app.last().body["messages"] == messages


def test_refused_input_gets_a_refusal_message(claude: Gateway, anthropic_upstream: AnthropicServer) -> None:
    raw = claude.anthropic().messages.with_raw_response.create(
        model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "say 拒绝词"}]
    )
    message = raw.parse()
    assert message.stop_reason == "refusal" and message.stop_sequence is None
    assert message.id.startswith("msg_modgate_") and message.model == "claude-test"
    assert message.content[0].text == REFUSAL  # type: ignore[union-attr]
    assert message.usage.input_tokens == 0 and message.usage.output_tokens == 0
    assert _extra(message)["modgate"]["action"] == "refuse"
    assert json.loads(raw.headers["x-aigc-label"])["AIGC"]["ProduceID"] == message.id
    assert anthropic_upstream.app.requests == []


def test_redacted_input_is_masked_before_forwarding(
    claude: Gateway, anthropic_upstream: AnthropicServer
) -> None:
    messages = [
        {"role": "user", "content": "the secretword here"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"q": "机密词"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
    ]
    _create(claude, messages=messages)
    sent = anthropic_upstream.app.last().body["messages"]
    assert sent[0]["content"] == "the [REDACTED] here"
    assert sent[1]["content"][0]["input"] == {"q": "[REDACTED]"}  # still an object


@pytest.mark.parametrize(
    "blocks",
    [
        [{"type": "text", "text": "Here is how to zorblax."}],
        [{"type": "thinking", "thinking": "I will explain 炸药配方"}, {"type": "text", "text": "Sure."}],
        [{"type": "text", "text": "Calling."}, {"type": "tool_use", "name": "f", "input": {"q": "zorblax"}}],
    ],
    ids=["text", "thinking", "tool-use"],
)
def test_harmful_output_becomes_the_refusal(claude: Gateway, blocks: list[dict[str, Any]]) -> None:
    message = _create(claude, {"blocks": blocks})
    assert message.stop_reason == "refusal" and message.stop_sequence is None
    assert [(b.type, b.text) for b in message.content] == [("text", REFUSAL)]
    note = _extra(message)["modgate"]
    assert note["action"] == "block" and "A.1.d" in note["risks"]
    incident = {i.id: i for i in claude.incidents()}[note["incident_id"]]
    assert incident.direction == "output" and incident.action == "block"


def test_refused_output(claude: Gateway) -> None:
    message = _create(claude, {"text": "I will not say refuseword."})
    assert message.stop_reason == "refusal"
    assert message.content[0].text == REFUSAL
    assert _extra(message)["modgate"]["action"] == "refuse"


def test_output_pii_is_redacted(claude: Gateway) -> None:
    blocks = [
        {"type": "text", "text": "Write to alice@example.com or call 13812345678."},
        {"type": "tool_use", "name": "mail", "input": {"to": "bob@example.org", "n": 1}},
    ]
    message = _create(claude, {"blocks": blocks, "stop_reason": "tool_use"})
    assert message.stop_reason == "tool_use"
    assert message.content[0].text == "Write to [REDACTED] or call [REDACTED]."
    assert message.content[1].input == {"to": "[REDACTED]", "n": 1}
    note = _extra(message)["modgate"]
    assert note["action"] == "redact" and "A.4.f" in note["risks"]
    assert {i.id: i for i in claude.incidents()}[note["incident_id"]].action == "redact"


def test_flagged_output_is_unchanged_but_annotated(claude: Gateway) -> None:
    message = _create(claude, {"text": "a flagword here"})
    assert message.content[0].text == "a flagword here"
    assert _extra(message)["modgate"]["action"] == "flag"


@pytest.mark.parametrize("position", ["start", "end"])
def test_explicit_label(
    make_gateway: GatewayFactory, anthropic_upstream: AnthropicServer, position: str
) -> None:
    from tests.conftest import TEST_POLICY

    policy = TEST_POLICY + f'labeling: {{explicit: {{text: "【AI生成】", position: {position}}}}}\n'
    gateway = _gateway(make_gateway, anthropic_upstream, policy=policy)
    blocks = [
        {"type": "thinking", "thinking": "hmm"},
        {"type": "text", "text": "first"},
        {"type": "tool_use", "name": "f", "input": {"a": 1}},
        {"type": "text", "text": "last"},
    ]
    message = _create(gateway, {"blocks": blocks})
    texts = [getattr(b, "text", None) for b in message.content]
    if position == "start":
        assert texts == [None, "【AI生成】\nfirst", None, "last"]
    else:
        assert texts == [None, "first", None, "last\n【AI生成】"]
    assert message.content[0].thinking == "hmm"
    refusal = _create(gateway, messages=[{"role": "user", "content": "refuseword"}])
    assert "【AI生成】" in refusal.content[0].text


@pytest.mark.parametrize(
    ("status", "kind"), [(429, "rate_limit_error"), (500, "api_error"), (529, "overloaded_error")]
)
def test_upstream_errors_keep_status_and_body(claude: Gateway, status: int, kind: str) -> None:
    headers = {"retry-after": "7", "anthropic-ratelimit-requests-remaining": "0"}
    script = {"type": "status", "status": status, "headers": headers}
    with pytest.raises(anthropic.APIStatusError) as info:
        _create(claude, script)
    assert info.value.status_code == status
    assert info.value.body == {
        "type": "error",
        "error": {"type": kind, "message": "upstream failed"},
        "request_id": "req_mock",
    }
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


def test_upstream_error_that_is_not_json(claude: Gateway) -> None:
    with pytest.raises(anthropic.APIStatusError) as info:
        _create(claude, {"type": "status", "status": 503, "body": "<html>down</html>"})
    assert info.value.status_code == 503
    assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]


@pytest.mark.parametrize("kind", ["not_json", "not_object"])
def test_upstream_body_not_an_object_is_502(claude: Gateway, kind: str) -> None:
    with pytest.raises(anthropic.APIStatusError) as info:
        _create(claude, {"type": kind})
    assert info.value.status_code == 502
    assert info.value.body["type"] == "error"  # type: ignore[index]
    assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"model": "claude-test", "messages": [', "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"model": "claude-test", "max_tokens": 8}', "messages"),
        (b'{"model": "c", "messages": [{"role": "user", "content": 5}]}', "messages.0.content"),
        (b'{"model": "c", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream"),
    ],
)
def test_malformed_requests_are_anthropic_400s(claude: Gateway, body: bytes, fragment: str) -> None:
    with claude.http() as client:
        resp = client.post("/v1/messages", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    payload = resp.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert fragment in payload["error"]["message"]


def test_oversized_body_is_an_anthropic_413(
    make_gateway: GatewayFactory, anthropic_upstream: AnthropicServer
) -> None:
    gateway = _gateway(make_gateway, anthropic_upstream, max_body_bytes=1024)
    body = json.dumps({"model": "c", "messages": [{"role": "user", "content": "x" * 2000}]}).encode()

    def chunks() -> Iterator[bytes]:  # no content-length: the limit is counted as it arrives
        yield from (body[i : i + 500] for i in range(0, len(body), 500))

    with gateway.http() as client:
        for content in (body, chunks()):
            resp = client.post("/v1/messages", content=content, headers={"content-type": "application/json"})
            assert resp.status_code == 413
            assert resp.json()["type"] == "error"
            assert resp.json()["error"]["type"] == "request_too_large"
    assert anthropic_upstream.app.requests == []


def test_no_route_is_an_anthropic_404(
    make_gateway: GatewayFactory, anthropic_upstream: AnthropicServer
) -> None:
    config = CONFIG.replace("  - {name: main, upstream: main, policy: test}\n", "").replace(
        "path_prefix: /v1/messages", "model: 'x-*'"
    )
    gateway = _gateway(make_gateway, anthropic_upstream, config)
    with pytest.raises(anthropic.NotFoundError) as info:
        _create(gateway)
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_enforcement_by_metadata_user_id(
    make_gateway: GatewayFactory, anthropic_upstream: AnthropicServer
) -> None:
    from tests.conftest import TEST_POLICY

    policy = TEST_POLICY + (
        "enforcement:\n  window: 1h\n  warning: careful\n"
        "  ladder:\n    - {strikes: 1, action: warn}\n    - {strikes: 2, action: suspend}\n"
    )
    gateway = _gateway(make_gateway, anthropic_upstream, policy=policy)
    client = gateway.anthropic()
    bad = [{"role": "user", "content": "zorblax"}]
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="c", max_tokens=8, messages=bad, metadata={"user_id": "u-1"})
    assert info.value.response.headers["x-modgate-user-status"] == "warned"
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="c", max_tokens=8, messages=bad, metadata={"user_id": "u-1"})
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        client.messages.create(model="c", max_tokens=8, messages=MSG, metadata={"user_id": "u-1"})
    assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    assert denied.value.body["error"]["details"] == {"error_code": "user_suspended"}  # type: ignore[index]
    client.messages.create(model="c", max_tokens=8, messages=MSG, metadata={"user_id": "u-2"})
    client.messages.create(model="c", max_tokens=8, messages=MSG, extra_headers={"x-modgate-user": "u-2"})


def test_openai_route_unaffected(claude: Gateway, upstream: Upstream) -> None:
    completion = claude.openai().chat.completions.create(
        model="m", messages=MSG, extra_headers=mock(content="hello")
    )
    assert completion.choices[0].message.content == "hello"
    assert upstream.app.last().headers["authorization"] == "Bearer sk-client-key"


def test_scripted_stream_is_what_the_sdk_reads(anthropic_upstream: AnthropicServer) -> None:
    """The SSE script (for the streaming tests to come) speaks Anthropic's real event sequence:
    the official SDK assembles it into the Message it describes."""
    script = {
        "type": "sse",
        "blocks": [
            {"type": "thinking", "deltas": ["let me ", "think"]},
            {"type": "text", "deltas": ["Hel", "lo"]},
            {"type": "tool_use", "name": "f", "deltas": ['{"a":', " 1}"]},
        ],
        "stop_reason": "tool_use",
    }
    client = anthropic.Anthropic(
        base_url=anthropic_upstream.base.removesuffix("/v1"), api_key="k", max_retries=0, timeout=20
    )
    with client.messages.stream(
        model="claude-test", max_tokens=64, messages=MSG, extra_headers={"x-mock": json.dumps(script)}
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].thinking == "let me think" and final.content[0].signature  # type: ignore[union-attr]
    assert final.content[1].text == "Hello"  # type: ignore[union-attr]
    assert final.content[2].input == {"a": 1} and final.content[2].name == "f"  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 6
    assert anthropic_upstream.app.last().stream_state == "done"
