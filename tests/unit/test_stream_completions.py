"""The stream guard over OpenAI legacy ``text_completion`` chunks (gateway.stream.completions),
driven with lists of upstream byte chunks in both modes: benign text, split terms, held text
before the finish, redaction, several choices, the usage chunk, logprobs and the explicit label.
Every chunk the guard sends must be a ``text_completion`` chunk (``text``, never ``delta``)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from gateway.duties import ExplicitLabel
from gateway.policy import Policy
from gateway.policy_loader import load_policy
from gateway.screening import Decision, Segment
from gateway.stream.completions import CompletionsShape
from gateway.stream.guard import StreamGuard
from gateway.stream.labeling import StreamLabel
from gateway.stream.sse import SSEParser

POLICY = """\
name: completions-stream
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
DONE = b"data: [DONE]\n\n"
LABEL = "【AI生成】"
Position = Literal["start", "end"]
USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}


@pytest.fixture(scope="module", params=["hold", "async"])
def policy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Policy:
    path = tmp_path_factory.mktemp("policy") / "p.yaml"
    path.write_text(POLICY.format(mode=request.param), encoding="utf-8")
    return load_policy(path)


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


def chunk(text: str, finish: str | None = None, index: int = 0, logprobs: Any = None) -> bytes:
    choice = {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}
    return sse({"id": "cmpl-1", "object": "text_completion", "created": 1700000000, "model": "davinci",
                "choices": [choice]})  # fmt: skip


def usage() -> bytes:
    return sse({"id": "cmpl-1", "object": "text_completion", "created": 1700000000, "model": "davinci",
                "choices": [], "usage": USAGE})  # fmt: skip


def stream(pieces: list[str], index: int = 0) -> list[bytes]:
    return [*(chunk(p, index=index) for p in pieces), chunk("", "stop", index)]


@dataclass
class Result:
    chunks: list[dict[str, Any]]
    closes: int
    records: list[Decision] = field(default_factory=list)

    def text(self, index: int = 0) -> str:
        return "".join(c["text"] for d in self.chunks for c in d["choices"] if c["index"] == index)

    def finish(self, index: int = 0) -> str | None:
        reasons: list[str | None] = [
            c["finish_reason"] for d in self.chunks for c in d["choices"] if c["index"] == index
        ]
        return reasons[-1]


async def run(
    policy: Policy, upstream_chunks: list[bytes], label: Position | None = None, choices: int = 1
) -> Result:
    records: list[Decision] = []
    closes = 0

    async def record(decision: Decision, segments: list[Segment], exposed: int, offsets: Any) -> str:
        records.append(decision)
        return f"inc_{len(records)}"

    async def close() -> None:
        nonlocal closes
        closes += 1

    async def upstream() -> AsyncGenerator[bytes, None]:
        for raw in upstream_chunks:
            yield raw

    shape = CompletionsShape()
    stream_label = (
        StreamLabel(ExplicitLabel(text=LABEL, position=label), write=shape.write) if label else None
    )
    guard = StreamGuard(policy, record, close, shape=shape, label=stream_label, choices=choices)
    parser = SSEParser()
    events = [e for raw in [b async for b in guard.run(upstream())] for e in parser.feed(raw)]
    assert events[-1].data == "[DONE]"
    out = [json.loads(e.data) for e in events[:-1] if e.data]
    for c in out:  # what the openai SDK's Completion model reads
        assert c["object"] == "text_completion" and c["id"] == "cmpl-1" and c["model"] == "davinci"
        for choice in c["choices"]:
            assert "delta" not in choice and isinstance(choice["text"], str) and "logprobs" in choice
    return Result(out, closes, records)


@pytest.mark.parametrize(
    "pieces", [["Once ", "upon a ", "time."], ["从前，", "有一座", "山。"]], ids=["en", "zh"]
)
async def test_benign_text_comes_out_whole_and_in_order(policy: Policy, pieces: list[str]) -> None:
    result = await run(policy, [*stream(pieces), DONE])
    assert result.text() == "".join(pieces)
    assert result.finish() == "stop"
    assert not result.closes and not result.records


