"""AIGC labels end to end: the official openai client, the gateway and the scripted upstream.

GB 45438-2025 implicit label (``x-aigc-label`` header, ``aigc`` body field) and the policy's
explicit label text, plain and streamed, with several choices, tool calls, JSON answers,
refusals and errors.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gateway.policy_loader import load_policy
from tests.conftest import TEST_POLICY, Gateway, GatewayFactory, Upstream, mock

MSG = [{"role": "user", "content": "Tell me a story about a cat."}]
LABEL = "【AI生成】"
STORY = "Once upon a time"
PROVIDER = "示例智能科技 Example AI"
CONFIG = """
upstreams:
  main: {base_url: "{upstream}"}
policies:
  labels: policy.yaml
routes:
  - {upstream: main, policy: labels}
provider: "示例智能科技 Example AI"
"""
JSON_FORMATS = [
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}},
]


def _policy(labeling: str) -> str:
    return TEST_POLICY + f"labeling: {labeling}\n"


def _explicit(position: str) -> str:
    return _policy(f'{{explicit: {{text: "{LABEL}", position: {position}}}}}')


def _with_label(text: str, position: str) -> str:
    return f"{LABEL}\n{text}" if position == "start" else f"{text}\n{LABEL}"


def _aigc(headers: httpx.Headers) -> dict[str, Any]:
    raw = headers["x-aigc-label"]
    value: dict[str, Any] = json.loads(raw)
    assert raw == json.dumps(value, separators=(",", ":"))  # compact, ASCII-escaped: header-safe
    assert list(value) == ["AIGC"]
    return value["AIGC"]


def _stream_texts(chunks: list[Any]) -> dict[int, str]:
    texts: dict[int, str] = {}
    for c in chunks:
        for choice in c.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    return texts


def _version(gateway: Gateway) -> str:
    return load_policy(gateway.tmp / "policy.yaml").version


# --- implicit label --------------------------------------------------------------------------


def test_plain_response_has_header_and_body_field(gateway: Gateway) -> None:
    resp = gateway.openai().chat.completions.with_raw_response.create(
        model="m", messages=MSG, extra_headers=mock(content=STORY)
    )
    completion = resp.parse()
    label = _aigc(resp.headers)
    assert label == {
        "Label": "1",
        "ContentProducer": "modgate",  # the default provider name
        "ProduceID": "chatcmpl-mock",  # the completion's id
        "ReservedCode1": _version(gateway),
        "ContentPropagator": "modgate",
        "PropagateID": resp.headers["x-request-id"],
        "ReservedCode2": "",
    }
    assert completion.model_extra is not None and completion.model_extra["aigc"] == {"AIGC": label}
    assert completion.choices[0].message.content == STORY  # no explicit label configured
    assert completion.model_extra["mock_extra_field"] == {"kept": True}


def test_provider_name_comes_from_the_config(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(config=CONFIG)
    resp = gateway.openai().chat.completions.with_raw_response.create(
        model="m", messages=MSG, extra_headers=mock(content=STORY)
    )
    label = _aigc(resp.headers)
    assert "\\u793a" in resp.headers["x-aigc-label"]  # 示, escaped for the header
    assert label["ContentProducer"] == label["ContentPropagator"] == PROVIDER
    assert (resp.parse().model_extra or {})["aigc"]["AIGC"]["ContentProducer"] == PROVIDER


def test_stream_has_the_header(gateway: Gateway) -> None:
    resp = gateway.openai().chat.completions.with_raw_response.create(
        model="m", messages=MSG, stream=True, extra_headers=mock(type="sse", deltas=["Hi", " there"])
    )
    label = _aigc(resp.headers)
    rid = resp.headers["x-request-id"]
    assert label["ProduceID"] == label["PropagateID"] == rid  # no chunk named an id yet
    assert label["ContentProducer"] == "modgate" and label["Label"] == "1"
    chunks = list(resp.parse())
    assert _stream_texts(chunks) == {0: "Hi there"}
    assert all("aigc" not in (c.model_extra or {}) for c in chunks)


def test_implicit_label_can_be_turned_off(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(_policy(f'{{implicit: false, explicit: {{text: "{LABEL}"}}}}'))
    resp = gateway.openai().chat.completions.with_raw_response.create(
        model="m", messages=MSG, extra_headers=mock(content=STORY)
    )
    assert "x-aigc-label" not in resp.headers
    completion = resp.parse()
    assert "aigc" not in (completion.model_extra or {})
    assert completion.choices[0].message.content == _with_label(STORY, "end")  # end is the default


# --- explicit label --------------------------------------------------------------------------


@pytest.mark.parametrize("position", ["start", "end"])
def test_plain_choices_each_get_the_label(make_gateway: GatewayFactory, position: str) -> None:
    gateway = make_gateway(_explicit(position))
    resp = gateway.openai().chat.completions.with_raw_response.create(
        model="m", messages=MSG, n=2, extra_headers=mock(content=STORY, n=2)
    )
    completion = resp.parse()
    assert [c.message.content for c in completion.choices] == [_with_label(STORY, position)] * 2
    assert (completion.model_extra or {})["aigc"] == {"AIGC": _aigc(resp.headers)}


@pytest.mark.parametrize("position", ["start", "end"])
def test_streamed_choices_each_get_the_label_once(make_gateway: GatewayFactory, position: str) -> None:
    gateway = make_gateway(_explicit(position))
    deltas = ["从前，", "有一只猫。", " The end."]
    stream = gateway.openai().chat.completions.create(
        model="m", messages=MSG, n=2, stream=True, extra_headers=mock(type="sse", deltas=deltas, n=2)
    )
    chunks = list(stream)
    assert _stream_texts(chunks) == {i: _with_label("".join(deltas), position) for i in (0, 1)}
    finishes = [(ch.index, ch.finish_reason) for c in chunks for ch in c.choices if ch.finish_reason]
    assert sorted(finishes) == [(0, "stop"), (1, "stop")]


def test_tool_calls_keep_their_arguments(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(_explicit("end"))
    args = '{"city": "巴黎"}'
    client = gateway.openai()
    pure = client.chat.completions.create(
        model="m", messages=MSG, extra_headers=mock(content=None, tool_args=args)
    )
    message = pure.choices[0].message
    assert message.content is None and message.tool_calls is not None
    assert message.tool_calls[0].function.arguments == args  # type: ignore[union-attr]
    mixed = client.chat.completions.create(
        model="m", messages=MSG, extra_headers=mock(content="Looking it up.", tool_args=args)
    )
    message = mixed.choices[0].message
    assert message.content == _with_label("Looking it up.", "end")
    assert message.tool_calls is not None
    assert message.tool_calls[0].function.arguments == args  # type: ignore[union-attr]


@pytest.mark.parametrize("position", ["start", "end"])
def test_streamed_tool_call_gets_no_label(make_gateway: GatewayFactory, position: str) -> None:
    gateway = make_gateway(_explicit(position))
    parts = ['{"city": ', '"巴黎"}']
    stream = gateway.openai().chat.completions.create(
        model="m", messages=MSG, stream=True, extra_headers=mock(type="sse", channel="tool", deltas=parts)
    )
    chunks = list(stream)
    assert LABEL not in json.dumps([c.model_dump() for c in chunks], ensure_ascii=False)
    arguments = "".join(
        tc.function.arguments or ""
        for c in chunks
        for ch in c.choices
        for tc in ch.delta.tool_calls or ()
        if tc.function is not None
    )
    assert arguments == "".join(parts)


@pytest.mark.parametrize("response_format", JSON_FORMATS, ids=["json_object", "json_schema"])
def test_json_answers_carry_only_the_implicit_label(
    make_gateway: GatewayFactory, response_format: dict[str, Any]
) -> None:
    gateway = make_gateway(_explicit("end"))
    client = gateway.openai()
    answer = '{"answer": "猫"}'
    resp = client.chat.completions.with_raw_response.create(
        model="m", messages=MSG, response_format=response_format, extra_headers=mock(content=answer)
    )
    completion = resp.parse()
    assert completion.choices[0].message.content == answer
    assert json.loads(completion.choices[0].message.content or "") == {"answer": "猫"}
    assert (completion.model_extra or {})["aigc"] == {"AIGC": _aigc(resp.headers)}
    streamed = client.chat.completions.with_raw_response.create(
        model="m",
        messages=MSG,
        stream=True,
        response_format=response_format,
        extra_headers=mock(type="sse", deltas=['{"answer": ', '"猫"}']),
    )
    assert _aigc(streamed.headers)["Label"] == "1"
    assert _stream_texts(list(streamed.parse())) == {0: answer}


# --- refusals and errors ---------------------------------------------------------------------


@pytest.mark.parametrize("position", ["start", "end"])
def test_gateway_refusal_is_labelled(make_gateway: GatewayFactory, upstream: Upstream, position: str) -> None:
    gateway = make_gateway(_explicit(position))
    refusal = gateway.state.default_policy.spec.refusal.message
    client = gateway.openai()
    refused = [{"role": "user", "content": "say refuseword"}]
    resp = client.chat.completions.with_raw_response.create(model="m", messages=refused, n=2)
    completion = resp.parse()
    assert [c.message.content for c in completion.choices] == [_with_label(refusal, position)] * 2
    label = _aigc(resp.headers)
    assert label["ProduceID"] == completion.id and completion.id.startswith("chatcmpl-modgate")
    assert (completion.model_extra or {})["aigc"] == {"AIGC": label}
    streamed = client.chat.completions.with_raw_response.create(model="m", messages=refused, stream=True)
    assert _aigc(streamed.headers)["PropagateID"] == streamed.headers["x-request-id"]
    assert _stream_texts(list(streamed.parse())) == {0: _with_label(refusal, position)}


def test_output_cut_in_a_stream_labels_the_refusal(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(_explicit("end"))
    refusal = gateway.state.default_policy.spec.refusal.message
    stream = gateway.openai().chat.completions.create(
        model="m", messages=MSG, stream=True, extra_headers=mock(type="sse", deltas=["Fine. ", "zorblax"])
    )
    chunks = list(stream)
    text = _stream_texts(chunks)[0]
    assert "zorblax" not in text and text.endswith(f"{refusal}\n{LABEL}") and text.count(LABEL) == 1
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_error_responses_carry_no_label(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(_explicit("end"))
    body = {"model": "m", "messages": MSG}
    with gateway.http() as client:
        failed = client.post("/v1/chat/completions", json=body, headers=mock(type="status", status=500))
        failed_stream = client.post(
            "/v1/chat/completions", json={**body, "stream": True}, headers=mock(type="status", status=503)
        )
        blocked = client.post(
            "/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": "zorblax"}]}
        )
        invalid = client.post("/v1/chat/completions", json={"model": "m"})
    for resp, status in [(failed, 500), (failed_stream, 503), (blocked, 400), (invalid, 400)]:
        assert resp.status_code == status
        assert "x-aigc-label" not in resp.headers
        assert "aigc" not in resp.json() and "error" in resp.json()
        assert LABEL not in resp.text
