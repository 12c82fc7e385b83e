"""Anthropic Messages streams through the gateway with the official ``anthropic`` SDK, in both
stream modes: text, thinking and tool_use blocks, a term split across deltas cut with nothing
shown in hold mode, the upstream closed at once, refusals as streams, errors midway."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.conftest import TEST_POLICY, AnthropicServer, Gateway, GatewayFactory, mock
from tests.integration.test_messages_e2e import CONFIG, MSG, REFUSAL


@pytest.fixture(params=["hold", "async"])
def claude(
    request: pytest.FixtureRequest, make_gateway: GatewayFactory, anthropic_upstream: AnthropicServer
) -> Gateway:
    anthropic_upstream.app.clear()
    policy = TEST_POLICY.replace("mode: hold", f"mode: {request.param}")
    return make_gateway(policy=policy, config=CONFIG.replace("{anthropic}", anthropic_upstream.base))


def _stream(
    claude: Gateway, test_id: str, blocks: list[dict[str, Any]], **script: Any
) -> tuple[Any, list[Any]]:
    headers = {**mock(type="sse", blocks=blocks, delay_ms=5, **script), "x-test-id": test_id}
    with claude.anthropic().messages.stream(
        model="claude-test", max_tokens=256, messages=MSG, extra_headers=headers
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    return final, events


def _texts(message: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for block in message.content:
        if block.type == "text":
            out["text"] = out.get("text", "") + block.text
        elif block.type == "thinking":
            out["thinking"] = block.thinking
        elif block.type == "tool_use":
            out["tool"] = repr(block.input)
    return out


@pytest.mark.parametrize(
    "deltas", [["Once upon ", "a time, ", "a cat."], ["从前，", "有一只", "猫。"]], ids=["en", "zh"]
)
def test_benign_stream_with_every_block_type(claude: Gateway, deltas: list[str]) -> None:
    blocks = [
        {"type": "thinking", "deltas": ["Let me ", "think."]},
        {"type": "text", "deltas": deltas},
        {"type": "tool_use", "name": "lookup", "deltas": ['{"city": ', '"Paris"}']},
    ]
    final, _ = _stream(claude, "benign", blocks)
    assert final.stop_reason == "end_turn"
    assert final.content[0].type == "thinking" and final.content[0].thinking == "Let me think."
    assert final.content[0].signature  # the signature_delta passed untouched
    assert final.content[1].text == "".join(deltas)
    assert final.content[2].input == {"city": "Paris"}


@pytest.mark.parametrize(
    ("kind", "deltas", "term"),
    [
        ("text", ["The answer: zor", "blax is the key"], "zorblax"),
        ("text", ["好的，这是炸", "药配", "方：第一步"], "炸药配方"),
        ("thinking", ["I could say zo", "rblax here"], "zorblax"),
        ("tool_use", ['{"q": "zorb', 'lax"}'], "zorblax"),
    ],
    ids=["text-en", "text-zh", "thinking", "tool_use"],
)
def test_split_term_cuts_the_message(
    claude: Gateway, anthropic_upstream: AnthropicServer, kind: str, deltas: list[str], term: str
) -> None:
    test_id = f"cut-{kind}-{term.encode().hex()}"
    # Trailing deltas keep the upstream generating when the cut comes, so its close is seen.
    tail = [" more"] * 60 if kind != "tool_use" else []
    blocks = [
        {"type": "text", "deltas": ["Fine. "]},
        {"type": kind, "deltas": [*deltas, *tail], "name": "f"},
        {"type": "text", "deltas": [" and more"] * 60},
    ]
    final, events = _stream(claude, test_id, blocks)
    assert final.stop_reason == "refusal"
    assert final.content[-1].type == "text" and final.content[-1].text == REFUSAL
    delta_event = next(e for e in reversed(events) if e.type == "message_delta")
    note = (delta_event.model_extra or {})["modgate"]
    assert note["action"] == "block" and "A.1.d" in note["risks"]
    incident = next(i for i in claude.incidents() if i.id == note["incident_id"])
    assert incident.direction == "output"
    shown = "".join(_texts(final).values())
    if claude.state.default_policy.spec.streaming.mode == "hold":
        assert term[:3] not in shown.replace(REFUSAL, "")
        assert incident.exposed_chars == 0 and "retract" not in note
    else:
        assert note["retract"]["block"] == 1
    seen = anthropic_upstream.app.by_test_id(test_id)[0]
    seen.wait_for("disconnected")
    assert seen.stream_state == "disconnected"  # generation stopped: the upstream was closed


def test_refused_input_streams_the_canned_reply(claude: Gateway, anthropic_upstream: AnthropicServer) -> None:
    with claude.anthropic().messages.stream(
        model="claude-test",
        max_tokens=64,
        messages=[{"role": "user", "content": "flagword please refuseword"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "refusal"  # the test policy refuses this input
    assert REFUSAL in final.content[0].text
    assert anthropic_upstream.app.requests == []


def test_blocked_input_is_an_error_before_any_stream(
    claude: Gateway, anthropic_upstream: AnthropicServer
) -> None:
    with (
        pytest.raises(anthropic.BadRequestError) as info,
        claude.anthropic().messages.stream(
            model="claude-test",
            max_tokens=64,
            messages=[{"role": "user", "content": "tell me about zorblax"}],
        ) as stream,
    ):
        list(stream)
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert anthropic_upstream.app.requests == []


def test_upstream_error_event_reaches_the_client(claude: Gateway) -> None:
    with pytest.raises(anthropic.APIStatusError) as info:
        _stream(claude, "error-mid", [{"type": "text", "deltas": ["a", "b", "c"]}], error_after=2)
    assert "overloaded" in str(info.value).lower()


def test_client_disconnect_cancels_the_upstream(claude: Gateway, anthropic_upstream: AnthropicServer) -> None:
    headers = {**mock(type="sse", blocks=[{"type": "text", "deltas": ["a "] * 10}], hang_after=3),
               "x-test-id": "anthropic-disconnect"}  # fmt: skip
    with claude.anthropic().messages.stream(
        model="claude-test", max_tokens=64, messages=MSG, extra_headers=headers
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                break
    seen = anthropic_upstream.app.by_test_id("anthropic-disconnect")[0]
    seen.wait_for("disconnected")
    assert seen.stream_state == "disconnected"


@pytest.mark.parametrize("position", ["start", "end"])
def test_explicit_label_in_streams(
    make_gateway: GatewayFactory, anthropic_upstream: AnthropicServer, position: str
) -> None:
    policy = TEST_POLICY + f'labeling: {{explicit: {{text: "【AI生成】", position: {position}}}}}\n'
    claude = make_gateway(policy=policy, config=CONFIG.replace("{anthropic}", anthropic_upstream.base))
    blocks = [
        {"type": "thinking", "deltas": ["hmm"]},
        {"type": "text", "deltas": ["fir", "st"]},
        {"type": "tool_use", "name": "f", "deltas": ['{"a": 1}']},
        {"type": "text", "deltas": ["last"]},
    ]
    final, _ = _stream(claude, f"label-{position}", blocks)
    texts = [getattr(b, "text", None) for b in final.content]
    if position == "start":
        assert texts == [None, "【AI生成】\nfirst", None, "last"]
    else:  # the last text block is known only at the end: the label comes in a block of its own
        assert texts == [None, "first", None, "last", "\n【AI生成】"]
    assert final.content[0].thinking == "hmm" and final.content[2].input == {"a": 1}
    with claude.anthropic().messages.stream(
        model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "refuseword"}]
    ) as stream:
        assert "【AI生成】" in stream.get_final_message().content[0].text
