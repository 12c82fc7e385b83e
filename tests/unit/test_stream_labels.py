"""Tests for the explicit label in streams (gateway.stream.labeling), through the real StreamGuard.

The guard runs over lists of upstream chunks with a real policy (lexicon terms); assertions
are on the events it emits: where the label lands per choice, and that nothing else moved.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from gateway.duties import ExplicitLabel
from gateway.policy import Policy
from gateway.policy_loader import load_policy
from gateway.screening import Decision, Segment
from gateway.stream.guard import StreamGuard
from gateway.stream.labeling import StreamLabel
from gateway.stream.sse import SSEParser

POLICY = """\
name: label-test
extends: default
classifiers:
  guard: null
  banned-terms:
    type: lexicon
    terms:
      A.1.d: ["zorblax", "炸药配方"]
rules:
  A.1.d: {{input: block, output: block}}
streaming:
  mode: {mode}
"""
LABEL = "【AI生成】"
REFUSAL = "抱歉，我无法提供这方面的内容。Sorry, I can't help with that."
DONE = b"data: [DONE]\n\n"


@pytest.fixture(scope="module", params=["hold", "async"])
def policy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Policy:
    path = tmp_path_factory.mktemp("policy") / "p.yaml"
    path.write_text(POLICY.format(mode=request.param), encoding="utf-8")
    return load_policy(path)


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
    payload = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "test-model",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


def content_stream(pieces: list[str], index: int = 0, finish: bool = True) -> list[bytes]:
    out = [chunk({"role": "assistant", "content": ""}, index=index)]
    out += [chunk({"content": p}, index=index) for p in pieces]
    return out + ([chunk({}, "stop", index)] if finish else [])


async def run(policy: Policy, chunks: list[bytes], position: str | None) -> list[dict[str, Any]]:
    async def record(decision: Decision, segments: list[Segment], exposed: int, offsets: Any) -> str:
        return "inc_1"

    async def close() -> None:
        return None

    async def upstream() -> AsyncGenerator[bytes, None]:
        for raw in chunks:
            yield raw

    label = StreamLabel(ExplicitLabel(text=LABEL, position=position)) if position else None
    guard = StreamGuard(policy, record, close, label=label)
    parser = SSEParser()
    events = [e for raw in [b async for b in guard.run(upstream())] for e in parser.feed(raw)]
    assert events[-1].data == "[DONE]"
    return [json.loads(e.data) for e in events if e.data and e.data != "[DONE]"]


def deltas(chunks: list[dict[str, Any]], index: int = 0) -> list[dict[str, Any]]:
    """Each (delta, finish_reason) of one choice, in order."""
    return [
        {**c["delta"], "_finish": c["finish_reason"]}
        for d in chunks
        for c in d["choices"]
        if c["index"] == index
    ]


def text(chunks: list[dict[str, Any]], index: int = 0, field: str = "content") -> str:
    return "".join(d.get(field) or "" for d in deltas(chunks, index))


async def test_start_label_comes_before_the_first_content(policy: Policy) -> None:
    out = await run(policy, [*content_stream(["Hello", " there."]), DONE], "start")
    assert text(out) == f"{LABEL}\nHello there."
    seq = deltas(out)
    assert seq[0] == {"role": "assistant", "content": "", "_finish": None}  # role chunk untouched
    assert seq[1] == {"content": f"{LABEL}\n", "_finish": None}  # a delta of its own
    assert out[1]["id"] == "chatcmpl-1" and out[1]["model"] == "test-model"


async def test_end_label_comes_right_before_the_finish(policy: Policy) -> None:
    out = await run(policy, [*content_stream(["Hello", " there."]), DONE], "end")
    assert text(out) == f"Hello there.\n{LABEL}"
    seq = deltas(out)
    # Its own delta before the finish, or (hold mode, the last text held until the finish)
    # appended to the text that the finishing delta releases.
    last = seq[-1] if seq[-1].get("content") else seq[-2]
    assert last["content"].endswith(LABEL) and seq[-1]["_finish"] == "stop"
    assert [d["_finish"] for d in seq].count("stop") == 1


async def test_end_label_after_a_newline_adds_none(policy: Policy) -> None:
    out = await run(policy, [*content_stream(["第一行\n"]), DONE], "end")
    assert text(out) == f"第一行\n{LABEL}"


async def test_held_tail_released_with_the_finish_precedes_the_label(policy: Policy) -> None:
    # "zor" could begin the banned term: hold mode keeps it until the finish chunk.
    out = await run(policy, [*content_stream(["A word: zor"]), DONE], "end")
    assert text(out) == f"A word: zor\n{LABEL}"
    assert deltas(out)[-1]["_finish"] == "stop"


@pytest.mark.parametrize("position", ["start", "end"])
async def test_two_choices_get_one_label_each(policy: Policy, position: str) -> None:
    chunks = [chunk({"role": "assistant", "content": ""}, index=i) for i in (0, 1)]
    for a, b in [("Hi ", "你好"), ("there.", "朋友。")]:
        chunks += [chunk({"content": a}, index=0), chunk({"content": b}, index=1)]
    chunks += [chunk({}, "stop", 0), chunk({}, "stop", 1), DONE]
    out = await run(policy, chunks, position)
    expected = ("Hi there.", "你好朋友。")
    for i, body in enumerate(expected):
        want = f"{LABEL}\n{body}" if position == "start" else f"{body}\n{LABEL}"
        assert text(out, i) == want
        assert [d["_finish"] for d in deltas(out, i) if d["_finish"]] == ["stop"]


@pytest.mark.parametrize("position", ["start", "end"])
async def test_tool_calls_and_reasoning_get_no_label(policy: Policy, position: str) -> None:
    args = ['{"city": ', '"Paris"}']
    tool_start = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"index": 0, "id": "c", "function": {}}],
    }
    chunks = [chunk(tool_start)]
    chunks += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}) for a in args]
    chunks += [chunk({"reasoning_content": "thinking"}, index=1), chunk({}, "tool_calls"), DONE]
    out = await run(policy, chunks, position)
    assert LABEL not in json.dumps(out, ensure_ascii=False)
    calls = [tc for d in deltas(out) for tc in d.get("tool_calls") or ()]
    assert "".join((tc.get("function") or {}).get("arguments") or "" for tc in calls) == "".join(args)
    assert text(out, 1, "reasoning_content") == "thinking"


async def test_reasoning_then_content_labels_only_the_content(policy: Policy) -> None:
    chunks = [chunk({"reasoning_content": "let me think"}), *content_stream(["Answer."])[1:], DONE]
    out = await run(policy, chunks, "start")
    assert text(out, 0, "reasoning_content") == "let me think"
    assert text(out) == f"{LABEL}\nAnswer."


async def test_stream_without_finish_still_ends_with_the_label(policy: Policy) -> None:
    out = await run(policy, content_stream(["No finish here"], finish=False), "end")
    assert text(out) == f"No finish here\n{LABEL}"


async def test_cut_refusal_is_labelled_at_the_end(policy: Policy) -> None:
    out = await run(policy, [*content_stream(["Fine so far. ", "zorblax", " more"]), DONE], "end")
    assert "zorblax" not in text(out)
    assert text(out).endswith(f"\n\n{REFUSAL}\n{LABEL}")
    assert text(out).count(LABEL) == 1
    assert out[-1]["choices"][0]["finish_reason"] == "content_filter"


async def test_cut_before_any_text_labels_the_refusal_at_the_start(policy: Policy) -> None:
    out = await run(policy, [*content_stream(["zorblax"]), DONE], "start")
    assert text(out) == f"{LABEL}\n{REFUSAL}"


async def test_cut_after_text_keeps_the_start_label_once(policy: Policy) -> None:
    out = await run(policy, [*content_stream(["Fine so far. ", "zorblax"]), DONE], "start")
    assert text(out).startswith(f"{LABEL}\nFine so far. ")
    assert text(out).count(LABEL) == 1 and text(out).endswith(REFUSAL)


async def test_cut_leaves_a_finished_choice_with_its_own_label(policy: Policy) -> None:
    chunks = [*content_stream(["完成了。"], 0), *content_stream(["a zor", "blax b"], 1), DONE]
    out = await run(policy, chunks, "end")
    assert text(out, 0) == f"完成了。\n{LABEL}"
    assert text(out, 1).endswith(f"{REFUSAL}\n{LABEL}") and text(out, 1).count(LABEL) == 1


async def test_no_label_stage_leaves_released_chunks_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "async.yaml"
    path.write_text(POLICY.format(mode="async"), encoding="utf-8")
    policy = load_policy(path)  # async: every chunk's text is released as it comes
    chunks = [*content_stream(["Plain words only."]), DONE]

    async def record(*_: Any) -> str:
        return "inc"

    async def close() -> None:
        return None

    async def upstream() -> AsyncGenerator[bytes, None]:
        for raw in chunks:
            yield raw

    out = b"".join([b async for b in StreamGuard(policy, record, close).run(upstream())])
    assert out == b"".join(chunks)
