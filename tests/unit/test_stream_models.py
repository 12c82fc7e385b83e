"""The stream guard with a model classifier (awaited, whole-text verdicts, no spans).

The model is a fake at the classifier boundary: it flags texts that contain a needle, logs the
windows it was shown, and can be held until the test lets it answer. Hold mode: what windows
the model sees, and that nothing of the flagged text reaches the client. Async mode: text is
released while the model is still busy, and a cut names the delivered span to retract.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from classifiers.base import Scores
from gateway.metrics import Metrics
from gateway.policy import Policy, PolicyFile, Rule, StreamingSettings
from gateway.screening import ERROR_CODE, Decision, Segment
from gateway.stream.guard import StreamGuard
from gateway.stream.sse import SSEParser

DONE = b"data: [DONE]\n\n"


@dataclass
class Model:
    """Flags X.block on texts containing ``needle``; ``gate`` holds each answer until set."""

    name: str = "model"
    needle: str = "zap"
    gate: asyncio.Event | None = None
    delay: float = 0.0
    score: float = 1.0
    fail: Exception | None = None
    seen: list[str] = field(default_factory=list)

    async def classify(self, texts: Sequence[str]) -> list[Scores]:
        self.seen.extend(texts)
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return [Scores(self.name, {"X.block": self.score if self.needle in t else 0.0}) for t in texts]


def policy(model: Model, mode: str, **streaming: Any) -> Policy:
    spec = PolicyFile(
        name="models",
        rules={"X.block": Rule(input="block", output="block")},
        streaming=StreamingSettings(mode=mode, **streaming),  # type: ignore[arg-type]
    )
    return Policy(spec=spec, classifiers={model.name: model}, version="v", source="x")


def content(text: str, finish: str | None = None) -> bytes:
    chunk = {
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}],
    }  # fmt: skip
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


@dataclass
class Run:
    out: list[bytes]
    log: list[str]
    records: list[tuple[Decision, list[Segment], int, list[list[int]]]]

    @property
    def chunks(self) -> list[dict[str, Any]]:
        parser = SSEParser()
        events = [e for raw in self.out for e in parser.feed(raw)]
        return [json.loads(e.data) for e in events if e.data and e.data != "[DONE]"]

    @property
    def text(self) -> str:
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in self.chunks if c["choices"])

    @property
    def final(self) -> dict[str, Any]:
        return self.chunks[-1]


async def run(policy: Policy, upstream: AsyncGenerator[bytes, None], metrics: Metrics | None = None) -> Run:
    log: list[str] = []
    records: list[tuple[Decision, list[Segment], int, list[list[int]]]] = []

    async def record(
        decision: Decision, segments: list[Segment], exposed: int, offsets: list[list[int]]
    ) -> str:
        records.append((decision, segments, exposed, offsets))
        log.append("record")
        return "inc_1"

    async def close() -> None:
        log.append("close")

    out = []
    async for raw in StreamGuard(policy, record, close, metrics=metrics).run(upstream):
        out.append(raw)
        log.append(f"out:{raw.decode()[:60]}")
    await upstream.aclose()
    return Run(out, log, records)


async def pieces(texts: list[str], *, done: bool = True) -> AsyncGenerator[bytes, None]:
    for text in texts:
        yield content(text)
    yield content("", "stop")
    if done:
        yield DONE


# --- hold mode -------------------------------------------------------------------------------


async def test_hold_model_sees_its_context_and_at_sentence_ends_the_passage() -> None:
    model = Model()
    p = policy(model, "hold", model_context_chars=10, passage_chars=40)
    parts = ["abcdefghij", "klmnopqrst", "uvwxyz. Next", " one.", "0123456789"]
    result = await run(p, pieces(parts))
    assert result.text == "".join(parts)
    assert model.seen[:7] == [
        "abcdefghij",
        "abcdefghijklmnopqrst",  # 10 characters of context before the new text
        "abcdefghijklmnopqrstuvwxyz. Next",  # a sentence ends: the whole passage (up to 40)
        "abcdefghijklmnopqrstuvwxyz.",  # and the sentence alone
        "abcdefghijklmnopqrstuvwxyz. Next one.",
        "Next one.",
        " Next one.0123456789",
    ]
    # The end of the stream: the last 40 characters, and the last sentence alone.
    assert model.seen[7:] == ["hijklmnopqrstuvwxyz. Next one.0123456789", "Next one."]
    assert result.records == []


@pytest.mark.parametrize(
    ("parts", "lang"),
    [(["Sure. Here is", " how to zap", " it."], "en"), (["好的。具体", "做法是zap", "这个。"], "zh")],
)
async def test_hold_model_flag_cuts_before_the_flagged_text_leaves(parts: list[str], lang: str) -> None:
    metrics = Metrics()
    result = await run(policy(Model(), "hold"), pieces(parts), metrics)
    assert "zap" not in result.text and result.text.startswith(parts[0]), lang
    assert result.final["choices"][0]["finish_reason"] == "content_filter"
    assert "retract" not in result.final["modgate"]  # nothing to take back
    assert result.log.index("close") < result.log.index("record")
    [(decision, segments, exposed, offsets)] = result.records
    assert decision.action == "block" and exposed == 0
    [hit] = decision.hits
    assert "zap" in segments[hit.segment].text  # the record holds the window the model saw
    assert offsets == [[len(parts[0]), len("".join(parts[:2]))]]  # the text the model had not seen
    assert metrics.stream_exposed_chars.labels("hold")._sum.get() == 0
    assert metrics.stream_cut_seconds.labels("upstream_closed", "hold")._sum.get() > 0
    assert metrics.stream_first_text_seconds._sum.get() > 0


# --- async mode ------------------------------------------------------------------------------


async def test_async_releases_while_the_model_checks_and_the_cut_names_what_to_retract() -> None:
    gate = asyncio.Event()
    model = Model(gate=gate)
    log: list[str] = []

    async def upstream() -> AsyncGenerator[bytes, None]:
        for text in ["Sure. ", "Step one: zap", " the thing."]:
            yield content(text)
            await asyncio.sleep(0.01)
        log.append("all sent")
        gate.set()  # the model answers only now: everything above was released before it did
        await asyncio.sleep(5)  # still generating when the cut comes
        yield content(" more")
        yield DONE

    result = await run(policy(model, "async"), upstream())
    delivered = "Sure. Step one: zap the thing."
    assert result.text.startswith(delivered)
    assert result.final["choices"][0]["finish_reason"] == "content_filter"
    retract = result.final["modgate"]["retract"]
    # The model's second check saw the whole passage (a sentence ended) and flagged it: the
    # client takes back all it saw, not only the part new to the model.
    assert retract == {"choice": 0, "channel": "content", "start": 0, "end": len(delivered)}
    assert any("zap" in seen for seen in model.seen[1:])
    assert result.final["modgate"]["incident_id"] == "inc_1"
    assert result.log.count("close") == 1 and "more" not in result.text
    [(_, _, exposed, _)] = result.records
    assert exposed == len(delivered)


async def test_async_model_check_at_stream_end_sees_the_whole_passage() -> None:
    model = Model(needle="天黑以后zap一下")  # no window before the end holds all of it
    result = await run(policy(model, "async", model_context_chars=2), pieces(["天黑", "以后", "zap", "一下"]))
    assert result.text.startswith("天黑以后zap一下")
    assert model.seen[-1] == "天黑以后zap一下"
    assert result.final["modgate"]["retract"]["end"] == len("天黑以后zap一下")
    assert result.final["choices"][0]["finish_reason"] == "content_filter"


async def test_async_benign_stream_passes_with_every_text_checked() -> None:
    model = Model()
    result = await run(policy(model, "async"), pieces(["Hello ", "there. ", "你好。"]))
    assert result.text == "Hello there. 你好。"
    assert result.out[-1].endswith(DONE) and result.records == []
    assert "你好。" in "".join(model.seen)


async def test_async_model_failure_counts_as_the_policys_on_error() -> None:
    model = Model(fail=RuntimeError("model down"))
    result = await run(policy(model, "async"), pieces(["Hello ", "there."]))
    assert result.final["choices"][0]["finish_reason"] == "content_filter"
    [(decision, _, _, _)] = result.records
    assert [h.code for h in decision.hits] == [ERROR_CODE]


def with_terms(model: Model, mode: str, term: str) -> Policy:
    from pathlib import Path

    from classifiers.registry import builtin_registry

    registry = builtin_registry()
    terms = registry.build(
        "terms", "lexicon", registry.validate("lexicon", {"terms": {"X.block": [term]}}, Path.cwd())
    )
    p = policy(model, mode)
    return Policy(spec=p.spec, classifiers={"terms": terms, "model": model}, version="v", source="x")


@pytest.mark.parametrize("term", ["zorblax", "炸药配方"])
async def test_hold_keyword_cut_does_not_wait_for_the_model(term: str) -> None:
    gate = asyncio.Event()  # never set: the model's first check never ends
    model = Model(gate=gate)
    result = await asyncio.wait_for(
        run(with_terms(model, "hold", term), pieces([term[:3], term[3:] + " x"])), 5
    )
    # The model got the first piece; the second came while it checked, and the keyword lists
    # cut on it at once (the model's check was abandoned, not awaited).
    assert model.seen == [term[:3]]
    assert term[:3] not in result.text and result.log.count("close") == 1
    assert result.final["choices"][0]["finish_reason"] == "content_filter"
    assert result.final["modgate"]["risks"] == ["X.block"]


@pytest.mark.parametrize("parts", [["Hello ", "there, ", "friend."], ["你好，", "朋友，", "再见。"]])
async def test_hold_reads_on_while_the_model_checks_and_releases_only_what_it_cleared(
    parts: list[str],
) -> None:
    gate = asyncio.Event()
    model = Model(gate=gate)
    log: list[str] = []
    out: list[bytes] = []

    async def upstream() -> AsyncGenerator[bytes, None]:
        for text in parts:
            yield content(text)
            log.append(f"sent:{text}")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        log.append("gate")
        gate.set()  # the model's first check (of the first piece) ends only now
        await asyncio.sleep(0.05)
        yield content("", "stop")
        yield DONE

    async def record(*_: Any) -> str:
        return "inc_1"

    async def close() -> None:
        log.append("close")

    async def consume() -> None:
        async for raw in StreamGuard(with_terms(model, "hold", "zorblax"), record, close).run(upstream()):
            log.append("out" if b'"content"' in raw else "meta")
            out.append(raw)

    await asyncio.wait_for(consume(), 5)  # a guard that read nothing while the model ran would hang
    # Every piece was read while the first check ran; nothing went out before it ended.
    assert log.index(f"sent:{parts[-1]}") < log.index("gate") < log.index("out")
    assert model.seen[0] == parts[0] and any(parts[-1] in seen for seen in model.seen[1:])
    parser = SSEParser()
    chunks = [json.loads(e.data) for raw in out for e in parser.feed(raw) if e.data and e.data != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "".join(parts) and chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "parts", [["It said zap", " and more", " words."], ["它说zap", "然后更多", "的话。"]]
)
async def test_a_weak_verdict_on_a_window_mid_sentence_waits_for_the_sentence(parts: list[str]) -> None:
    model = Model(score=0.6)  # over the rule's 0.5, under window_min_score
    result = await run(policy(model, "hold", window_min_score=0.8), pieces(parts))
    # Not cut on "...zap" mid-sentence: the text flowed until the sentence ended, then the cut.
    assert result.text.startswith("".join(parts[:2])) and parts[2] not in result.text
    assert result.final["choices"][0]["finish_reason"] == "content_filter"
    strong = await run(policy(Model(score=0.9), "hold", window_min_score=0.8), pieces(parts))
    assert "zap" not in strong.text  # a strong verdict cuts at once


async def test_a_soft_model_hit_far_into_a_stream_is_recorded_within_its_text() -> None:
    model = Model(needle="zap")
    spec = PolicyFile(
        name="soft",
        rules={"X.block": Rule(input="flag", output="flag")},
        streaming=StreamingSettings(mode="hold"),
    )
    p = Policy(spec=spec, classifiers={"model": model}, version="v", source="x")
    lead = [f"line {i} is fine. " for i in range(40)]
    result = await run(p, pieces([*lead, "then zap", " it."]))
    assert result.text == "".join([*lead, "then zap", " it."])  # a flag lets it through
    [(decision, segments, _, offsets)] = result.records
    assert decision.action == "flag" and offsets and offsets[0][1] <= len(result.text)
    for hit in decision.hits:
        text = segments[hit.segment].text
        assert all(0 <= s.start <= s.end <= len(text) for s in hit.spans)


@pytest.mark.parametrize(
    ("parts", "needle"),
    [
        (["Fine. Here is", " how to", " zap it.", " Bye."], "how to zap it."),
        (["好的。下面是", "怎么去", "zap它。", "再见。"], "怎么去zap它。"),
    ],
)
async def test_sentence_release_shows_no_part_of_a_sentence_the_model_stops(
    parts: list[str], needle: str
) -> None:
    first = parts[0][: max(parts[0].find("."), parts[0].find("。")) + 1]
    window = await run(policy(Model(needle=needle), "hold"), pieces(parts))
    # Released window by window, the harmful sentence's start was shown before the cut.
    assert window.text.startswith("".join(parts[:2]))
    sentence = await run(policy(Model(needle=needle), "hold", release="sentence"), pieces(parts))
    # Only the whole sentence the model cleared, then the refusal.
    assert sentence.text.startswith(first) and parts[0][len(first) :].strip() not in sentence.text
    assert sentence.final["choices"][0]["finish_reason"] == "content_filter"
    [(_, _, exposed, _)] = sentence.records
    assert exposed == 0


@pytest.mark.parametrize("parts", [["One. Two", " three.", " Four"], ["一。二", "三。", "四"]])
async def test_sentence_release_passes_benign_text_whole_sentences_at_a_time(parts: list[str]) -> None:
    result = await run(policy(Model(), "hold", release="sentence"), pieces(parts))
    assert result.text == "".join(parts) and result.records == []
    texts = [c["choices"][0]["delta"].get("content") for c in result.chunks if c["choices"]]
    # Each release ends at a sentence end, but the last (the end of the stream releases the rest).
    released = [t for t in texts if t]
    assert all(t[-1] in ".。" for t in released[:-1]) and released[-1].endswith(parts[-1])


@dataclass
class LoneSentence(Model):
    """Scores only the sentence ``needle`` seen alone (its passage reads as benign)."""

    async def classify(self, texts: Sequence[str]) -> list[Scores]:
        self.seen.extend(texts)
        return [
            Scores(self.name, {"X.block": self.score if t.strip() == self.needle else 0.0}) for t in texts
        ]


@pytest.mark.parametrize(
    ("parts", "needle"),
    [(["All fine. Zap", " it now."], "Zap it now."), (["都好。现在", "zap它。"], "现在zap它。")],
)
async def test_the_last_sentence_alone_stops_a_stream_only_on_a_strong_verdict(
    parts: list[str], needle: str
) -> None:
    weak = await run(
        policy(LoneSentence(needle=needle, score=0.6), "hold", window_min_score=0.8), pieces(parts)
    )
    assert needle in weak.text and weak.records == []  # a short sentence alone misleads a model
    strong = await run(
        policy(LoneSentence(needle=needle, score=0.9), "hold", window_min_score=0.8), pieces(parts)
    )
    assert needle not in strong.text
    assert strong.final["choices"][0]["finish_reason"] == "content_filter"
