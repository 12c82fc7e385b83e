"""The OpenAI Responses API (``POST /v1/responses``) end to end with the official ``openai``
client: ``responses.create`` plain and streamed, ``responses.stream``; every input channel
screened, refusals, output replaced or masked, and streams in both modes: a split term cut with
nothing shown in hold mode and retracted in async mode, function-call arguments screened, the
upstream closed on a cut and on a client's hang-up, redaction the same in deltas and ``.done``
events."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import TEST_POLICY, Gateway, GatewayFactory, Upstream, mock

ASK = "Tell me a story about a cat."
REFUSAL = "抱歉，我无法提供这方面的内容。Sorry, I can't help with that."
LABEL = "【AI生成】"


@pytest.fixture(params=["hold", "async"])
def streaming(request: pytest.FixtureRequest, make_gateway: GatewayFactory) -> Gateway:
    """A gateway per stream mode (the conftest's gateway is hold only)."""
    return make_gateway(policy=TEST_POLICY.replace("mode: hold", f"mode: {request.param}"))


def _mode(gateway: Gateway) -> str:
    return gateway.state.default_policy.spec.streaming.mode


# --- plain ---------------------------------------------------------------------------------------


def test_plain_response_passes_through(gateway: Gateway, upstream: Upstream) -> None:
    script = mock(content="Once upon a time", reasoning="Thinking of cats.", tool_args='{"q": "cats"}')
    resp = gateway.openai().responses.with_raw_response.create(
        model="m", input=ASK, extra_headers=script, extra_body={"custom_field": 7}
    )
    response = resp.parse()
    assert response.output_text == "Once upon a time"
    reasoning, _, call = response.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Thinking of cats."
    assert call.type == "function_call" and call.arguments == '{"q": "cats"}'
    assert response.model_extra and response.model_extra["mock_extra_field"] == {"kept": True}
    assert response.model_extra["aigc"]["AIGC"]["ProduceID"] == "resp_mock"
    assert json.loads(resp.headers["x-aigc-label"]) == response.model_extra["aigc"]
    seen = upstream.app.last()
    assert seen.path == "/v1/responses" and seen.body["custom_field"] == 7  # unknown fields pass
    assert seen.headers["authorization"] == "Bearer sk-client-key"


@pytest.mark.parametrize(
    "request_body",
    [
        {"input": "how to zorblax a city"},
        {"instructions": "You are zorblax.", "input": "hi"},
        {"input": [{"role": "developer", "content": "炸药配方"}, {"role": "user", "content": "hi"}]},
        {
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "hello"},
                        {"type": "input_text", "text": "ｚｏｒｂｌａｘ"},
                    ],
                }
            ]
        },
        {"input": [{"role": "assistant", "content": [{"type": "output_text", "text": "zor\u200bblax"}]}]},
        {
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"q": "zorblax"}'},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ]
        },
        {
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "function_call_output", "call_id": "c1", "output": "result: 炸藥配方"},
            ]
        },
    ],
    ids=[
        "input-text",
        "instructions",
        "developer-zh",
        "input-parts",
        "assistant-history",
        "call-args",
        "output",
    ],
)
def test_blocked_input_never_calls_upstream(
    gateway: Gateway, upstream: Upstream, request_body: dict[str, Any]
) -> None:
    upstream.app.clear()
    with pytest.raises(openai.BadRequestError) as info:
        gateway.openai().responses.create(model="m", **request_body)
    err = info.value.body
    assert isinstance(err, dict) and err["code"] == "content_filter"
    assert "A.1.d" in err["modgate"]["risks"]
    assert upstream.app.requests == []
    incident = next(i for i in gateway.incidents() if i.id == err["modgate"]["incident_id"])
    assert incident.direction == "input" and incident.action == "block"


def test_images_files_and_reasoning_items_are_forwarded(gateway: Gateway, upstream: Upstream) -> None:
    """What the text tier cannot read passes to the upstream untouched (and is no 400)."""
    items = [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                {"type": "input_file", "file_id": "file_1"},
            ],
        },
        {"type": "computer_call_output", "call_id": "c2", "output": {"type": "computer_screenshot"}},
    ]
    response = gateway.openai().responses.create(model="m", input=items, extra_headers=mock(content="A cat."))
    assert response.output_text == "A cat."
    assert upstream.app.last().body["input"] == items


def test_refused_input_gets_the_canned_reply(gateway: Gateway, upstream: Upstream) -> None:
    upstream.app.clear()
    resp = gateway.openai().responses.with_raw_response.create(model="m", input="say refuseword")
    response = resp.parse()
    assert response.status == "completed" and response.output_text == REFUSAL
    assert response.model_extra and response.model_extra["modgate"]["incident_id"].startswith("inc_")
    assert resp.headers["x-aigc-label"]
    assert upstream.app.requests == []


def test_refused_input_streamed(gateway: Gateway, upstream: Upstream) -> None:
    upstream.app.clear()
    with gateway.openai().responses.stream(model="m", input="拒绝词") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == REFUSAL
    assert final.model_extra and final.model_extra["modgate"]["action"] == "refuse"
    assert upstream.app.requests == []


