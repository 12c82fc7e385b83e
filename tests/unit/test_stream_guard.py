"""Tests for gateway.stream.guard: the StreamGuard driven with lists of upstream byte chunks.

The policy is real (lexicon terms written as YAML, plus the default policy's ``pii`` patterns);
the upstream is an async generator over a list; the recorder and ``close_upstream`` are small
coroutines that log what they were given. Assertions are on the SSE events the guard emits.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from gateway.errors import UpstreamUnavailable
from gateway.policy import Policy
from gateway.policy_loader import load_policy
from gateway.screening import Decision, Segment
from gateway.stream.channels import back
from gateway.stream.guard import StreamGuard
from gateway.stream.sse import SSEEvent, SSEParser

POLICY = """\
name: stream-test
extends: default
classifiers:
  guard: null  # the stream mechanics are tested with keywords; the model is tested on its own
  banned-terms:
    type: lexicon
    terms:
      A.1.d: ["zorblax", "炸药配方"]
      X.test_flag: ["flagword", "标记词"]
      X.test_redact: ["secretword", "机密词"]
rules:
  A.1.d: {{input: block, output: block, report: true}}
  X.test_flag: {{input: flag, output: flag}}
  X.test_redact: {{input: redact, output: redact}}
streaming:
  mode: {mode}
