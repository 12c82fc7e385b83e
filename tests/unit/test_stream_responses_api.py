"""The stream guard over OpenAI Responses events (gateway.stream.responses_api), driven with
lists of upstream SSE byte chunks in both stream modes: message, refusal, reasoning-summary and
function-call items, terms split across deltas, text that only a ``.done`` event carries, the
consistency of every ``.done`` event with the deltas the client got, renumbering, and the cut."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from gateway.errors import UpstreamUnavailable
from gateway.policy import Policy
from gateway.policy_loader import load_policy
from gateway.responses_api import ResponsesRequest, refusal_response
from gateway.screening import Decision, Segment
from gateway.stream.guard import StreamGuard
from gateway.stream.responses_api import TERMINAL, ResponsesShape, response_events
from gateway.stream.sse import SSEParser
from tests.support.responses_upstream import encode, stream_events

POLICY = """\
name: responses-stream
extends: default
classifiers:
  guard: null
  banned-terms:
    type: lexicon
    terms:
      A.1.d: ["zorblax", "炸药配方"]
      X.test_redact: ["secretword", "机密词"]
rules:
  A.1.d: {{input: block, output: block, report: true}}
  X.test_redact: {{input: redact, output: redact}}
streaming:
  mode: {mode}
"""

Event = dict[str, Any]


@pytest.fixture(scope="module", params=["hold", "async"])
def policy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Policy:
    path = tmp_path_factory.mktemp("policy") / "p.yaml"
    path.write_text(POLICY.format(mode=request.param), encoding="utf-8")
    return load_policy(path)


def chunks_of(items: list[dict[str, Any]]) -> list[bytes]:
    return [encode(e, n) for n, e in enumerate(stream_events(items))]


async def run(policy: Policy, chunks: list[bytes]) -> tuple[list[Event], list[str], list[Decision]]:
    records: list[Decision] = []
    closes: list[str] = []

    async def record(decision: Decision, segments: list[Segment], exposed: int, offsets: Any) -> str:
        records.append(decision)
        return f"inc_{len(records)}"

    async def close() -> None:
        closes.append("close")

    async def upstream() -> AsyncGenerator[bytes, None]:
        for c in chunks:
            yield c

    guard = StreamGuard(policy, record, close, shape=ResponsesShape())
    return [e async for e in _events(guard.run(upstream()))], closes, records


async def _events(stream: AsyncIterator[bytes]) -> AsyncGenerator[Event, None]:
    parser = SSEParser()
    async for out in stream:
        for event in parser.feed(out):
            assert event.data is not None
            data = json.loads(event.data)
            assert data["type"] == event.event  # every event names its type, as the API's do
            yield data


def _part_key(event: Event) -> tuple[int, int]:
    index = event["content_index"] if "content_index" in event else event.get("summary_index") or 0
    return int(event["output_index"]), int(index)


def _item_texts(item: Event) -> dict[int, str]:
    if item["type"] == "function_call":
        return {0: item["arguments"]}
    parts = item.get("summary") or item.get("content") or []
    return {j: p.get("text", p.get("refusal", "")) for j, p in enumerate(parts)}


def given(events: list[Event]) -> dict[tuple[int, int], str]:
    """Each part's text as the deltas gave it."""
    out: dict[tuple[int, int], str] = {}
    for e in events:
        if e["type"].endswith(".delta"):
            out[_part_key(e)] = out.get(_part_key(e), "") + e["delta"]
    return out


