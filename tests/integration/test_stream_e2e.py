"""Streaming through the gateway: hold mode, split terms, cuts, cancellation, odd upstreams."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.conftest import TEST_POLICY, Gateway, GatewayFactory, Upstream, mock

MSG = [{"role": "user", "content": "Tell me something."}]


@pytest.fixture(params=["hold", "async"])
def gateway(request: pytest.FixtureRequest, make_gateway: GatewayFactory) -> Gateway:
    """Every test here runs in both stream modes (the conftest's gateway is hold only)."""
    return make_gateway(policy=TEST_POLICY.replace("mode: hold", f"mode: {request.param}"))


def _stream_text(gateway: Gateway, test_id: str, **script: object) -> tuple[str, list]:
    stream = gateway.openai().chat.completions.create(
        model="m",
        messages=MSG,
        stream=True,
        extra_headers={**mock(type="sse", **script), "x-test-id": test_id},
    )
    chunks = list(stream)
    text = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
    return text, chunks


def test_benign_stream_arrives_whole_and_in_order(gateway: Gateway, upstream: Upstream) -> None:
    deltas = [f"word{i} " for i in range(50)] + ["你好，", "世界。"]
    text, chunks = _stream_text(gateway, "benign", deltas=deltas)
    assert text == "".join(deltas)
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("deltas", "term"),
    [
        (["The answer: zor", "blax is the key"], "zorblax"),
        (["Here: z", "o", "r", "b", "l", "a", "x!"], "zorblax"),
        (["好的，这是炸", "药配", "方：第一步"], "炸药配方"),
        (["full width ｚｏｒ", "ｂｌａｘ"], "ｚｏｒｂｌａｘ"),
        (["zero zor\u200b", "blax"], "zor\u200bblax"),
    ],
    ids=["en-2", "en-chars", "zh-3", "fullwidth", "zero-width"],
)
def test_split_term_is_cut_with_nothing_exposed_in_hold_mode(
    gateway: Gateway, request: pytest.FixtureRequest, deltas: list, term: str
) -> None:
    test_id = f"split-{term.encode().hex()}"
    text, chunks = _stream_text(gateway, test_id, deltas=deltas, delay_ms=5)
    assert term not in text
    last = chunks[-1]
    assert last.choices[0].finish_reason == "content_filter"
    note = last.model_extra["modgate"]
    assert note["action"] == "block" and "A.1.d" in note["risks"]
    incident = next(i for i in gateway.incidents() if i.id == note["incident_id"])
    assert incident.direction == "output"
    lead = "".join(deltas).split(term)[0]
    if request.node.callspec.params["gateway"] == "hold":
        for i in range(1, len(term) + 1):  # not even the first part of the term reached the client
            assert term[:i] not in text or term[:i] in lead
        assert incident.exposed_chars == 0 and "retract" not in note
    elif "retract" in note:  # async: the start of the term was shown at once, and the cut names it
        retract = note["retract"]
        assert (
            retract["start"] == len(lead) and incident.exposed_chars == retract["end"] - retract["start"] > 0
        )
        assert text[retract["start"] : retract["end"]] == term[: retract["end"] - retract["start"]]
    else:  # async, but the pieces came in one read: the term was whole before any of it went out
        assert incident.exposed_chars == 0 and term[:2] not in text.replace(lead, "")


def test_cut_closes_upstream_promptly(gateway: Gateway, upstream: Upstream) -> None:
    deltas = ["Fine. ", "zorblax", *[" more"] * 200]
    text, _ = _stream_text(gateway, "cut-close", deltas=deltas, delay_ms=10)
    assert "zorblax" not in text
    time.sleep(0.3)
    seen = upstream.app.by_test_id("cut-close")[0]
    assert seen.stream_state == "disconnected"
    assert seen.sent_deltas < 20  # generation stopped long before the 202 deltas


def test_client_disconnect_cancels_upstream_stream(gateway: Gateway, upstream: Upstream) -> None:
    body = {"model": "m", "messages": MSG, "stream": True}
    headers = {**mock(type="sse", deltas=["a "] * 10, hang_after=3), "x-test-id": "disconnect"}
    with (
        httpx.Client(base_url=gateway.base, timeout=10) as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        for line in resp.iter_lines():
            if line.startswith("data:") and '"a "' in line:
                break
    seen = upstream.app.by_test_id("disconnect")[0]
    seen.wait_for("disconnected")
    assert seen.stream_state == "disconnected"


def test_client_disconnect_cancels_plain_request(gateway: Gateway, upstream: Upstream) -> None:
    headers = {**mock(type="slow", delay_s=30), "x-test-id": "slow-plain"}
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=gateway.base, timeout=0.5) as client:
        client.post("/v1/chat/completions", json={"model": "m", "messages": MSG}, headers=headers)
    # The gateway notices the hang-up and drops its upstream request at once.
    seen = upstream.app.by_test_id("slow-plain")[0]
    seen.wait_for("disconnected")
    assert seen.stream_state == "disconnected"