"""

REFUSAL = "抱歉，我无法提供这方面的内容。Sorry, I can't help with that."
DONE = b"data: [DONE]\n\n"


def _load(folder: Path, mode: str) -> Policy:
    path = folder / f"{mode}.yaml"
    path.write_text(POLICY.format(mode=mode), encoding="utf-8")
    return load_policy(path)


@pytest.fixture(scope="module")
def hold(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    return _load(tmp_path_factory.mktemp("policy"), "hold")


@pytest.fixture(scope="module")
def async_mode(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    return _load(tmp_path_factory.mktemp("policy"), "async")


# --- building upstream chunks ----------------------------------------------------------------


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
    return sse(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "test-model",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
        }
    )


def content(text: str, index: int = 0) -> bytes:
    return chunk({"content": text}, index=index)


def role(index: int = 0) -> bytes:
    return chunk({"role": "assistant", "content": ""}, index=index)


def stream(pieces: list[str], *, done: bool = True, finish: str = "stop") -> list[bytes]:
    """A one-choice content stream: role chunk, one chunk per piece, finish chunk, [DONE]."""
    return [role(), *(content(p) for p in pieces), chunk({}, finish), *([DONE] if done else [])]


def tool_args(arguments: str, call: int = 0) -> bytes:
    return chunk({"tool_calls": [{"index": call, "function": {"arguments": arguments}}]})


def tool_start(*names: str) -> bytes:
    calls = [
        {"index": i, "id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": ""}}
        for i, name in enumerate(names)
    ]
    return chunk({"role": "assistant", "content": None, "tool_calls": calls})


def compositions(term: str) -> Iterator[list[str]]:
    """Every way to cut ``term`` into 1..len(term) consecutive pieces."""
    for k in range(len(term)):
        for cuts in itertools.combinations(range(1, len(term)), k):
            bounds = [0, *cuts, len(term)]
            yield [term[a:b] for a, b in itertools.pairwise(bounds)]


# --- running the guard -----------------------------------------------------------------------


@dataclass
class Recorded:
    decision: Decision
    segments: list[Segment]
    exposed_chars: int
    offsets: list[list[int]]


@dataclass
class Outcome:
    #: What the guard yielded, one item per yield.
    out: list[bytes]
    events: list[SSEEvent]
    records: list[Recorded]
    cuts: list[Decision]
    #: "read:<i>" per upstream chunk pulled, "close", "record", "out:<i>" per yield, in order.
    log: list[str] = field(default_factory=list)

    @property
    def closes(self) -> int:
        return self.log.count("close")

    @property
    def pulled(self) -> int:
        return sum(entry.startswith("read:") for entry in self.log)

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in self.events if e.data and e.data != "[DONE]"]

    @property
    def final(self) -> dict[str, Any]:
        return self.chunks[-1]

    def text(self, index: int = 0, channel: str = "content", call: int = 0) -> str:
        out = []
        for data in self.chunks:
            for choice in data["choices"]:
                if choice["index"] != index:
                    continue
                delta = choice["delta"]
                if channel == "tool":
                    for tc in delta.get("tool_calls") or ():
                        if tc["index"] == call:
                            out.append((tc.get("function") or {}).get("arguments") or "")
                elif channel == "function_call":
                    out.append((delta.get("function_call") or {}).get("arguments") or "")
                else:
                    out.append(delta.get(channel) or "")
        return "".join(out)

    def all_text(self) -> str:
        """Every text field of every event, for leak checks."""
        return "\n".join(e.data or "" for e in self.events)

    def content_per_yield(self) -> list[str]:
        parser = SSEParser()
        per_yield = []
        for raw in self.out:
            texts = []
            for event in parser.feed(raw):
                if event.data and event.data != "[DONE]":
                    for choice in json.loads(event.data)["choices"]:
                        texts.append(choice["delta"].get("content") or "")
            per_yield.append("".join(texts))
        return per_yield


async def guard(policy: Policy, chunks: list[bytes]) -> Outcome:
    log: list[str] = []
    records: list[Recorded] = []
    cuts: list[Decision] = []

    async def record(
        decision: Decision, segments: list[Segment], exposed: int, offsets: list[list[int]]
    ) -> str:
        log.append("record")
        records.append(Recorded(decision, list(segments), exposed, offsets))
        return f"inc_test_{len(records)}"

    async def close_upstream() -> None:
        log.append("close")

    async def upstream() -> AsyncGenerator[bytes, None]:
        for i, raw in enumerate(chunks):
            log.append(f"read:{i}")
            yield raw

    source = upstream()
    g = StreamGuard(policy, record, close_upstream, on_cut=cuts.append)
    out: list[bytes] = []
    try:
        async for raw in g.run(source):
            log.append(f"out:{len(out)}")
            out.append(raw)
    finally:
        await source.aclose()
    parser = SSEParser()
    events = [e for raw in out for e in parser.feed(raw)] + parser.close()
    return Outcome(out, events, records, cuts, log)


def assert_cut(result: Outcome, *, action: str = "block", risks: tuple[str, ...] = ("A.1.d",)) -> None:
    """The shape every cut shares: content_filter final chunk, modgate annotation, [DONE],
    upstream closed once before the final chunk, one incident recorded before it too."""
    assert result.events[-1].data == "[DONE]"
    final = result.final
    assert {c["finish_reason"] for c in final["choices"]} == {"content_filter"}
    assert all(c["delta"]["content"].endswith(REFUSAL) for c in final["choices"])
    assert final["modgate"]["action"] == action
    assert final["modgate"]["risks"][: len(risks)] == list(risks)  # most severe first
    assert final["modgate"]["incident_id"] == "inc_test_1"
    assert final["object"] == "chat.completion.chunk"
    assert final["model"] == "test-model"
    assert result.closes == 1
    last_out = f"out:{len(result.out) - 1}"
    assert result.log.index("close") < result.log.index("record") < result.log.index(last_out)
    assert result.records[0].decision.action == action
    assert [d.action for d in result.cuts] == [action]


def assert_passed(result: Outcome) -> None:
    assert result.events[-1].data == "[DONE]"
    assert result.closes == 0
    assert not any("modgate" in c for c in result.chunks)
    assert all(c["finish_reason"] != "content_filter" for d in result.chunks for c in d["choices"])


# --- benign text -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pieces",
    [
        ["Hello", " there,", " my friend.", " How", " are you?"],
        ["今天", "天气", "很好，", "我们去", "公园散步吧。"],
        ["混合 mixed ", "文本 text，", "数字 12345 ", "and 标点！"],
        ["zor", "bla is not a word; ", "炸药", "很危险，", "secret", "ary ", "flag", "pole."],
    ],
)
async def test_benign_text_comes_out_complete_and_in_order(hold: Policy, pieces: list[str]) -> None:
    result = await guard(hold, stream(pieces))
    assert result.text() == "".join(pieces)
    assert_passed(result)
    assert result.records == []
    assert result.final["choices"][0]["finish_reason"] == "stop"
    assert result.pulled == len(pieces) + 3


async def test_no_holdback_when_nothing_could_start_a_term(hold: Policy) -> None:
    pieces = ["Hello ", "my ", "good ", "friend, ", "we ", "walk ", "in ", "sunny ", "weather. "]
    chunks = stream(pieces)
    result = await guard(hold, chunks)
    # One output per upstream read, each carrying that read's text: nothing was held back.
    assert len(result.out) == len(chunks)
    assert result.content_per_yield() == ["", *pieces, "", ""]
    assert result.out[1:-2] == chunks[1:-2]  # untouched chunks pass byte for byte


async def test_held_prefix_is_released_when_it_turns_out_benign(hold: Policy) -> None:
    result = await guard(hold, stream(["It is zor", "ro, not that. ", "那是炸", "鸡。"]))
    per_yield = result.content_per_yield()
    # "zor" and "炸" could start a term: they wait for the next read, then come out in order.
    assert per_yield[1] == "It is "
    assert per_yield[2] == "zorro, not that. "
    assert per_yield[3] == "那是"
    assert result.text() == "It is zorro, not that. 那是炸鸡。"
    assert_passed(result)


async def test_keepalive_comments_pass_through(hold: Policy) -> None:
    chunks = [role(), content("你好 "), b": keep-alive\n\n", content("world. "), chunk({}, "stop"), DONE]
    result = await guard(hold, chunks)
    assert [e.comment for e in result.events if e.comment is not None] == ["keep-alive"]
    assert result.text() == "你好 world. "


@pytest.mark.parametrize("pieces", [["one ", "two"], ["一", "二", "三"]])
async def test_missing_done_still_ends_with_done(hold: Policy, pieces: list[str]) -> None:
    result = await guard(hold, stream(pieces, done=False))
    assert result.text() == "".join(pieces)
    assert result.events[-1].data == "[DONE]"
    assert [e.data for e in result.events].count("[DONE]") == 1


async def test_events_after_done_are_dropped(hold: Policy) -> None:
    result = await guard(hold, [*stream(["好的。"]), content("zorblax")])
    assert result.text() == "好的。"
    assert result.records == []


async def test_usage_chunk_passes(hold: Policy) -> None:
    usage = sse(
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 3}}
    )
    result = await guard(hold, [content("hello "), content("世界"), chunk({}, "stop"), usage, DONE])
    assert result.text() == "hello 世界"
    assert result.chunks[-1]["usage"] == {"total_tokens": 3}


# --- a blocked term split across chunks (hold) -----------------------------------------------

SENTENCES = [
    ("zorblax", "The answer is ", " and more text."),
    ("zorblax", "答案是", "。然后继续。"),
    ("炸药配方", "答案是", "，然后继续说。"),
    ("炸药配方", "Here it is: ", " and more text."),
]


@pytest.mark.parametrize(("term", "before", "after"), SENTENCES)
async def test_split_term_is_cut_before_any_of_it_leaks(
    hold: Policy, term: str, before: str, after: str
) -> None:
    prefixes = [term[:i] for i in range(1, len(term) + 1)]
    assert not any(p in before + after + REFUSAL for p in prefixes)  # the check below can fail
    for parts in compositions(term):
        for glued in (False, True):
            if glued:  # the term's first and last pieces share a chunk with the benign text
                pieces = [before + parts[0], *parts[1:], after] if len(parts) > 1 else [before + term + after]
            else:
                pieces = [before, *parts, after]
            pieces += [" 还有", " more."]
            result = await guard(hold, stream(pieces))
            shown = result.text()
            assert not any(p in result.all_text() for p in prefixes), pieces
            assert shown.endswith(REFUSAL), pieces
            assert before.startswith(shown.removesuffix(REFUSAL).removesuffix("\n\n")), pieces
            assert_cut(result)
            assert result.final["modgate"]["risks"] == ["A.1.d"]
            [recorded] = result.records
            assert recorded.exposed_chars == 0, pieces
            assert recorded.offsets == [[len(before), len(before) + len(term)]], pieces
            # Generation stops: the guard reads at most one chunk past the term's end.
            term_end = next(i for i, _ in enumerate(pieces) if term in "".join(pieces[: i + 1]))
            assert result.pulled <= term_end + 3, pieces


@pytest.mark.parametrize("term", ["zorblax", "炸药配方", "ZORBLAX", "ｚｏｒｂｌａｘ"])
async def test_term_at_the_very_end_is_cut(hold: Policy, term: str) -> None:
    half = len(term) // 2
    for done in (True, False):
        result = await guard(hold, stream(["ok, ", term[:half], term[half:]], done=done))
        assert term[:half] not in result.all_text()
        assert_cut(result)
        assert result.records[0].exposed_chars == 0


async def test_term_in_the_finish_chunk_is_cut(hold: Policy) -> None:
    chunks = [role(), content("好的，炸药"), chunk({"content": "配方"}, "stop"), DONE]
    result = await guard(hold, chunks)
    assert "炸药" not in result.all_text()
    assert result.text() == "好的，\n\n" + REFUSAL
    assert_cut(result)


async def test_whole_stream_in_one_read_is_cut_before_anything(hold: Policy) -> None:
    result = await guard(hold, [b"".join(stream(["Hello ", "zor", "blax", " more"]))])
    assert [c["choices"][0]["delta"]["content"] for c in result.chunks] == [REFUSAL]
    assert_cut(result)


@pytest.mark.parametrize("size", [1, 2, 5, 13, 64])
async def test_bytes_split_anywhere_still_cut(hold: Policy, size: int) -> None:
    data = b"".join(stream(["你好，", "zor", "blax", "以及更多", " text"]))
    result = await guard(hold, [data[i : i + size] for i in range(0, len(data), size)])
    assert "zor" not in result.all_text()
    assert result.text() == "你好，\n\n" + REFUSAL
    assert_cut(result)


async def test_long_text_before_the_term_reports_absolute_offsets(hold: Policy) -> None:
    before = ["今天天气很好。", "The weather is nice. "] * 10
    prefix = "".join(before)
    result = await guard(hold, stream([*before, "炸药", "配方", "。"]))
    assert result.text() == prefix + "\n\n" + REFUSAL
    assert_cut(result)
    assert result.records[0].offsets == [[len(prefix), len(prefix) + 4]]


@pytest.mark.parametrize("text", ["xzorblax", "zorblaxes", "the zorblaxian way"])
async def test_term_inside_a_longer_word_passes(hold: Policy, text: str) -> None:
    half = len(text) // 2
    result = await guard(hold, stream([text[:half], text[half:], " ok"]))
    assert result.text() == text + " ok"
    assert_passed(result)


# --- async mode ------------------------------------------------------------------------------


async def test_async_releases_at_once(async_mode: Policy) -> None:
    pieces = ["It is zor", "ro, ", "那是炸", "鸡。", "secret", "ary"]
    chunks = stream(pieces)
    result = await guard(async_mode, chunks)
    assert len(result.out) == len(chunks)
    assert result.content_per_yield() == ["", *pieces, "", ""]
    assert_passed(result)


@pytest.mark.parametrize(
    ("pieces", "exposed"),
    [
        (["Hello ", "zor", "blax", " more", " words"], 3),
        (["你好", "炸药", "配方", "。更多", "内容"], 2),
        (["Hello ", "z", "o", "r", "b", "l", "a", "x", " more", " words"], 6),
    ],
)
async def test_async_cut_reports_exposed_chars(async_mode: Policy, pieces: list[str], exposed: int) -> None:
    result = await guard(async_mode, stream(pieces))
    assert_cut(result)
    [recorded] = result.records
    assert recorded.exposed_chars == exposed
    shown = result.text().removesuffix(REFUSAL).removesuffix("\n\n")
    assert shown == "".join(pieces)[: len(pieces[0]) + exposed]


async def test_async_term_in_one_chunk_is_not_exposed(async_mode: Policy) -> None:
    result = await guard(async_mode, stream(["好的。", "这是炸药配方。", "more"]))
    assert "炸药" not in result.all_text()
    assert_cut(result)
    assert result.records[0].exposed_chars == 0


# --- several choices -------------------------------------------------------------------------


async def test_two_choices_interleaved(hold: Policy) -> None:
    chunks = [role(0), role(1)]
    for a, b in [("Hi ", "你好"), ("there, ", "朋友，"), ("friend.", "再见！")]:
        chunks += [content(a, 0), content(b, 1)]
    chunks += [chunk({}, "stop", 0), chunk({}, "stop", 1), DONE]
    result = await guard(hold, chunks)
    assert result.text(0) == "Hi there, friend."
    assert result.text(1) == "你好朋友，再见！"
    finishes = [
        (c["index"], c["finish_reason"]) for d in result.chunks for c in d["choices"] if c["finish_reason"]
    ]
    assert finishes == [(0, "stop"), (1, "stop")]
    assert_passed(result)


async def test_split_term_in_one_of_two_choices_ends_that_choice_only(hold: Policy) -> None:
    chunks = [role(0), role(1)]
    for a, b in [("Hi ", "答案"), ("there, ", "是炸"), ("friend", "药配"), (".", "方。"), (" Bye", "再见")]:
        chunks += [content(a, 0), content(b, 1)]
    chunks += [chunk({}, "stop", 0), chunk({}, "stop", 1), DONE]
    result = await guard(hold, chunks)
    assert "炸" not in result.all_text()
    assert result.text(1) == "答案是\n\n" + REFUSAL
    assert result.text(0) == "Hi there, friend. Bye"  # the other choice goes on to its end
    finishes = [
        (c["index"], c["finish_reason"]) for d in result.chunks for c in d["choices"] if c["finish_reason"]
    ]
    assert finishes == [(1, "content_filter"), (0, "stop")]
    [cut_chunk] = [d for d in result.chunks if "modgate" in d]
    assert [c["index"] for c in cut_chunk["choices"]] == [1]
    assert cut_chunk["modgate"]["incident_id"] == "inc_test_1"
    assert result.events[-1].data == "[DONE]" and result.closes == 0  # generation of choice 0 went on
    [recorded] = result.records
    [hit] = recorded.decision.hits
    assert recorded.segments[hit.segment].where == (1, "content", -1)


async def test_when_every_choice_is_cut_the_upstream_closes(hold: Policy) -> None:
    chunks = [role(0), role(1), content("a zor", 1), content("blax ", 1), content("说炸药", 0)]
    chunks += [content("配方", 0), content("more", 0), content("more", 1), chunk({}, "stop", 0), DONE]
    result = await guard(hold, chunks)
    assert "zorblax" not in result.all_text() and "炸药" not in result.all_text()
    cuts = [d for d in result.chunks if "modgate" in d]
    assert [[c["index"] for c in d["choices"]] for d in cuts] == [[1], [0]]
    assert result.closes == 1 and result.events[-1].data == "[DONE]"
    assert "more" not in result.all_text() and len(result.records) == 2


async def test_a_term_split_across_two_choices_is_not_a_term(hold: Policy) -> None:
    chunks = [role(0), role(1), content("说 zor", 0), content("blax 吧", 1), content(" ok", 0)]
    chunks += [chunk({}, "stop", 0), chunk({}, "stop", 1), DONE]
    result = await guard(hold, chunks)
    assert (result.text(0), result.text(1)) == ("说 zor ok", "blax 吧")
    assert_passed(result)


async def test_cut_leaves_a_finished_choice_alone(hold: Policy) -> None:
    chunks = [content("完成了。", 0), chunk({}, "stop", 0), content("a zor", 1), content("blax b", 1)]
    chunks += [chunk({}, "stop", 1), DONE]
    result = await guard(hold, chunks)
    assert result.text(0) == "完成了。"
    assert [c["index"] for c in result.final["choices"]] == [1]


# --- other channels --------------------------------------------------------------------------


async def test_tool_call_arguments_reassemble(hold: Policy) -> None:
    parts = ['{"city": ', '"Par', 'is", "note": "巴', '黎"}']
    result = await guard(
        hold, [tool_start("weather"), *(tool_args(p) for p in parts), chunk({}, "tool_calls"), DONE]
    )
    assert json.loads(result.text(channel="tool")) == {"city": "Paris", "note": "巴黎"}
    assert result.final["choices"][0]["finish_reason"] == "tool_calls"
    assert_passed(result)


@pytest.mark.parametrize("parts", [['{"q": "zor', 'blax"}'], ['{"q": "炸', "药", '配方"}']])
async def test_split_term_in_tool_call_arguments_is_cut(hold: Policy, parts: list[str]) -> None:
    result = await guard(
        hold, [tool_start("search"), *(tool_args(p) for p in parts), chunk({}, "tool_calls"), DONE]
    )
    shown = result.text(channel="tool")
    assert shown == '{"q": "'
    assert "zor" not in result.all_text()
    assert "炸" not in result.all_text()
    assert_cut(result)
    recorded = result.records[0]
    assert recorded.segments[recorded.decision.hits[0].segment].channel == "tool_arguments"


async def test_term_split_across_two_tool_calls_is_not_a_term(hold: Policy) -> None:
    chunks = [tool_start("a", "b"), tool_args('{"x": "zor', 0), tool_args('{"y": "blax', 1)]
    chunks += [tool_args('"}', 0), tool_args('"}', 1), chunk({}, "tool_calls"), DONE]
    result = await guard(hold, chunks)
    assert result.text(channel="tool", call=0) == '{"x": "zor"}'
    assert result.text(channel="tool", call=1) == '{"y": "blax"}'
    assert_passed(result)


async def test_split_term_in_legacy_function_call_is_cut(hold: Policy) -> None:
    start = chunk({"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": ""}})
    parts = ['{"a": "炸药', '配方"}']
    chunks = [
        start,
        *(chunk({"function_call": {"arguments": p}}) for p in parts),
        chunk({}, "function_call"),
        DONE,
    ]
    result = await guard(hold, chunks)
    assert "炸药" not in result.all_text()
    assert_cut(result)


async def test_reasoning_content_passes_complete(hold: Policy) -> None:
    chunks = [role(), *(chunk({"reasoning_content": p}) for p in ["让我", "想想", "… let me", " think."])]
    chunks += [content("答案是 42。"), chunk({}, "stop"), DONE]
    result = await guard(hold, chunks)
    assert result.text(channel="reasoning_content") == "让我想想… let me think."
    assert result.text() == "答案是 42。"
    assert_passed(result)


@pytest.mark.parametrize(
    "parts", [["让我想想", "炸", "药配", "方的事"], ["Thinking about zo", "rbl", "ax now"]]
)
async def test_split_term_in_reasoning_is_cut(hold: Policy, parts: list[str]) -> None:
    chunks = [
        role(),
        *(chunk({"reasoning_content": p}) for p in parts),
        content("ok"),
        chunk({}, "stop"),
        DONE,
    ]
    result = await guard(hold, chunks)
    assert "炸" not in result.all_text()
    assert "zo" not in result.all_text()
    assert result.text(channel="reasoning_content") in ("让我想想", "Thinking about ")
    assert_cut(result)
    recorded = result.records[0]
    assert recorded.segments[recorded.decision.hits[0].segment].channel == "reasoning_content"


# --- redact and flag -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pieces", "expected", "codes"),
    [
        (["A secr", "etword and more. "], "A [REDACTED] and more. ", {"X.test_redact"}),
        (["这是机", "密", "词，别说。"], "这是[REDACTED]，别说。", {"X.test_redact"}),
        (["call me at 138", "0013", "8000 today"], "call me at [REDACTED] today", {"A.4.f"}),
        (["请拨打138", "0013", "8000，谢谢"], "请拨打[REDACTED]，谢谢", {"A.4.f"}),
        (["电话１３８", "００１３", "８０００。"], "电话[REDACTED]。", {"A.4.f"}),
        (["mail j.smi", "th@exam", "ple.com now"], "mail [REDACTED] now", {"A.4.f"}),
        (["机密词 and 138", "00138000"], "[REDACTED] and [REDACTED]", {"X.test_redact", "A.4.f"}),
    ],
)
async def test_redacted_across_chunks(
    hold: Policy, pieces: list[str], expected: str, codes: set[str]
) -> None:
    result = await guard(hold, stream(pieces))
    assert result.text() == expected
    assert_passed(result)
    [recorded] = result.records
    assert recorded.decision.action == "redact"
    assert {h.code for h in recorded.decision.hits} == codes
    assert recorded.exposed_chars == 0
    assert result.log.index("record") > result.log.index(f"out:{len(result.out) - 2}")


async def test_plain_word_shown_before_an_at_sign_is_recorded_as_exposed(hold: Policy) -> None:
    # Plain words are not held as possible addresses: "ali" is shown, the rest is masked.
    result = await guard(hold, stream(["mail ali", "ce@exam", "ple.com now"]))
    assert result.text() == "mail ali[REDACTED] now"
    [recorded] = result.records
    assert recorded.decision.action == "redact" and recorded.exposed_chars == len("ali")


@pytest.mark.parametrize(
    "pieces",
    [["This has a flag", "word in it. "], ["这里有标", "记词。"], ["标", "记", "词 and flag", "word!"]],
)
async def test_flag_term_passes_and_is_recorded_once_at_the_end(hold: Policy, pieces: list[str]) -> None:
    result = await guard(hold, stream(pieces))
    assert result.text() == "".join(pieces)
    assert_passed(result)
    [recorded] = result.records
    assert recorded.decision.action == "flag"
    assert {h.code for h in recorded.decision.hits} == {"X.test_flag"}
    assert {h.action for h in recorded.decision.hits} == {"flag"}
    assert recorded.exposed_chars == 0
    # Recorded after the last text went out, before [DONE].
    assert result.log[-2:] == ["record", f"out:{len(result.out) - 1}"]
    assert result.out[-1] == DONE


async def test_flag_then_block_records_both(hold: Policy) -> None:
    result = await guard(hold, stream(["标记词 first. ", "then zor", "blax", " end"]))
    assert result.text() == "标记词 first. then \n\n" + REFUSAL
    assert_cut(result)
    assert [r.decision.action for r in result.records] == ["block", "flag"]
    assert result.records[1].offsets == [[0, 3]]


async def test_flag_offsets_list_each_span_once(hold: Policy) -> None:
    result = await guard(hold, stream(["标", "记", "词 and flag", "word!"]))
    [recorded] = result.records
    assert recorded.offsets == [[0, 3], [8, 16]]


async def test_redact_waits_for_the_word_to_end(hold: Policy) -> None:
    result = await guard(hold, stream(["secretword here, and secretword", "s are fine."]))
    assert result.text() == "[REDACTED] here, and secretwords are fine."


async def test_word_bounded_term_alone_in_the_tail_waits(hold: Policy) -> None:
    result = await guard(hold, stream(["and secretword", "s are fine."]))
    assert result.text() == "and secretwords are fine."
    assert result.records == []


async def test_async_redact_records_what_was_exposed(async_mode: Policy) -> None:
    result = await guard(async_mode, stream(["call 138", "0013", "8000 ok"]))
    [recorded] = result.records
    assert recorded.exposed_chars == 7


# --- broken upstreams ------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [[], [DONE], [b": ping\n\n"], [b": ping\n\n", DONE]])
async def test_no_completion_chunk_is_an_upstream_error(hold: Policy, chunks: list[bytes]) -> None:
    with pytest.raises(UpstreamUnavailable):
        await guard(hold, chunks)


@pytest.mark.parametrize("bad", [b"data: not json\n\n", b"data: [1, 2]\n\n", "data: 炸药配方\n\n".encode()])
async def test_non_json_data_is_an_upstream_error(hold: Policy, bad: bytes) -> None:
    with pytest.raises(UpstreamUnavailable):
        await guard(hold, [content("ok "), bad, DONE])


def _mode(policy: Policy) -> Literal["hold", "async"]:
    return policy.spec.streaming.mode


def test_fixtures_are_what_they_say(hold: Policy, async_mode: Policy) -> None:
    assert (_mode(hold), _mode(async_mode)) == ("hold", "async")
    assert {"keywords", "pii", "banned-terms"} <= set(hold.classifiers)


async def test_a_choice_cut_in_one_read_ends_before_the_usage_chunk(hold: Policy) -> None:
    chunks = [role(0), role(1), content("fine ", 0), content("zor", 1), content("words", 0)]
    chunks += [content("blax ", 1), chunk({}, "stop", 0), chunk({}, "stop", 1)]
    usage = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "test-model"}
    chunks += [sse({**usage, "choices": [], "usage": {"total_tokens": 12}}), DONE]
    result = await guard(hold, [b"".join(chunks)])  # one upstream read
    assert result.chunks[-1]["usage"] == {"total_tokens": 12}
    assert result.text(0) == "fine words" and result.text(1) == REFUSAL
    assert [c["finish_reason"] for d in result.chunks for c in d["choices"] if c["finish_reason"]] == [
        "content_filter",
        "stop",
    ]


@pytest.mark.parametrize(
    ("text", "budget", "start"),
    [
        ("abcdefghij", 4, 6),  # Latin text: characters
        ("abc", 10, 0),
        ("天黑以后再说", 6, 4),  # a CJK character counts three
        ("天黑以后再说", 7, 4),
        ("ab天黑cd", 5, 3),  # mixed: "黑cd" is 3 + 2
        ("天黑", 2, 2),  # less than one CJK character: nothing
    ],
)
def test_a_model_windows_budget_counts_a_cjk_character_as_three(text: str, budget: int, start: int) -> None:
    assert back(text, len(text), budget) == start
