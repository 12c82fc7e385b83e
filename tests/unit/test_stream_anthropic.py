"""The stream guard over Anthropic Messages events (gateway.stream.anthropic), driven with lists
of upstream byte chunks: text, thinking and tool_use blocks, terms split across deltas and
blocks, hold and async modes, the event order a client relies on, and the cut's events."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from gateway.policy import Policy
from gateway.policy_loader import load_policy
from gateway.screening import Decision, Segment
from gateway.stream.anthropic import AnthropicShape
from gateway.stream.guard import StreamGuard
from gateway.stream.sse import SSEParser

POLICY = """\
name: anthropic-stream
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


@pytest.fixture(scope="module", params=["hold", "async"])
def policy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Policy:
    path = tmp_path_factory.mktemp("policy") / "p.yaml"
    path.write_text(POLICY.format(mode=request.param), encoding="utf-8")
    return load_policy(path)


def ev(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-test",
           "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 0}}  # fmt: skip
START = ev({"type": "message_start", "message": MESSAGE})
END = [
    ev({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 9}}),
    ev({"type": "message_stop"}),
]  # fmt: skip

KINDS = {"text": ("text_delta", "text"), "thinking": ("thinking_delta", "thinking"),
         "tool_use": ("input_json_delta", "partial_json")}  # fmt: skip


def block(index: int, kind: str, pieces: list[str]) -> list[bytes]:
    start: dict[str, Any] = {
        "type": kind,
        kind if kind != "tool_use" else "input": "" if kind != "tool_use" else {},
    }
    if kind == "tool_use":
        start.update(id="toolu_1", name="lookup")
    delta_type, field = KINDS[kind]
    out = [ev({"type": "content_block_start", "index": index, "content_block": start})]
    out += [ev({"type": "content_block_delta", "index": index, "delta": {"type": delta_type, field: p}})
            for p in pieces]  # fmt: skip
    if kind == "thinking":
        out.append(ev({"type": "content_block_delta", "index": index,
                       "delta": {"type": "signature_delta", "signature": "sig"}}))  # fmt: skip
    return [*out, ev({"type": "content_block_stop", "index": index})]


async def run(policy: Policy, chunks: list[bytes]) -> tuple[list[dict[str, Any]], list[str], list[Decision]]:
    records: list[Decision] = []
    closes: list[str] = []

    async def record(
        decision: Decision, segments: list[Segment], exposed: int, offsets: list[list[int]]
    ) -> str:
        records.append(decision)
        return f"inc_{len(records)}"

    async def close() -> None:
        closes.append("close")

    async def upstream() -> AsyncGenerator[bytes, None]:
        for c in chunks:
            yield c

    guard = StreamGuard(policy, record, close, shape=AnthropicShape())
    parser = SSEParser()
    events = []
    names = []
    async for out in guard.run(upstream()):
        for event in parser.feed(out):
            assert event.event is not None and event.data is not None
            data = json.loads(event.data)
            assert data["type"] == event.event  # every event names its type, as Anthropic's do
            events.append(data)
            names.append(event.event)
    return events, closes, records


def text_of(events: list[dict[str, Any]], index: int) -> str:
    out = []
    for e in events:
        if e["type"] == "content_block_delta" and e["index"] == index:
            delta = e["delta"]
            out.append(delta.get("text") or delta.get("thinking") or delta.get("partial_json") or "")
    return "".join(out)


def check_order(events: list[dict[str, Any]]) -> None:
    """Anthropic's sequence: deltas only inside their block, blocks one after another, one end."""
    open_block = None
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    for e in events[1:-1]:
        if e["type"] == "content_block_start":
            assert open_block is None
            open_block = e["index"]
        elif e["type"] == "content_block_delta":
            assert e["index"] == open_block
        elif e["type"] == "content_block_stop":
            assert e["index"] == open_block
            open_block = None
        elif e["type"] == "message_delta":
            assert open_block is None
    assert sum(e["type"] == "message_delta" for e in events) == 1