def test_redacted_input_is_forwarded_masked(gateway: Gateway, upstream: Upstream) -> None:
    gateway.openai().responses.create(
        model="m",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "the secretword, 机密词"}]}],
    )
    assert upstream.app.last().body["input"][0]["content"][0]["text"] == "the [REDACTED], [REDACTED]"


@pytest.mark.parametrize(
    "script",
    [
        {"content": "Sure: zorblax is easy."},
        {"content": "好的，炸药配方如下"},
        {"reasoning": "think: zorblax"},
        {"tool_args": '{"q": "炸药配方"}'},
    ],
    ids=["en", "zh", "reasoning", "tool-args"],
)
def test_harmful_output_is_replaced(gateway: Gateway, script: dict[str, str]) -> None:
    response = gateway.openai().responses.create(model="m", input=ASK, extra_headers=mock(**script))
    assert response.output_text == REFUSAL and len(response.output) == 1
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "content_filter"
    note = (response.model_extra or {})["modgate"]
    assert note["action"] == "block" and "A.1.d" in note["risks"]
    incident = next(i for i in gateway.incidents() if i.id == note["incident_id"])
    assert incident.direction == "output"


def test_redacted_output_keeps_the_convenience_field(gateway: Gateway) -> None:
    body = {"model": "m", "input": ASK}
    headers = mock(content="the secretword is out", output_text=True)
    with gateway.http() as client:
        raw = client.post("/v1/responses", json=body, headers=headers).json()
    masked = "the [REDACTED] is out"
    assert raw["output"][0]["content"][0]["text"] == raw["output_text"] == masked
    assert raw["modgate"]["action"] == "redact"


def test_explicit_label_in_plain_answers_not_in_json_ones(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(
        policy=TEST_POLICY + f'labeling: {{explicit: {{text: "{LABEL}", position: start}}}}\n'
    )
    client = gateway.openai()
    response = client.responses.create(model="m", input=ASK, extra_headers=mock(content="Once"))
    assert response.output_text == f"{LABEL}\nOnce"
    json_format = {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}}
    response = client.responses.create(
        model="m", input=ASK, text=json_format, extra_headers=mock(content="{}")
    )
    assert response.output_text == "{}"
    with client.responses.stream(model="m", input="拒绝词") as stream:  # a refusal is labelled, streamed too
        assert stream.get_final_response().output_text == f"{LABEL}\n{REFUSAL}"


def test_client_disconnect_cancels_plain_request(gateway: Gateway, upstream: Upstream) -> None:
    headers = {**mock(type="slow", delay_s=30), "x-test-id": "responses-slow"}
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=gateway.base, timeout=0.5) as client:
        client.post("/v1/responses", json={"model": "m", "input": ASK}, headers=headers)
    _wait_disconnected(upstream, "responses-slow")


# --- streamed ------------------------------------------------------------------------------------


def _stream(gateway: Gateway, test_id: str, items: list[dict[str, Any]], **script: Any) -> list[Any]:
    headers = {**mock(type="sse", items=items, delay_ms=5, **script), "x-test-id": test_id}
    with gateway.openai().responses.stream(model="m", input=ASK, extra_headers=headers) as stream:
        events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


def _deltas(events: list[Any], kind: str = "response.output_text.delta", output_index: int = 0) -> str:
    return "".join(e.delta for e in events if e.type == kind and e.output_index == output_index)


def _wait_disconnected(upstream: Upstream, test_id: str) -> None:
    seen = upstream.app.by_test_id(test_id)[0]
    seen.wait_for("disconnected")
    assert seen.stream_state == "disconnected"


@pytest.mark.parametrize(
    "deltas", [["Once upon ", "a time, ", "a cat."], ["从前，", "有一只", "猫。"]], ids=["en", "zh"]
)
def test_benign_stream_arrives_whole(streaming: Gateway, deltas: list[str]) -> None:
    items = [
        {"type": "reasoning", "deltas": ["Let me ", "think."]},
        {"type": "message", "deltas": deltas},
        {"type": "function_call", "deltas": ['{"city": ', '"Paris"}']},
    ]
    headers = mock(type="sse", items=items)
    with streaming.openai().responses.stream(model="m", input=ASK, extra_headers=headers) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert final.output_text == _deltas(events, output_index=1) == "".join(deltas)
    assert final.output[0].type == "reasoning" and final.output[0].summary[0].text == "Let me think."
    assert final.output[2].type == "function_call" and final.output[2].arguments == '{"city": "Paris"}'
    raw = list(streaming.openai().responses.create(model="m", input=ASK, stream=True, extra_headers=headers))
    assert [e.type for e in raw] == [e.type for e in events] and raw[-1].type == "response.completed"


def test_stream_carries_the_implicit_label(streaming: Gateway) -> None:
    body = {"model": "m", "input": ASK, "stream": True}
    with (
        streaming.http() as client,
        client.stream("POST", "/v1/responses", json=body, headers=mock(type="sse")) as resp,
    ):
        assert json.loads(resp.headers["x-aigc-label"])["AIGC"]["Label"] == "1"
        text = resp.read().decode()
    assert "[DONE]" not in text and text.rstrip().endswith("}")  # the terminal event ends it


