"""End to end with the official openai client: gateway and scripted upstream on loopback."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import Gateway, Upstream, mock

MSG = [{"role": "user", "content": "Tell me a story about a cat."}]


def test_plain_completion_passes_through(gateway: Gateway, upstream: Upstream) -> None:
    client = gateway.openai()
    resp = client.chat.completions.with_raw_response.create(
        model="m",
        messages=MSG,
        extra_headers=mock(content="Once upon a time"),
        extra_body={"custom_field": 7},
    )
    completion = resp.parse()
    assert completion.choices[0].message.content == "Once upon a time"
    assert resp.headers["x-request-id"]
    assert resp.headers["x-upstream-header"] == "yes"
    seen = upstream.app.last()
    assert seen.path == "/v1/chat/completions"
    assert seen.body["custom_field"] == 7  # unknown fields pass untouched
    assert seen.headers["authorization"] == "Bearer sk-client-key"  # no gateway keys: forwarded


@pytest.mark.parametrize(
    "text", ["how to zorblax a city", "请告诉我炸药配方", "ｚｏｒｂｌａｘ", "zor\u200bblax", "炸藥配方"]
)
def test_input_block_never_calls_upstream(gateway: Gateway, upstream: Upstream, text: str) -> None:
    upstream.app.clear()
    client = gateway.openai()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
    err = info.value.body
    assert isinstance(err, dict)
    assert err["code"] == "content_filter"
    incident_id = err["modgate"]["incident_id"]
    assert incident_id.startswith("inc_")
    assert "A.1.d" in err["modgate"]["risks"]
    assert upstream.app.requests == []
    incidents = {i.id: i for i in gateway.incidents()}
    assert incidents[incident_id].direction == "input"
    assert incidents[incident_id].action == "block"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "You are zorblax."}, {"role": "user", "content": "hi"}],
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "炸药配方"}],
            }
        ],
        [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"q": "zorblax"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
        [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "c1", "content": "result: zorblax"},
        ],
    ],
    ids=["system", "multimodal-zh", "assistant-tool-args", "tool-result"],
)
def test_every_input_channel_is_screened(gateway: Gateway, upstream: Upstream, messages: list) -> None:
    upstream.app.clear()
    with pytest.raises(openai.BadRequestError):
        gateway.openai().chat.completions.create(model="m", messages=messages)
    assert upstream.app.requests == []


def test_input_refuse_returns_canned_reply(gateway: Gateway, upstream: Upstream) -> None:
    upstream.app.clear()
    completion = gateway.openai().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "say refuseword"}], n=2
    )
    assert [c.finish_reason for c in completion.choices] == ["content_filter", "content_filter"]
    assert "Sorry" in (completion.choices[0].message.content or "")
    assert completion.model_extra and completion.model_extra["modgate"]["incident_id"].startswith("inc_")
    assert upstream.app.requests == []


def test_input_refuse_streamed(gateway: Gateway, upstream: Upstream) -> None:
    stream = gateway.openai().chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "拒绝词"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "抱歉" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"
    assert chunks[-1].usage is not None


def test_input_redact_masks_before_forwarding(gateway: Gateway, upstream: Upstream) -> None:
    gateway.openai().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "the secretword and 机密词 here"}]
    )
    sent = upstream.app.last().body["messages"][0]["content"]
    assert sent == "the [REDACTED] and [REDACTED] here"


def test_input_flag_forwards_and_records(gateway: Gateway, upstream: Upstream) -> None:
    completion = gateway.openai().chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "a flagword appears"}],
        extra_headers=mock(content="fine"),
    )
    assert completion.choices[0].message.content == "fine"
    assert upstream.app.last().body["messages"][0]["content"] == "a flagword appears"
    assert any(i.action == "flag" and i.direction == "input" for i in gateway.incidents())


@pytest.mark.parametrize("content", ["Sure: zorblax is easy.", "好的，炸药配方如下"])
def test_output_block_replaced_with_refusal(gateway: Gateway, content: str) -> None:
    completion = gateway.openai().chat.completions.create(
        model="m", messages=MSG, extra_headers=mock(content=content)
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "content_filter"
    assert "zorblax" not in (choice.message.content or "") and "炸药" not in (choice.message.content or "")
    assert completion.model_extra and completion.model_extra["modgate"]["action"] == "block"
    incidents = gateway.incidents()
    assert (
        incidents[0].direction == "output"
        and incidents[0].id == completion.model_extra["modgate"]["incident_id"]
    )


def test_output_reasoning_and_tool_args_screened(gateway: Gateway) -> None:
    for script in ({"reasoning": "think: zorblax"}, {"tool_args": '{"q": "炸药配方"}'}):
        completion = gateway.openai().chat.completions.create(
            model="m", messages=MSG, extra_headers=mock(**script)
        )
        assert completion.choices[0].finish_reason == "content_filter"


def test_output_redact_pii(gateway: Gateway) -> None:
    completion = gateway.openai().chat.completions.create(
        model="m", messages=MSG, extra_headers=mock(content="Call 13812345678 or mail a.b@example.com now")
    )
    content = completion.choices[0].message.content or ""
    assert "13812345678" not in content and "a.b@example.com" not in content
    assert content == "Call [REDACTED] or mail [REDACTED] now"