def check_consistent(events: list[Event]) -> dict[tuple[int, int], str]:
    """Numbered from 0; deltas only inside an open item; every event that repeats a text whole
    repeats exactly what the deltas gave; one terminal event, last."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] in TERMINAL
    assert sum(e["type"] in TERMINAL for e in events) == 1
    texts: dict[tuple[int, int], str] = {}
    open_items: set[int] = set()
    for e in events:
        kind = e["type"]
        if kind == "response.output_item.added":
            assert e["output_index"] not in open_items
            open_items.add(e["output_index"])
        elif kind.endswith(".delta"):
            assert e["output_index"] in open_items
            texts[_part_key(e)] = texts.get(_part_key(e), "") + e["delta"]
        elif (
            kind.endswith("_text.done") or kind.endswith("arguments.done") or kind == "response.refusal.done"
        ):
            whole = e.get("text", e.get("arguments", e.get("refusal")))
            assert whole == texts.get(_part_key(e), ""), kind
        elif kind.endswith("part.done"):
            part = e["part"]
            assert part.get("text", part.get("refusal")) == texts.get(_part_key(e), ""), kind
        elif kind == "response.output_item.done":
            open_items.discard(e["output_index"])
            for j, text in _item_texts(e["item"]).items():
                assert text == texts.get((e["output_index"], j), ""), kind
        elif kind in TERMINAL:
            for k, item in enumerate(e["response"]["output"]):
                for j, text in _item_texts(item).items():
                    assert text == texts.get((k, j), ""), kind
    assert not open_items
    return texts


ITEMS = {
    "message": "content",
    "refusal": "refusal",
    "reasoning": "reasoning",
    "function_call": "tool_arguments",
}


@pytest.mark.parametrize("pieces", [["Hello ", "wor", "ld. "], ["你好，", "世界", "。"]], ids=["en", "zh"])
async def test_benign_items_pass_whole_and_in_order(policy: Policy, pieces: list[str]) -> None:
    items = [
        {"type": "reasoning", "deltas": ["Let me ", "think."]},
        {"type": "message", "deltas": pieces},
        {"type": "function_call", "deltas": ['{"q": ', '"weather"}']},
    ]
    events, closes, records = await run(policy, chunks_of(items))
    texts = check_consistent(events)
    assert texts == {(0, 0): "Let me think.", (1, 0): "".join(pieces), (2, 0): '{"q": "weather"}'}
    assert events[-1]["type"] == "response.completed"
    assert not closes and not records


def splits(term: str) -> list[list[str]]:
    out: list[list[str]] = []
    for k in range(1, len(term)):
        out.extend([term[a:b] for a, b in itertools.pairwise([0, *cuts, len(term)])]
                   for cuts in itertools.combinations(range(1, len(term)), k))  # fmt: skip
    return out


@pytest.mark.parametrize("term", ["zorblax", "炸药配方"])
@pytest.mark.parametrize("kind", list(ITEMS))
async def test_split_term_in_any_item_cuts_the_response(policy: Policy, term: str, kind: str) -> None:
    hold = policy.spec.streaming.mode == "hold"
    for pieces in splits(term)[:8]:
        lead = "Sure: " if kind != "function_call" else '{"q": "'
        items = [
            {"type": "message", "deltas": ["Fine. "]},
            {"type": kind, "deltas": [lead, *pieces, " more"]},
        ]
        events, closes, records = await run(policy, chunks_of(items))
        texts = check_consistent(events)
        final = events[-1]
        assert final["type"] == "response.incomplete", pieces
        response = final["response"]
        assert response["id"] == "resp_mock" and response["status"] == "incomplete"
        assert response["incomplete_details"] == {"reason": "content_filter"}
        note = response["modgate"]
        assert note["action"] == "block" and "A.1.d" in note["risks"] and note["incident_id"] == "inc_1"
        assert closes == ["close"] and len(records) == 1
        assert texts[(2, 0)] == policy.spec.refusal.message
        assert response["output"][1]["status"] == "incomplete"
        shown = texts.get((1, 0), "")
        if hold:
            assert all(term[:i] not in shown for i in range(2, len(term) + 1)), (pieces, shown)
            assert "retract" not in note
        else:
            retract = note["retract"]
            assert retract["output_index"] == 1 and retract["channel"] == ITEMS[kind]
            assert shown[retract["start"] : retract["end"]].startswith(pieces[0])


async def test_held_text_goes_out_before_its_part_is_done(policy: Policy) -> None:
    """In hold mode the tail of a part waits (it could start a term); it must still come as
    deltas before the part's ``.done`` events, which carry all of it."""
    items = [{"type": "message", "deltas": ["The zor", "bl"]}, {"type": "message", "deltas": ["ax is fine"]}]
    events, closes, _ = await run(policy, chunks_of(items))
    assert check_consistent(events) == {(0, 0): "The zorbl", (1, 0): "ax is fine"}
    done = next(i for i, e in enumerate(events) if e["type"] == "response.output_text.done")
    assert "".join(e["delta"] for e in events[:done] if e["type"].endswith(".delta")) == "The zorbl"
    assert not closes