@pytest.mark.parametrize(
    ("pieces", "term"),
    [(["The answer: zor", "blax is the key"], "zorblax"),
     (["好的，这是炸", "药配", "方：第一步"], "炸药配方"),
     (["Here: z", "o", "r", "b", "l", "a", "x!"], "zorblax")],
    ids=["en-2", "zh-3", "en-chars"],
)  # fmt: skip
async def test_split_term_is_cut(policy: Policy, pieces: list[str], term: str) -> None:
    result = await run(policy, [*stream([*pieces, " and more"]), DONE])
    final = result.chunks[-1]
    [choice] = final["choices"]
    assert choice["finish_reason"] == "content_filter" and choice["logprobs"] is None
    assert choice["text"].endswith(policy.spec.refusal.message)
    note = final["modgate"]
    assert note["action"] == "block" and "A.1.d" in note["risks"] and note["incident_id"] == "inc_1"
    assert result.closes == 1 and len(result.records) == 1
    shown = result.text()[: -len(choice["text"])]
    lead = "".join(pieces).split(term)[0]
    if policy.spec.streaming.mode == "hold":
        assert shown == lead and "retract" not in note
    else:  # async: the start of the term was shown at once; the cut names it
        retract = note["retract"]
        assert retract["choice"] == 0 and retract["channel"] == "content"
        assert (
            retract["start"] == len(lead)
            and shown[retract["start"] : retract["end"]] == term[: retract["end"] - retract["start"]]
        )


async def test_held_text_goes_out_before_the_finish(policy: Policy) -> None:
    """A tail that could still start a term waits in hold mode, but never past its choice's end."""
    result = await run(policy, [*stream(["The zor", "bl"]), DONE])
    assert result.text() == "The zorbl"
    assert result.chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert not result.records


async def test_redaction_across_chunks(policy: Policy) -> None:
    result = await run(policy, [*stream(["the secret", "word is 机密", "词 ok"]), DONE])
    text = result.text()
    if policy.spec.streaming.mode == "hold":
        assert text == "the [REDACTED] is [REDACTED] ok"
    assert "secretword" not in text.replace("[REDACTED]", "")
    assert result.records[-1].action == "redact"


async def test_two_choices_one_cut_the_other_goes_on_and_usage_stays_last(policy: Policy) -> None:
    upstream = []
    for a, b in zip(["Fine ", "zor", "blax ", "end"], ["Good ", "day ", "to ", "you"], strict=True):
        upstream += [chunk(a, index=0), chunk(b, index=1)]
    upstream += [chunk("", "stop", 0), chunk("", "stop", 1), usage(), DONE]
    result = await run(policy, upstream, choices=2)
    assert result.finish(0) == "content_filter" and result.finish(1) == "stop"
    assert "zorblax" not in result.text(0)
    assert result.text(1) == "Good day to you"
    assert result.chunks[-1]["choices"] == [] and result.chunks[-1]["usage"] == USAGE
    assert result.closes == 0  # choice 1 went on: generation was not stopped


async def test_every_choice_cut_closes_the_upstream(policy: Policy) -> None:
    upstream = [chunk("zor", index=0), chunk("zor", index=1), chunk("blax", index=0), chunk("blax", index=1)]
    result = await run(
        policy, [*upstream, chunk("", "stop", 0), chunk("", "stop", 1), usage(), DONE], choices=2
    )
    assert result.finish(0) == result.finish(1) == "content_filter"
    assert result.closes == 1


async def test_logprobs_stay_only_where_the_text_is_what_came(policy: Policy) -> None:
    """Held text is released later than its logprobs came: they would spell it early."""
    lp = {"tokens": ["x"], "token_logprobs": [-0.1], "top_logprobs": None, "text_offset": [0]}
    result = await run(
        policy, [chunk("Hello. ", logprobs=lp), chunk("The zor", logprobs=lp), chunk("", "stop"), DONE]
    )
    choices = [c for d in result.chunks for c in d["choices"]]
    assert choices[0] == {"index": 0, "text": "Hello. ", "finish_reason": None, "logprobs": lp}
    if policy.spec.streaming.mode == "hold":  # "zor" waited: it could start a term
        assert all(c["logprobs"] is None for c in choices[1:])
    else:  # async mode released the chunk as it came
        assert choices[1] == {"index": 0, "text": "The zor", "finish_reason": None, "logprobs": lp}
    assert result.text() == "Hello. The zor"


@pytest.mark.parametrize("position", ["start", "end"])
async def test_explicit_label_in_completion_chunks(policy: Policy, position: Position) -> None:
    result = await run(policy, [*stream(["Once ", "upon a time."]), usage(), DONE], label=position)
    expected = f"{LABEL}\nOnce upon a time." if position == "start" else f"Once upon a time.\n{LABEL}"
    assert result.text() == expected
    assert result.chunks[-1]["choices"] == []  # the usage chunk stays last


async def test_cut_reply_is_labelled(policy: Policy) -> None:
    result = await run(policy, [*stream(["zor", "blax"]), DONE], label="end")
    assert result.chunks[-1]["choices"][0]["text"].endswith(f"\n{LABEL}")