@pytest.mark.parametrize("channel", ["reasoning_content", "tool"])
def test_reasoning_and_tool_arguments_streams_are_screened(gateway: Gateway, channel: str) -> None:
    stream = gateway.openai().chat.completions.create(
        model="m",
        messages=MSG,
        stream=True,
        extra_headers=mock(type="sse", channel=channel, deltas=['{"q": "zor', 'blax"}']),
    )
    chunks = list(stream)
    raw = json.dumps([c.model_dump() for c in chunks])
    assert "zorblax" not in raw and "blax" not in raw
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_tool_arguments_benign_reassemble(gateway: Gateway) -> None:
    stream = gateway.openai().chat.completions.create(
        model="m",
        messages=MSG,
        stream=True,
        extra_headers=mock(type="sse", channel="tool", deltas=['{"city": ', '"Par', 'is"}']),
    )
    args = "".join(
        (tc.function.arguments or "")
        for c in stream
        if c.choices
        for tc in (c.choices[0].delta.tool_calls or [])
        if tc.function
    )
    assert args == '{"city": "Paris"}'


def test_stream_pii_redacted_even_when_split(gateway: Gateway) -> None:
    text, _ = _stream_text(gateway, "pii", deltas=["call me at 138", "1234", "5678 today"])
    assert "13812345678" not in text and "138" not in text
    assert text == "call me at [REDACTED] today"


def test_keepalive_comments_and_missing_done(gateway: Gateway) -> None:
    text, _chunks = _stream_text(gateway, "odd", deltas=["one ", "two"], keepalive=True, no_done=True)
    assert text == "one two"


def test_byte_by_byte_upstream(gateway: Gateway, request: pytest.FixtureRequest) -> None:
    text, chunks = _stream_text(gateway, "bytes", deltas=["你好 ", "zor", "blax"], split_bytes=True)
    assert "zorblax" not in text and chunks[-1].choices[0].finish_reason == "content_filter"
    note = chunks[-1].model_extra["modgate"]
    if request.node.callspec.params["gateway"] == "hold":
        assert "zor" not in text
    elif "zor" in text:  # async: what went out before the term was whole is named for retraction
        assert text[note["retract"]["start"] :].startswith("zor")


def test_upstream_error_status_keeps_status(gateway: Gateway) -> None:
    client = gateway.openai()
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(
            model="m",
            messages=MSG,
            stream=True,
            extra_headers=mock(
                type="status",
                status=429,
                body={"error": {"message": "slow down", "type": "rate"}},
                headers={"retry-after": "3"},
            ),
        )
    assert info.value.response.headers["retry-after"] == "3"
    assert "slow down" in str(info.value)


def test_broken_sse_ends_cleanly(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.base, timeout=10) as client:
        resp = client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": MSG, "stream": True},
            headers=mock(type="broken_sse"),
        )
    assert resp.status_code == 200  # headers were sent before the body turned out broken
    assert "not an event stream" not in resp.text
    events = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
    assert events[-1]["error"]["code"] == "upstream_unavailable"


def test_upstream_error_event_reaches_sdk_as_error(gateway: Gateway) -> None:
    with pytest.raises(openai.APIError):
        list(
            gateway.openai().chat.completions.create(
                model="m",
                messages=MSG,
                stream=True,
                extra_headers=mock(type="sse", deltas=["x", "y"], error_after=1),
            )
        )


def test_word_bounded_term_at_chunk_end_waits_for_next_chunk(make_gateway) -> None:  # type: ignore[no-untyped-def]
    policy = """
name: boundary
extends: default
classifiers:
  words:
    type: lexicon
    terms:
      A.2.i: ["ass"]
"""
    gateway = make_gateway(policy=policy)
    text, chunks = _stream_text(gateway, "boundary", deltas=["Your ass", "essment is done."])
    assert text == "Your assessment is done."
    assert chunks[-1].choices[0].finish_reason == "stop"
    text, chunks = _stream_text(gateway, "boundary2", deltas=["Your ass", " is done."])
    assert "ass" not in text
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_flag_far_into_a_long_stream_is_recorded_and_the_stream_ends_cleanly(gateway: Gateway) -> None:
    lead = [f"sentence number {i} is fine. " for i in range(20)]  # far past the check windows
    text, chunks = _stream_text(gateway, "far-flag", deltas=[*lead, "a flag", "word here", " and more."])
    assert text.endswith("a flagword here and more.")
    assert chunks[-1].choices[0].finish_reason == "stop"
    [incident] = [i for i in gateway.incidents() if i.action == "flag"]
    start, end = incident.offsets[0]
    assert "".join([*lead, "a flag", "word here"])[start:end] == "flagword"