@pytest.mark.parametrize(("done", "cut"), [("Hello zorblax", True), ("Hello world", False)])
async def test_text_only_a_done_event_carries_is_screened(policy: Policy, done: str, cut: bool) -> None:
    """An upstream whose ``.done`` says more than its deltas: the rest is screened, and shown
    (as a delta before the ``.done``) only when it passes."""
    events, closes, _ = await run(
        policy, chunks_of([{"type": "message", "deltas": ["Hello "], "done": done}])
    )
    texts = check_consistent(events)
    assert (events[-1]["type"] == "response.incomplete") is cut
    assert "zorblax" not in json.dumps(events)
    if not cut:
        assert texts == {(0, 0): "Hello world"} and not closes


async def test_redaction_is_the_same_in_deltas_and_done_events(policy: Policy) -> None:
    items = [{"type": "message", "deltas": ["the secret", "word is 机密", "词 ok"]}]
    events, _, records = await run(policy, chunks_of(items))
    text = check_consistent(events)[(0, 0)]
    if policy.spec.streaming.mode == "hold":
        assert text == "the [REDACTED] is [REDACTED] ok"
    assert "secretword" not in json.dumps(events) and "机密词" not in json.dumps(events, ensure_ascii=False)
    assert events[-1]["type"] == "response.completed"
    assert records and records[-1].action == "redact"


async def test_a_whole_response_without_deltas_is_screened(policy: Policy) -> None:
    """Text in ``response.completed`` alone (no item events) is screened too."""
    (created, *_, completed) = stream_events([{"type": "message", "deltas": ["Sure: zorblax"]}])
    events, closes, _ = await run(policy, [encode(created, 0), encode(completed, 1)])
    assert events[-1]["type"] == "response.incomplete" and closes == ["close"]
    assert "zorblax" not in json.dumps(events)


async def test_nothing_after_the_terminal_event(policy: Policy) -> None:
    late = {"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "content_index": 0,
            "delta": "late zorblax"}  # fmt: skip
    chunks = [*chunks_of([{"type": "message", "deltas": ["Hi"]}]), b"data: [DONE]\n\n", encode(late, 99)]
    events, _, _ = await run(policy, chunks)
    check_consistent(events)
    assert events[-1]["type"] == "response.completed" and "late" not in json.dumps(events)


async def test_other_events_pass_renumbered(policy: Policy) -> None:
    """Events without text pass as they came, renumbered after a dropped (held) delta."""
    base = stream_events([{"type": "message", "deltas": ["The zor", "bl", "ing"]}])
    note = {"type": "response.output_text.annotation.added", "item_id": "msg_mock0", "output_index": 0,
            "content_index": 0, "annotation_index": 0, "annotation": {"type": "url_citation"}}  # fmt: skip
    events, _, _ = await run(policy, [encode(e, n) for n, e in enumerate([*base[:-2], note, *base[-2:]])])
    check_consistent(events)
    assert any(e["type"] == note["type"] and e["annotation"] == note["annotation"] for e in events)


async def test_refused_input_stream_is_consistent(policy: Policy) -> None:
    response = refusal_response(ResponsesRequest(model="m"), policy, {"action": "refuse"})
    parser = SSEParser()
    events = [json.loads(e.data or "") for e in parser.feed(response_events(response))]
    assert check_consistent(events) == {(0, 0): policy.spec.refusal.message}
    assert events[-1]["response"]["modgate"] == {"action": "refuse"}


def test_error_event_continues_the_numbering() -> None:
    shape = ResponsesShape()
    shape.seq = 7
    event = SSEParser().feed(shape.error_event(UpstreamUnavailable("broken")))[0]
    data = json.loads(event.data or "")
    assert event.event == "error" and data["sequence_number"] == 7
    assert data["code"] == "upstream_unavailable" and data["message"] == "broken"
