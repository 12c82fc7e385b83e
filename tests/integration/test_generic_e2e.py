"""The generic adapter end to end: a made-up JSON API with nested texts, whole answers, and
streams as JSON lines and as SSE, in both stream modes (tests/support/generic_upstream.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_POLICY, Gateway, GatewayFactory, mock
from tests.support.generic_upstream import GenericUpstream
from tests.support.servers import serve_in_thread

REFUSAL = "抱歉，我无法提供这方面的内容。Sorry, I can't help with that."
CONFIG = """
upstreams:
  acme: {{base_url: "{acme}"}}
  main: {{base_url: "{{upstream}}"}}
policies: {{test: policy.yaml}}
routes:
  - name: acme
    path_prefix: /acme/
    upstream: acme
    policy: test
    adapter:
      input: ["$.conversation.turns[*].parts[*].text", "$.system"]
      output: ["$.result.outputs[*].content.text"]
      user: "$.session.user"
      stream:
        delta: "$.data.piece"
        end: "$.final"
        done_marker: "[DONE]"
        cut: {{event: "error", data: {{message: "{{message}}"}}}}
  - {{name: main, upstream: main, policy: test}}
"""


@pytest.fixture(scope="module")
def acme() -> Iterator[tuple[GenericUpstream, str]]:
    app = GenericUpstream()
    with serve_in_thread(app) as base:
        yield app, base


@pytest.fixture(params=["hold", "async"])
def gateway(
    request: pytest.FixtureRequest, make_gateway: GatewayFactory, acme: tuple[GenericUpstream, str]
) -> Gateway:
    acme[0].clear()
    policy = TEST_POLICY.replace("mode: hold", f"mode: {request.param}")
    return make_gateway(policy=policy, config=CONFIG.format(acme=acme[1]))


def body(*texts: str, user: str = "u-1") -> dict[str, Any]:
    parts = [{"text": t} for t in texts]
    return {
        "session": {"user": user},
        "conversation": {"turns": [{"speaker": "user", "parts": parts}]},
        "n": 1,
    }


def post(
    gateway: Gateway, payload: dict[str, Any], script: dict[str, Any], test_id: str = "t"
) -> httpx.Response:
    with httpx.Client(base_url=gateway.base, timeout=20) as client:
        return client.post(
            "/acme/v2/generate", json=payload, headers={**mock(**script), "x-test-id": test_id}
        )


def events_of(response: httpx.Response) -> list[dict[str, Any]]:
    if response.headers["content-type"].startswith("application/x-ndjson"):
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]
    datas = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    return [json.loads(d) for d in datas[:-1]]


def pieces_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["data"].get("piece", "") for e in events if e.get("event") in ("token", "end"))


@pytest.mark.parametrize("text", ["Write a poem about spring.", "写一首关于春天的诗。"])
def test_benign_request_and_answer_pass_untouched(
    gateway: Gateway, acme: tuple[GenericUpstream, str], text: str
) -> None:
    response = post(gateway, body(text), {"type": "json", "texts": ["Spring rain.", "春雨。"]})
    assert response.status_code == 200
    answer = response.json()
    assert [o["content"]["text"] for o in answer["result"]["outputs"]] == ["Spring rain.", "春雨。"]
    assert answer["usage"] == {"units": 3} and "modgate" not in answer
    seen = acme[0].last()
    assert seen.path == "/acme/v2/generate" and seen.body == body(text)  # unknown fields pass too


@pytest.mark.parametrize("text", ["tell me about zorblax", "告诉我炸药配方"])
def test_blocked_input_never_reaches_the_api(
    gateway: Gateway, acme: tuple[GenericUpstream, str], text: str
) -> None:
    response = post(gateway, body("hello", text), {"type": "json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "content_filter" and error["modgate"]["incident_id"]
    assert acme[0].requests == []
    incident = gateway.incidents()[0]
    assert incident.direction == "input" and incident.route == "acme"


def test_refused_input_gets_an_answer_built_from_the_output_selector(
    gateway: Gateway, acme: tuple[GenericUpstream, str]
) -> None:
    response = post(gateway, body("refuseword please"), {"type": "json"})
    assert response.status_code == 200
    answer = response.json()
    assert (
        answer["result"]["outputs"] == [{"content": {"text": REFUSAL}}]
        or answer["result"] == {"outputs": {"content": {"text": REFUSAL}}}
        or REFUSAL in json.dumps(answer, ensure_ascii=False)
    )
    assert answer["modgate"]["action"] == "refuse"
    assert acme[0].requests == []


def test_redacted_input_reaches_the_api_masked(gateway: Gateway, acme: tuple[GenericUpstream, str]) -> None:
    response = post(gateway, body("my secretword is here", "机密词也是"), {"type": "json"})
    assert response.status_code == 200
    parts = acme[0].last().body["conversation"]["turns"][0]["parts"]
    assert [p["text"] for p in parts] == ["my [REDACTED] is here", "[REDACTED]也是"]


@pytest.mark.parametrize("answer", ["Here: zorblax.", "好的：炸药配方如下"])
def test_harmful_whole_answer_is_replaced(gateway: Gateway, answer: str) -> None:
    response = post(gateway, body("hello"), {"type": "json", "texts": [answer, "and more"]})
    assert response.status_code == 200
    result = response.json()
    assert [o["content"]["text"] for o in result["result"]["outputs"]] == [REFUSAL, ""]
    assert result["modgate"]["action"] == "block" and "A.1.d" in result["modgate"]["risks"]


@pytest.mark.parametrize("kind", ["jsonl", "sse"])
@pytest.mark.parametrize("pieces", [["Once ", "upon ", "a time."], ["从前，", "有座山。"]], ids=["en", "zh"])
def test_benign_stream_arrives_whole(gateway: Gateway, kind: str, pieces: list[str]) -> None:
    response = post(gateway, body("story"), {"type": kind, "pieces": pieces, "delay_ms": 5})
    events = events_of(response)
    assert pieces_of(events) == "".join(pieces)
    assert events[-1]["event"] == "end" and events[-1]["final"] is True
    assert [e["seq"] for e in events if e["event"] == "token"] == list(range(len(pieces)))


@pytest.mark.parametrize("kind", ["jsonl", "sse"])
@pytest.mark.parametrize(
    ("pieces", "term"),
    [(["It is zor", "bl", "ax, ok"], "zorblax"), (["这是炸药", "配", "方"], "炸药配方")],
    ids=["en", "zh"],
)
def test_split_term_is_cut_and_the_api_closed(
    gateway: Gateway, acme: tuple[GenericUpstream, str], kind: str, pieces: list[str], term: str
) -> None:
    test_id = f"generic-cut-{kind}-{term.encode().hex()}"
    many = [*pieces, *[" more"] * 100]
    response = post(gateway, body("story"), {"type": kind, "pieces": many, "delay_ms": 5}, test_id)
    events = events_of(response)
    final = events[-1]
    assert final["event"] == "error" and final["data"]["message"] == REFUSAL
    note = final["modgate"]
    assert note["action"] == "block" and "A.1.d" in note["risks"]
    shown = pieces_of(events)
    if gateway.state.default_policy.spec.streaming.mode == "hold":
        assert term[:2] not in shown and "retract" not in note
    else:
        assert shown[note["retract"]["start"] :].startswith(term[:2])
    time.sleep(0.3)
    seen = acme[0].by_test_id(test_id)[0]
    assert seen.stream_state == "disconnected" and seen.sent_deltas < 50


def test_unscreenable_stream_is_refused(
    make_gateway: GatewayFactory, acme: tuple[GenericUpstream, str]
) -> None:
    config = CONFIG.format(acme=acme[1])
    start = config.index("      stream:")
    end = config.index("  - {name: main")
    gateway = make_gateway(config=config[:start] + config[end:])
    response = post(gateway, body("story"), {"type": "jsonl", "pieces": ["a", "b"]})
    assert response.status_code == 502
    assert "no stream settings" in response.json()["error"]["message"]


def test_bad_selector_stops_the_config(
    make_gateway: GatewayFactory, acme: tuple[GenericUpstream, str]
) -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match=r"routes\.0\.adapter\.input"):
        make_gateway(config=CONFIG.format(acme=acme[1]).replace("$.system", "system"))


@pytest.mark.parametrize("kind", ["jsonl", "sse"])
def test_client_disconnect_cancels_the_api_stream(
    gateway: Gateway, acme: tuple[GenericUpstream, str], kind: str
) -> None:
    test_id = f"generic-disconnect-{kind}"
    script = {"type": kind, "pieces": ["word "] * 200, "delay_ms": 20}
    with (
        httpx.Client(base_url=gateway.base, timeout=10) as client,
        client.stream(
            "POST", "/acme/v2/generate", json=body("story"), headers={**mock(**script), "x-test-id": test_id}
        ) as resp,
    ):
        for line in resp.iter_lines():
            if "word" in line:
                break
    seen = acme[0].by_test_id(test_id)[0]
    seen.wait_for("disconnected")
    assert seen.stream_state == "disconnected" and seen.sent_deltas < 200
