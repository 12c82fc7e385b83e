"""Cascades through the gateway, with both tiers real services on loopback: a text-classification
server as the fast tier and a moderation service as the expensive one, called only when the
fast tier is unsure. Plain requests and streams in both modes, a failing expensive tier and
its circuit breaker, and the metrics."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import Gateway, GatewayFactory, mock
from tests.support.classifier_servers import ClassifierServer

MSG = [{"role": "user", "content": "Tell me something."}]


def policy(
    base: str, mode: str = "hold", guard_path: str = "/v1/moderations", on_error: str = "block"
) -> str:
    # The fast tier's toxic score calibrates so that 0.8 is its threshold: an insult (0.75) is
    # below it but inside the unsure band, a bomb (0.92) above it, small talk (0.02) far below.
    return f"""
name: cascade
classifiers:
  fast:
    type: remote
    shape: text-classification
    url: {base}/predict
    labels: {{toxic: {{code: X.harmful, threshold: 0.8}}}}
  guard:
    type: remote
    shape: openai-moderation
    url: {base}{guard_path}
    labels: {{harassment: {{code: A.4.d, threshold: 0.3}}, violence: {{code: A.1.f, threshold: 0.5}}}}
    run:
      stage: 1
      when: {{uncertain: [0.3, 0.9]}}
      timeout_s: 2
      on_error: {on_error}
      circuit_breaker: {{failures: 2, reset_s: 60}}
rules:
  X.harmful: {{input: block, output: block, threshold: 0.5}}
  A.4.d: {{input: block, output: block, threshold: 0.5}}
  A.1: {{input: block, output: block, threshold: 0.5}}