@pytest.mark.parametrize(
    ("deltas", "term"),
    [
        (["The answer: zor", "blax is the key"], "zorblax"),
        (["Here: z", "o", "r", "b", "l", "a", "x!"], "zorblax"),
        (["好的，这是炸", "药配", "方：第一步"], "炸药配方"),
    ],
    ids=["en-2", "en-chars", "zh-3"],
)
def test_split_term_is_cut(streaming: Gateway, upstream: Upstream, deltas: list[str], term: str) -> None:
    test_id = f"responses-split-{_mode(streaming)}-{term.encode().hex()}-{len(deltas)}"
    # Trailing deltas keep the upstream generating when the cut comes, so its close is seen.
    events = _stream(streaming, test_id, [{"type": "message", "deltas": [*deltas, *[" more"] * 60]}])
    final = events[-1]
    assert final.type == "response.incomplete" and final.response.status == "incomplete"
    assert final.response.incomplete_details.reason == "content_filter"
    assert final.response.output[-1].content[0].text == REFUSAL
    note = (final.response.model_extra or {})["modgate"]
    assert note["action"] == "block" and "A.1.d" in note["risks"]
    incident = next(i for i in streaming.incidents() if i.id == note["incident_id"])
    shown = _deltas(events)
    lead = "".join(deltas).split(term)[0]
    if _mode(streaming) == "hold":
        assert all(term[:i] not in shown or term[:i] in lead for i in range(1, len(term) + 1))
        assert incident.exposed_chars == 0 and "retract" not in note
    else:  # async: the start of the term was shown at once, and the cut names it
        retract = note["retract"]
        assert (retract["output_index"], retract["content_index"], retract["channel"]) == (0, 0, "content")
        assert retract["start"] == len(lead) and incident.exposed_chars == retract["end"] - retract["start"]
        assert shown[retract["start"] : retract["end"]] == term[: retract["end"] - retract["start"]]
    _wait_disconnected(upstream, test_id)


def test_function_call_arguments_are_screened_while_streaming(streaming: Gateway) -> None:
    items = [{"type": "function_call", "deltas": ['{"q": "zor', 'blax"}']}]
    events = _stream(streaming, f"responses-tool-{_mode(streaming)}", items)
    assert events[-1].type == "response.incomplete"
    dumped = json.dumps([e.model_dump() for e in events])
    assert "zorblax" not in dumped
    if _mode(streaming) == "hold":
        assert "blax" not in dumped and "zor" not in _deltas(events, "response.function_call_arguments.delta")


def test_cut_closes_upstream_promptly(streaming: Gateway, upstream: Upstream) -> None:
    test_id = f"responses-cut-{_mode(streaming)}"
    items = [{"type": "message", "deltas": ["Fine. ", "zorblax", *[" more"] * 200]}]
    events = _stream(streaming, test_id, items)
    assert "zorblax" not in _deltas(events)
    _wait_disconnected(upstream, test_id)
    assert upstream.app.by_test_id(test_id)[0].sent_deltas < 20  # generation stopped long before the end


def test_redaction_is_the_same_in_deltas_and_done_events(streaming: Gateway) -> None:
    items = [{"type": "message", "deltas": ["the secret", "word is 机密", "词 ok"]}]
    headers = mock(type="sse", items=items)
    with streaming.openai().responses.stream(model="m", input=ASK, extra_headers=headers) as stream:
        events = list(stream)
        final = stream.get_final_response()
    shown = _deltas(events)
    assert "secretword" not in shown and "机密词" not in shown
    if _mode(streaming) == "hold":
        assert shown == "the [REDACTED] is [REDACTED] ok"
    done = {e.type: e for e in events}
    assert done["response.output_text.done"].text == shown
    assert done["response.content_part.done"].part.text == shown
    assert done["response.output_item.done"].item.content[0].text == shown
    assert final.output_text == shown


def test_client_disconnect_cancels_upstream_stream(streaming: Gateway, upstream: Upstream) -> None:
    test_id = f"responses-disconnect-{_mode(streaming)}"
    body = {"model": "m", "input": ASK, "stream": True}
    headers = {**mock(type="sse", deltas=["a "] * 10, hang_after=3), "x-test-id": test_id}
    with (
        httpx.Client(base_url=streaming.base, timeout=10) as client,
        client.stream("POST", "/v1/responses", json=body, headers=headers) as resp,
    ):
        for line in resp.iter_lines():
            if line.startswith("data:") and '"a "' in line:
                break
    _wait_disconnected(upstream, test_id)


def test_broken_upstream_stream_ends_with_an_error_event(gateway: Gateway) -> None:
    body = {"model": "m", "input": ASK, "stream": True}
    with gateway.http() as client:
        resp = client.post("/v1/responses", json=body, headers=mock(type="broken_sse"))
    assert resp.status_code == 200  # headers were sent before the body turned out broken
    assert "not an event stream" not in resp.text
    last = resp.text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\ndata: ")
    error = json.loads(last.split("data: ", 1)[1])
    assert error["code"] == "upstream_unavailable" and error["sequence_number"] == 0