@pytest.mark.parametrize("pieces", [["Hello ", "wor", "ld. "], ["你好，", "世界", "。"]], ids=["en", "zh"])
async def test_benign_blocks_pass_whole_and_in_order(policy: Policy, pieces: list[str]) -> None:
    chunks = [START, *block(0, "thinking", ["Let me ", "think."]), *block(1, "text", pieces),
              *block(2, "tool_use", ['{"q": ', '"weather"}']), *END]  # fmt: skip
    events, closes, records = await run(policy, chunks)
    check_order(events)
    assert text_of(events, 0) == "Let me think."
    assert text_of(events, 1) == "".join(pieces)
    assert text_of(events, 2) == '{"q": "weather"}'
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert not closes and not records


def splits(term: str) -> list[list[str]]:
    out = []
    for k in range(1, len(term)):
        out.extend([term[a:b] for a, b in itertools.pairwise([0, *cuts, len(term)])]
                   for cuts in itertools.combinations(range(1, len(term)), k))  # fmt: skip
    return out


@pytest.mark.parametrize("term", ["zorblax", "炸药配方"])
@pytest.mark.parametrize("kind", ["text", "thinking", "tool_use"])
async def test_split_term_in_any_block_cuts_the_message(policy: Policy, term: str, kind: str) -> None:
    hold = policy.spec.streaming.mode == "hold"
    for pieces in splits(term)[:12]:
        lead = "Sure: " if kind != "tool_use" else '{"q": "'
        chunks = [START, *block(0, "text", ["Fine. "]), *block(1, kind, [lead, *pieces, " more"]), *END]
        events, closes, records = await run(policy, chunks)
        check_order(events)
        final = events[-2]
        assert final["type"] == "message_delta" and final["delta"]["stop_reason"] == "refusal"
        note = final["modgate"]
        assert note["action"] == "block" and "A.1.d" in note["risks"] and note["incident_id"] == "inc_1"
        assert closes == ["close"] and len(records) == 1
        refusal = [e for e in events if e["type"] == "content_block_start"][-1]["index"]
        assert text_of(events, refusal) == policy.spec.refusal.message
        shown = text_of(events, 1)
        if hold:
            assert all(term[:i] not in shown for i in range(2, len(term) + 1)), (pieces, shown)
            assert "retract" not in note
        else:
            retract = note["retract"]
            assert retract["block"] == 1 and retract["channel"] == events_channel(kind)
            assert shown[retract["start"] : retract["end"]].startswith(pieces[0])


def events_channel(kind: str) -> str:
    return {"text": "content", "thinking": "reasoning", "tool_use": "tool_arguments"}[kind]


async def test_held_text_goes_out_before_its_block_stops(policy: Policy) -> None:
    """In hold mode the tail of a block waits (it could start a term); it must still come
    before the block's content_block_stop, not after."""
    chunks = [START, *block(0, "text", ["The zor", "bl"]), *block(1, "text", ["ax is fine"]), *END]
    events, closes, _ = await run(policy, chunks)
    check_order(events)
    assert text_of(events, 0) == "The zorbl"
    assert text_of(events, 1) == "ax is fine"
    assert not closes


async def test_redaction_inside_a_block(policy: Policy) -> None:
    chunks = [START, *block(0, "text", ["the secret", "word is 机密", "词 ok"]), *END]
    events, _, records = await run(policy, chunks)
    check_order(events)
    text = text_of(events, 0)
    if policy.spec.streaming.mode == "hold":
        assert text == "the [REDACTED] is [REDACTED] ok"
    assert "secretword" not in text.replace("[REDACTED]", "")
    assert records and records[-1].action == "redact"


async def test_ping_and_error_events_pass_as_they_came(policy: Policy) -> None:
    ping = ev({"type": "ping"})
    error = ev({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    chunks = [START, ping, *block(0, "text", ["Hi"]), error]
    parser = SSEParser()

    async def upstream() -> AsyncGenerator[bytes, None]:
        for c in chunks:
            yield c

    async def record(*_: Any) -> str:
        return "inc"

    async def close() -> None:
        pass

    out = b"".join(
        [b async for b in StreamGuard(policy, record, close, shape=AnthropicShape()).run(upstream())]
    )
    assert ping in out and error in out
    names = [e.event for e in parser.feed(out)]
    assert names[-1] == "message_stop"  # the upstream ended without one; the guard ends the stream