streaming: {{mode: {mode}}}
"""


def guard_calls(server: ClassifierServer) -> list[list[str]]:
    return [r.body["input"] for r in server.requests if r.path != "/predict"]


def counter(metrics: str, sample: str) -> float:
    found = [line.rsplit(" ", 1)[1] for line in metrics.splitlines() if line.startswith(sample + " ")]
    return float(found[0]) if found else 0.0


def stream(gateway: Gateway, test_id: str, deltas: list[str]) -> tuple[str, list]:
    chunks = list(
        gateway.openai().chat.completions.create(
            model="m",
            messages=MSG,
            stream=True,
            extra_headers={**mock(type="sse", deltas=deltas, delay_ms=5), "x-test-id": test_id},
        )
    )
    return "".join((c.choices[0].delta.content or "") for c in chunks if c.choices), chunks


@pytest.mark.parametrize("mode", ["hold", "async"])
@pytest.mark.parametrize(
    ("deltas", "insult"),
    [(["You are an ", "idiot, ", "and I mean it."], "idiot"), (["你就是个", "白痴，", "真的。"], "白痴")],
    ids=["en", "zh"],
)
def test_stream_cut_by_the_expensive_tier_where_the_fast_one_was_unsure(
    make_gateway: GatewayFactory,
    classifier_services: tuple[ClassifierServer, str],
    mode: str,
    deltas: list,
    insult: str,
) -> None:
    server, base = classifier_services
    server.clear()
    gateway = make_gateway(policy=policy(base, mode))
    text, chunks = stream(gateway, f"cascade-{mode}-{insult.encode().hex()}", deltas)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "content_filter"
    note = last.model_extra["modgate"]
    assert "A.4.d" in note["risks"]
    assert any(insult in " ".join(batch) for batch in guard_calls(server))
    if mode == "hold":
        assert insult not in text
    else:
        retract = note["retract"]
        assert insult in text[retract["start"] : retract["end"]]


@pytest.mark.parametrize(
    "deltas", [["The weather ", "is fine ", "today."], ["今天", "天气", "很好。"]], ids=["en", "zh"]
)
def test_confident_benign_stream_never_reaches_the_expensive_tier(
    make_gateway: GatewayFactory, classifier_services: tuple[ClassifierServer, str], deltas: list
) -> None:
    server, base = classifier_services
    server.clear()
    gateway = make_gateway(policy=policy(base))
    text, chunks = stream(gateway, "cascade-benign", deltas)
    assert text == "".join(deltas)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert any(r.path == "/predict" for r in server.requests)
    assert guard_calls(server) == []


@pytest.mark.parametrize(
    ("prompt", "blocked", "guarded"),
    [
        ("What is the capital of France?", False, False),
        ("今天天气怎么样？", False, False),
        ("how do I build a bomb", True, False),  # the fast tier is sure: no second opinion
        ("如何制作炸弹", True, False),
        ("you idiot", True, True),
        ("你这个白痴", True, True),
    ],
)
def test_plain_requests_and_metrics(
    make_gateway: GatewayFactory,
    classifier_services: tuple[ClassifierServer, str],
    prompt: str,
    blocked: bool,
    guarded: bool,
) -> None:
    server, base = classifier_services
    server.clear()
    gateway = make_gateway(policy=policy(base))
    client = gateway.openai()
    if blocked:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
        assert err.value.code == "content_filter"
    else:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
    assert bool(guard_calls(server)) is guarded
    with httpx.Client(base_url=gateway.base) as http:
        metrics = http.get("/metrics").text
    # An answer is screened too: the scripted upstream's small talk, skipped.
    skipped = int(not guarded) + int(not blocked)
    assert counter(metrics, 'modgate_cascade_texts_total{classifier="guard",outcome="ran"}') == int(guarded)
    assert counter(metrics, 'modgate_cascade_texts_total{classifier="guard",outcome="skipped"}') == skipped


def test_failing_expensive_tier_follows_on_error_then_its_breaker_opens(
    make_gateway: GatewayFactory, classifier_services: tuple[ClassifierServer, str]
) -> None:
    server, base = classifier_services
    server.clear()
    gateway = make_gateway(policy=policy(base, guard_path="/status/503", on_error="flag"))
    client = gateway.openai()
    for prompt in ("you idiot", "你这个白痴", "idiot again", "还是白痴"):
        # flag: the answer goes through, the failure is recorded as an incident
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
    assert len(guard_calls(server)) == 2  # the breaker opened after two failures
    with httpx.Client(base_url=gateway.base) as http:
        metrics = http.get("/metrics").text
    assert (
        'modgate_classifier_fallbacks_total{classifier="guard",on_error="flag",reason="error"} 2.0' in metrics
    )
    assert (
        'modgate_classifier_fallbacks_total{classifier="guard",on_error="flag",reason="circuit_open"} 2.0'
        in metrics
    )
    assert 'modgate_classifier_circuit_open{classifier="guard"} 1.0' in metrics
    incidents = gateway.incidents()
    assert len(incidents) == 4
    assert all("X.classifier_error" in [r["code"] for r in i.risks] for i in incidents)


@pytest.mark.parametrize("mode", ["hold", "async"])
def test_failing_expensive_tier_blocks_a_stream_when_on_error_is_block(
    make_gateway: GatewayFactory, classifier_services: tuple[ClassifierServer, str], mode: str
) -> None:
    server, base = classifier_services
    server.clear()
    gateway = make_gateway(policy=policy(base, mode, guard_path="/status/500"))
    text, chunks = stream(gateway, f"cascade-fail-{mode}", ["Fine so far. ", "You are an ", "idiot."])
    note = chunks[-1].model_extra["modgate"]
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert note["risks"] == ["X.classifier_error"]
    if mode == "hold":
        assert "idiot" not in text


def test_breaker_opens_across_streams_and_they_fail_fast(
    make_gateway: GatewayFactory, classifier_services: tuple[ClassifierServer, str]
) -> None:
    server, base = classifier_services
    server.clear()
    gateway = make_gateway(policy=policy(base, guard_path="/status/503", on_error="flag"))
    for i in range(4):
        text, chunks = stream(gateway, f"cascade-breaker-{i}", ["You are an ", "idiot."])
        assert text == "You are an idiot."  # flag: the answer goes on, the failure is recorded
        assert chunks[-1].choices[0].finish_reason == "stop"
    calls = len(guard_calls(server))
    with httpx.Client(base_url=gateway.base) as http:
        metrics = http.get("/metrics").text
    opened = counter(
        metrics,
        'modgate_classifier_fallbacks_total{classifier="guard",on_error="flag",reason="circuit_open"}',
    )
    assert calls == 2 and opened >= 1  # after two failures the later windows never reached the guard
