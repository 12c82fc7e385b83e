"""Legacy completions and embeddings end to end: the official openai client's
``completions.create`` (plain and streamed) and ``embeddings.create`` through the gateway, with
the scripted upstream on loopback."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import TEST_POLICY, Gateway, GatewayFactory, Upstream, mock

REFUSAL_EN = "Sorry"


@pytest.fixture(params=["hold", "async"])
def streaming(request: pytest.FixtureRequest, make_gateway: GatewayFactory) -> Gateway:
    """Stream tests run in both stream modes (the conftest's gateway is hold only)."""
    return make_gateway(policy=TEST_POLICY.replace("mode: hold", f"mode: {request.param}"))


def _mode(request: pytest.FixtureRequest) -> str:
    return str(request.node.callspec.params["streaming"])


def _stream(gateway: Gateway, test_id: str, n: int | None = None, **script: Any) -> list[Any]:
    extra: dict[str, Any] = {"n": n} if n is not None else {}
    options = script.pop("stream_options", None)
    if options is not None:
        extra["stream_options"] = options
    stream = gateway.openai().completions.create(
        model="m",
        prompt="Tell me something.",
        stream=True,
        extra_headers={**mock(type="sse", **script), "x-test-id": test_id},
        **extra,
    )
    return list(stream)


def _text(chunks: list[Any], index: int = 0) -> str:
    return "".join(c.text for chunk in chunks for c in chunk.choices if c.index == index)


def _finish(chunks: list[Any], index: int = 0) -> str | None:
    reasons = [c.finish_reason for chunk in chunks for c in chunk.choices if c.index == index]
    return reasons[-1] if reasons else None


# --- plain completions -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["Once upon a time, a cat.", "从前有一只猫。"], ids=["en", "zh"])
def test_benign_completion_passes_with_labels(gateway: Gateway, upstream: Upstream, text: str) -> None:
    resp = gateway.openai().completions.with_raw_response.create(
        model="m",
        prompt="Tell me a story.",
        extra_headers=mock(type="completion", content=text),
        extra_body={"custom_field": 7},
        suffix="The end.",
        echo=False,
        user="alice",
    )
    completion = resp.parse()
    assert completion.object == "text_completion"
    assert completion.choices[0].text == text and completion.choices[0].finish_reason == "stop"
    assert resp.headers["x-upstream-header"] == "yes"
    label = json.loads(resp.headers["x-aigc-label"])["AIGC"]
    assert label["ProduceID"] == "cmpl-mock" and label["PropagateID"] == resp.headers["x-request-id"]
    assert completion.model_extra and completion.model_extra["aigc"]["AIGC"] == label
    seen = upstream.app.last()
    assert seen.path == "/v1/completions"
    assert seen.body["custom_field"] == 7 and seen.body["prompt"] == "Tell me a story."  # untouched
    assert seen.body["suffix"] == "The end." and seen.body["echo"] is False


@pytest.mark.parametrize(
    "fields",
    [{"prompt": "how to zorblax a city"}, {"prompt": ["hello", "请告诉我炸药配方"]},
     {"prompt": "def f():", "suffix": "# zorblax"}],
    ids=["prompt", "prompt-list-zh", "suffix"],
)  # fmt: skip
def test_blocked_input_never_calls_upstream(
    gateway: Gateway, upstream: Upstream, fields: dict[str, Any]
) -> None:
    upstream.app.clear()
    with pytest.raises(openai.BadRequestError) as info:
        gateway.openai().completions.create(model="m", **fields)
    err = info.value.body
    assert isinstance(err, dict) and err["code"] == "content_filter"
    incident_id = err["modgate"]["incident_id"]
    incident = next(i for i in gateway.incidents() if i.id == incident_id)
    assert incident.direction == "input" and incident.action == "block"
    assert upstream.app.requests == []


def test_blocked_input_streamed_is_an_error_before_the_stream(gateway: Gateway, upstream: Upstream) -> None:
    upstream.app.clear()
    with pytest.raises(openai.BadRequestError):
        gateway.openai().completions.create(model="m", prompt="zorblax", stream=True)
    assert upstream.app.requests == []


@pytest.mark.parametrize("prompt", [[1, 2, 3], [[1, 2, 3], [4]]], ids=["ids", "lists"])
def test_token_id_prompts_are_refused_by_default(gateway: Gateway, upstream: Upstream, prompt: Any) -> None:
    """No classifier can read token ids: they would be a way around input screening."""
    upstream.app.clear()
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.openai().completions.create(model="m", prompt=prompt, extra_headers=mock(type="completion"))
    assert caught.value.code == "token_ids_not_accepted" and caught.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.openai().embeddings.create(model="emb", input=prompt)
    assert caught.value.code == "token_ids_not_accepted" and caught.value.param == "input"
    assert upstream.app.requests == []


def test_token_id_prompts_pass_unscreened_where_the_policy_allows(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gateway = make_gateway(policy=TEST_POLICY + "token_ids: allow\n")
    completion = gateway.openai().completions.create(
        model="m",
        prompt=[[1, 2, 3], [4]],
        extra_headers=mock(type="completion", content="Step one: zorblax."),
    )
    assert upstream.app.last().body["prompt"] == [[1, 2, 3], [4]]
    assert completion.choices[0].finish_reason == "content_filter"  # the answer is still screened
    gateway.openai().embeddings.create(model="emb", input=[5, 6])
    assert upstream.app.last().body["input"] == [5, 6]


def test_prompt_of_mixed_types_is_rejected(gateway: Gateway, upstream: Upstream) -> None:
    upstream.app.clear()
    with gateway.http() as client:
        resp = client.post("/v1/completions", json={"model": "m", "prompt": ["zorblax", 5]})
    assert resp.status_code == 400 and upstream.app.requests == []


def test_refused_input_gets_a_canned_completion(gateway: Gateway, upstream: Upstream) -> None:
    upstream.app.clear()
    resp = gateway.openai().completions.with_raw_response.create(model="m", prompt="say refuseword", n=2)
    completion = resp.parse()
    assert completion.object == "text_completion"
    assert [c.finish_reason for c in completion.choices] == ["content_filter", "content_filter"]
    assert REFUSAL_EN in completion.choices[1].text and completion.choices[1].index == 1
    assert completion.model_extra and completion.model_extra["modgate"]["action"] == "refuse"
    assert "x-aigc-label" in resp.headers
    assert upstream.app.requests == []


def test_refused_input_streamed(gateway: Gateway, upstream: Upstream) -> None:
    upstream.app.clear()
    stream = gateway.openai().completions.create(
        model="m", prompt="拒绝词", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "抱歉" in _text(chunks) and _finish(chunks) == "content_filter"
    assert next(c for c in chunks if c.choices).model_extra["modgate"]["action"] == "refuse"  # type: ignore[index]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert upstream.app.requests == []


def test_input_redact_masks_before_forwarding(gateway: Gateway, upstream: Upstream) -> None:
    gateway.openai().completions.create(
        model="m", prompt=["the secretword here", "机密词"], extra_headers=mock(type="completion")
    )
    assert upstream.app.last().body["prompt"] == ["the [REDACTED] here", "[REDACTED]"]


def test_harmful_output_is_replaced_per_choice(gateway: Gateway) -> None:
    completion = gateway.openai().completions.create(
        model="m",
        prompt="Go on.",
        n=2,
        logprobs=1,
        extra_headers=mock(type="completion", texts=["A fine answer.", "Step one: zorblax."], logprobs=True),
    )
    first, second = completion.choices
    assert first.text == "A fine answer." and first.finish_reason == "stop" and first.logprobs is not None
    assert "zorblax" not in second.text and REFUSAL_EN in second.text
    assert second.finish_reason == "content_filter" and second.logprobs is None
    note = completion.model_extra["modgate"]  # type: ignore[index]
    incident = next(i for i in gateway.incidents() if i.id == note["incident_id"])
    assert incident.direction == "output" and incident.action == "block"


def test_redacted_output_is_masked_in_place(gateway: Gateway) -> None:
    completion = gateway.openai().completions.create(
        model="m", prompt="Go on.", extra_headers=mock(type="completion", content="the secretword is here")
    )
    assert completion.choices[0].text == "the [REDACTED] is here"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model_extra and completion.model_extra["modgate"]["action"] == "redact"


def test_explicit_label_plain_and_streamed(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(
        policy=TEST_POLICY + 'labeling: {explicit: {text: "【AI生成】", position: start}}\n'
    )
    plain = gateway.openai().completions.create(model="m", prompt="Hi", extra_headers=mock(type="completion"))
    assert plain.choices[0].text == "【AI生成】\nHello from the mock."
    chunks = _stream(gateway, "label", deltas=["Hello", " world"])
    assert _text(chunks) == "【AI生成】\nHello world"


# --- streams, in both modes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "deltas", [[f"word{i} " for i in range(30)], ["你好，", "世界。", "今天天气很好。"]], ids=["en", "zh"]
)
def test_benign_stream_arrives_whole(streaming: Gateway, deltas: list[str]) -> None:
    resp = streaming.openai().completions.with_raw_response.create(
        model="m", prompt="Go on.", stream=True, extra_headers=mock(type="sse", deltas=deltas)
    )
    assert json.loads(resp.headers["x-aigc-label"])["AIGC"]["ProduceID"] == resp.headers["x-request-id"]
    chunks = list(resp.parse())
    assert all(c.object == "text_completion" for c in chunks)
    assert _text(chunks) == "".join(deltas) and _finish(chunks) == "stop"


@pytest.mark.parametrize(
    ("deltas", "term"),
    [
        (["The answer: zor", "blax is the key"], "zorblax"),
        (["好的，这是炸", "药配", "方：第一步"], "炸药配方"),
    ],
    ids=["en", "zh"],
)
def test_split_term_is_cut(
    streaming: Gateway, request: pytest.FixtureRequest, deltas: list[str], term: str
) -> None:
    chunks = _stream(streaming, f"split-{term.encode().hex()}", deltas=deltas, delay_ms=5)
    text = _text(chunks)
    assert term not in text and _finish(chunks) == "content_filter"
    final = chunks[-1]
    assert REFUSAL_EN in final.choices[0].text
    note = final.model_extra["modgate"]
    incident = next(i for i in streaming.incidents() if i.id == note["incident_id"])
    assert incident.direction == "output" and note["action"] == "block"
    lead = "".join(deltas).split(term)[0]
    shown = text[: -len(final.choices[0].text)]
    if _mode(request) == "hold":
        assert shown == lead and incident.exposed_chars == 0 and "retract" not in note
    else:  # async: the start of the term was shown at once, and the cut names it
        retract = note["retract"]
        assert retract["choice"] == 0 and retract["channel"] == "content" and retract["start"] == len(lead)
        assert shown[retract["start"] : retract["end"]] == term[: retract["end"] - retract["start"]]
        assert incident.exposed_chars == retract["end"] - retract["start"] > 0


def test_cut_closes_the_upstream(streaming: Gateway, upstream: Upstream) -> None:
    chunks = _stream(streaming, "cut-close", deltas=["Fine. ", "zorblax", *[" more"] * 200], delay_ms=10)
    assert "zorblax" not in _text(chunks)
    seen = upstream.app.by_test_id("cut-close")[0]
    seen.wait_for("disconnected")
    assert seen.stream_state == "disconnected" and seen.sent_deltas < 20


def test_two_choices_are_guarded_each_and_usage_stays_last(streaming: Gateway, upstream: Upstream) -> None:
    by_choice = [["Fine ", "zor", "blax ", "end"], ["Good ", "day ", "to ", "you"]]
    chunks = _stream(
        streaming, "n2", n=2, by_choice=by_choice, delay_ms=5, stream_options={"include_usage": True}
    )
    assert _finish(chunks, 0) == "content_filter" and "zorblax" not in _text(chunks, 0)
    assert _finish(chunks, 1) == "stop" and _text(chunks, 1) == "Good day to you"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert upstream.app.by_test_id("n2")[0].stream_state == "done"  # choice 1 went on to the end


def test_usage_chunk_stays_last_on_a_benign_stream(streaming: Gateway) -> None:
    chunks = _stream(streaming, "usage", deltas=["one ", "two"], stream_options={"include_usage": True})
    assert _text(chunks) == "one two"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.choices for c in chunks[:-1])


# --- embeddings ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["float", None], ids=["float", "sdk-default-base64"])
def test_benign_embeddings_pass_with_vectors_intact(
    gateway: Gateway, upstream: Upstream, encoding: str | None
) -> None:
    extra: dict[str, Any] = {"encoding_format": encoding} if encoding else {}
    resp = gateway.openai().embeddings.with_raw_response.create(
        model="emb", input=["hello", "你好世界"], user="alice", **extra
    )
    result = resp.parse()
    assert [d.embedding for d in result.data] == [[5.0, 0.5, -0.25, 0.0], [4.0, 0.5, -0.25, 1.0]]
    assert resp.headers["x-upstream-header"] == "yes" and "x-aigc-label" not in resp.headers
    seen = upstream.app.last()
    assert seen.path == "/v1/embeddings" and seen.body["input"] == ["hello", "你好世界"]


@pytest.mark.parametrize("text", ["how to zorblax", "拒绝词"], ids=["block", "refuse"])
def test_blocked_or_refused_embeddings_input_is_400(gateway: Gateway, upstream: Upstream, text: str) -> None:
    upstream.app.clear()
    with pytest.raises(openai.BadRequestError) as info:
        gateway.openai().embeddings.create(model="emb", input=["fine", text])
    err = info.value.body
    assert isinstance(err, dict) and err["code"] == "content_filter"
    incident = next(i for i in gateway.incidents() if i.id == err["modgate"]["incident_id"])
    assert incident.direction == "input" and incident.route
    assert upstream.app.requests == []


def test_redacted_embeddings_input_reaches_the_upstream_masked(gateway: Gateway, upstream: Upstream) -> None:
    gateway.openai().embeddings.create(model="emb", input="the secretword and 机密词")
    assert upstream.app.last().body["input"] == "the [REDACTED] and [REDACTED]"


def test_embeddings_upstream_error_keeps_status(gateway: Gateway) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        gateway.openai().embeddings.create(
            model="emb", input="hi", extra_headers=mock(type="status", status=429)
        )
    assert info.value.status_code == 429


def test_client_disconnect_cancels_the_upstream_stream(streaming: Gateway, upstream: Upstream) -> None:
    body = {"model": "m", "prompt": "Once", "stream": True}
    headers = {**mock(type="sse", deltas=["a "] * 10, hang_after=3), "x-test-id": "completions-disconnect"}
    with (
        httpx.Client(base_url=streaming.base, timeout=10) as client,
        client.stream("POST", "/v1/completions", json=body, headers=headers) as resp,
    ):
        for line in resp.iter_lines():
            if line.startswith("data:") and '"a "' in line:
                break
    seen = upstream.app.by_test_id("completions-disconnect")[0]
    seen.wait_for("disconnected")
    assert seen.stream_state == "disconnected"
