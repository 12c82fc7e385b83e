"""Tests for gateway.screening: classifier scores → policy rules → one Decision, and redact()."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from classifiers.base import Classifier, Scores, Span
from gateway.metrics import Metrics
from gateway.policy import Action, Policy, PolicyFile, Rule
from gateway.policy_loader import load_policy
from gateway.screening import ERROR_CODE, Decision, Hit, Segment, redact, screen
from tests.conftest import TEST_POLICY

# --- a fake at the classifier boundary -------------------------------------------------------


@dataclass
class FakeClassifier:
    """Scores ``code`` at ``score`` wherever a needle occurs; spans unless ``with_spans`` is off.

    ``fail`` makes ``classify`` raise it; ``hang`` makes it never answer; ``short`` drops the
    last verdict (a broken batch).
    """

    name: str
    needles: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    with_spans: bool = True
    fail: Exception | None = None
    hang: bool = False
    short: bool = False
    calls: list[list[str]] = field(default_factory=list)

    async def classify(self, texts: Sequence[str]) -> list[Scores]:
        self.calls.append(list(texts))
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail
        out = [self._one(text) for text in texts]
        return out[:-1] if self.short else out

    def _one(self, text: str) -> Scores:
        scores: dict[str, float] = {}
        spans: list[Span] = []
        for needle, (code, score) in self.needles.items():
            start = text.find(needle)
            if start < 0:
                continue
            scores[code] = max(scores.get(code, 0.0), score)
            if self.with_spans:
                spans.append(Span(start, start + len(needle), code, score, "fake"))
        return Scores(self.name, scores, tuple(spans), "fake-rev")


ACTION_RULES = {
    "X.allow": Rule(input="allow", output="allow"),
    "X.flag": Rule(input="flag", output="flag"),
    "X.redact": Rule(input="redact", output="redact"),
    "X.refuse": Rule(input="refuse", output="refuse"),
    "X.block": Rule(input="block", output="block"),
    "X.high": Rule(input="block", output="block", threshold=0.9),
    "X.io": Rule(input="flag", output="block"),
}

NEEDLES = {
    "allowword": ("X.allow", 1.0),
    "flagword": ("X.flag", 1.0),
    "标记词": ("X.flag", 1.0),
    "redactword": ("X.redact", 1.0),
    "机密词": ("X.redact", 1.0),
    "refuseword": ("X.refuse", 1.0),
    "拒绝词": ("X.refuse", 1.0),
    "blockword": ("X.block", 1.0),
    "炸药配方": ("X.block", 1.0),
    "iffy": ("X.high", 0.89),
    "可疑": ("X.high", 0.89),
    "sure": ("X.high", 0.9),
    "肯定": ("X.high", 0.9),
    "twoway": ("X.io", 1.0),
}


def fake_policy(
    *classifiers: Classifier,
    on_error: Literal["block", "allow", "flag"] = "block",
    timeout_s: float = 2.0,
) -> Policy:
    spec = PolicyFile(
        name="fake",
        rules=dict(ACTION_RULES),
        on_error=on_error,
        classifier_timeout_s=timeout_s,
    )
    return Policy(spec=spec, classifiers={c.name: c for c in classifiers}, version="v", source="x")


def segs(*texts: str) -> list[Segment]:
    return [Segment(text, "content", ("messages", i, "content")) for i, text in enumerate(texts)]


# --- actions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("今天天气很好。A perfectly benign sentence.", "allow"),
        ("allowword is fine", "allow"),
        ("a flagword here", "flag"),
        ("这里有标记词", "flag"),
        ("flagword and redactword", "redact"),
        ("标记词和机密词", "redact"),
        ("redactword flagword refuseword", "refuse"),
        ("机密词、拒绝词", "refuse"),
        ("refuseword blockword redactword flagword", "block"),
        ("拒绝词和炸药配方以及机密词", "block"),
        ("blockword first, then refuseword", "block"),
    ],
)
async def test_most_severe_action_wins(text: str, action: Action) -> None:
    policy = fake_policy(FakeClassifier("fake", NEEDLES))
    decision = await screen(policy, segs(text), "input")
    assert decision.action == action
    assert decision.stops is (action in ("refuse", "block"))


async def test_most_severe_action_wins_across_segments_and_classifiers() -> None:
    flagger = FakeClassifier("flagger", {"标记词": ("X.flag", 1.0)})
    blocker = FakeClassifier("blocker", {"zorblax": ("X.block", 1.0)})
    policy = fake_policy(flagger, blocker)
    decision = await screen(policy, segs("这里有标记词", "nothing", "say zorblax"), "output")
    assert decision.action == "block"
    assert sorted((h.classifier, h.code, h.segment, h.action) for h in decision.hits) == [
        ("blocker", "X.block", 2, "block"),
        ("flagger", "X.flag", 0, "flag"),
    ]
    assert flagger.calls == blocker.calls == [["这里有标记词", "nothing", "say zorblax"]]


async def test_direction_picks_the_rules_side() -> None:
    policy = fake_policy(FakeClassifier("fake", NEEDLES))
    assert (await screen(policy, segs("twoway"), "input")).action == "flag"
    assert (await screen(policy, segs("twoway"), "output")).action == "block"


async def test_nothing_to_screen_allows() -> None:
    fake = FakeClassifier("fake", NEEDLES)
    decision = await screen(fake_policy(fake), [], "input")
    assert decision.action == "allow"
    assert decision.hits == ()
    assert fake.calls == []


async def test_no_classifiers_allows() -> None:
    decision = await screen(fake_policy(), segs("blockword 炸药配方"), "input")
    assert decision.action == "allow"
    assert decision.scores == ({},)


# --- hits ------------------------------------------------------------------------------------


async def test_hits_carry_code_score_classifier_segment_spans() -> None:
    policy = fake_policy(
        FakeClassifier("kw", {"炸药配方": ("X.block", 0.97), "blockword": ("X.block", 0.95)})
    )
    texts = ("benign 文本", "请告诉我炸药配方。", "then blockword, ok")
    decision = await screen(policy, segs(*texts), "input")
    assert decision.policy == "fake"
    assert decision.policy_version == "v"
    assert decision.direction == "input"
    assert len(decision.hits) == 2
    zh, en = sorted(decision.hits, key=lambda h: h.segment)
    assert (zh.code, zh.score, zh.classifier, zh.action, zh.segment) == ("X.block", 0.97, "kw", "block", 1)
    assert (en.code, en.score, en.classifier, en.action, en.segment) == ("X.block", 0.95, "kw", "block", 2)
    [zh_span] = zh.spans
    [en_span] = en.spans
    assert texts[1][zh_span.start : zh_span.end] == "炸药配方"
    assert (zh_span.start, zh_span.end) == (4, 8)
    assert texts[2][en_span.start : en_span.end] == "blockword"


async def test_hit_spans_are_only_those_of_its_code() -> None:
    policy = fake_policy(FakeClassifier("kw", NEEDLES))
    decision = await screen(policy, segs("标记词 and blockword"), "output")
    by_code = {h.code: h for h in decision.hits}
    assert set(by_code) == {"X.flag", "X.block"}
    assert [s.code for s in by_code["X.flag"].spans] == ["X.flag"]
    assert [s.code for s in by_code["X.block"].spans] == ["X.block"]


@pytest.mark.parametrize(
    ("text", "fires"), [("iffy", False), ("可疑", False), ("sure", True), ("肯定", True)]
)
async def test_threshold(text: str, fires: bool) -> None:
    decision = await screen(fake_policy(FakeClassifier("m", NEEDLES)), segs(text), "input")
    assert decision.action == ("block" if fires else "allow")
    assert [h.code for h in decision.hits] == (["X.high"] if fires else [])
    # A score under the threshold is still kept for the record.
    assert decision.scores[0]["X.high"] == pytest.approx(0.9 if fires else 0.89)


async def test_allow_rule_scores_but_does_not_hit() -> None:
    decision = await screen(fake_policy(FakeClassifier("m", NEEDLES)), segs("allowword"), "input")
    assert decision.hits == ()
    assert decision.scores == ({"X.allow": 1.0},)


async def test_scores_keep_the_best_per_code_over_classifiers() -> None:
    low = FakeClassifier("low", {"词": ("X.high", 0.3), "word": ("X.flag", 0.6)})
    high = FakeClassifier("high", {"词": ("X.high", 0.95)})
    decision = await screen(fake_policy(low, high), segs("一个词", "a word"), "input")
    assert decision.scores == ({"X.high": 0.95}, {"X.flag": 0.6})


@pytest.mark.parametrize("text", ["some redactword here", "这里有机密词"])
async def test_redact_with_spans_stays_redact(text: str) -> None:
    decision = await screen(fake_policy(FakeClassifier("m", NEEDLES)), segs(text), "output")
    assert decision.action == "redact"
    assert decision.hits[0].spans


@pytest.mark.parametrize("text", ["some redactword here", "这里有机密词"])
async def test_redact_without_spans_escalates_to_refuse(text: str) -> None:
    fake = FakeClassifier("whole-text", NEEDLES, with_spans=False)
    decision = await screen(fake_policy(fake), segs(text), "output")
    assert decision.action == "refuse"
    [hit] = decision.hits
    assert (hit.code, hit.action, hit.spans) == ("X.redact", "refuse", ())


# --- classifier failures ---------------------------------------------------------------------

FAILURES: dict[str, Callable[[], FakeClassifier]] = {
    "raises": lambda: FakeClassifier("broken", fail=RuntimeError("model exploded")),
    "times out": lambda: FakeClassifier("broken", hang=True),
    "short batch": lambda: FakeClassifier("broken", NEEDLES, short=True),
}


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("on_error", ["block", "flag"])
async def test_classifier_failure_follows_on_error(failure: str, on_error: Literal["block", "flag"]) -> None:
    broken = FAILURES[failure]()
    policy = fake_policy(broken, on_error=on_error, timeout_s=0.05)
    decision = await screen(policy, segs("你好", "hello"), "input")
    assert decision.action == on_error
    assert [(h.code, h.classifier, h.action, h.segment) for h in decision.hits] == [
        (ERROR_CODE, "broken", on_error, 0),
        (ERROR_CODE, "broken", on_error, 1),
    ]
    assert decision.risks() == [
        {"code": ERROR_CODE, "score": 1.0, "classifier": "broken", "action": on_error}
    ]


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_classifier_failure_allowed_adds_no_hit(failure: str) -> None:
    policy = fake_policy(FAILURES[failure](), on_error="allow", timeout_s=0.05)
    decision = await screen(policy, segs("你好", "hello"), "output")
    assert decision.action == "allow"
    assert decision.hits == ()


async def test_a_failing_classifier_does_not_hide_the_others() -> None:
    good = FakeClassifier("good", NEEDLES)
    broken = FakeClassifier("broken", hang=True)
    decision = await screen(
        fake_policy(good, broken, on_error="allow", timeout_s=0.05), segs("标记词"), "input"
    )
    assert [(h.classifier, h.code) for h in decision.hits] == [("good", "X.flag")]
    assert decision.action == "flag"
    blocked = await screen(
        fake_policy(good, broken, on_error="block", timeout_s=0.05), segs("标记词"), "input"
    )
    assert blocked.action == "block"
    assert {h.code for h in blocked.hits} == {"X.flag", ERROR_CODE}


async def test_classifier_errors_are_counted() -> None:
    metrics = Metrics()
    policy = fake_policy(FakeClassifier("broken", fail=ValueError("bad")), FakeClassifier("ok", NEEDLES))
    await screen(policy, segs("hello"), "input", metrics)
    await screen(policy, segs("你好"), "input", metrics)
    registry = metrics.registry
    assert registry.get_sample_value("modgate_classifier_errors_total", {"classifier": "broken"}) == 2.0
    assert registry.get_sample_value("modgate_classifier_errors_total", {"classifier": "ok"}) is None
    assert registry.get_sample_value("modgate_classifier_seconds_count", {"classifier": "ok"}) == 2.0


async def test_cancellation_is_not_swallowed() -> None:
    policy = fake_policy(FakeClassifier("slow", hang=True), on_error="allow", timeout_s=30)
    task = asyncio.create_task(screen(policy, segs("hello"), "input"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- Decision.risks --------------------------------------------------------------------------


def test_risks_dedup_per_code_keeping_the_best_score_ordered_by_severity() -> None:
    hits = (
        Hit("A.4.f", 0.6, "pii", "redact", 0),
        Hit("X.flag", 0.7, "m", "flag", 1),
        Hit("A.1.d", 0.8, "kw", "block", 0),
        Hit("A.4.f", 0.99, "pii2", "redact", 1),
        Hit("A.1.d", 0.9, "model", "block", 1),
        Hit("A.1.a", 0.51234567, "model", "block", 0),
        Hit("X.refuse", 1.0, "m", "refuse", 0),
    )
    decision = Decision("block", "output", "p", "v", hits)
    assert decision.risks() == [
        {"code": "A.1.a", "score": 0.5123, "classifier": "model", "action": "block"},
        {"code": "A.1.d", "score": 0.9, "classifier": "model", "action": "block"},
        {"code": "X.refuse", "score": 1.0, "classifier": "m", "action": "refuse"},
        {"code": "A.4.f", "score": 0.99, "classifier": "pii2", "action": "redact"},
        {"code": "X.flag", "score": 0.7, "classifier": "m", "action": "flag"},
    ]


async def test_risks_from_screening_two_classifiers() -> None:
    a = FakeClassifier("a", {"炸药配方": ("X.block", 0.8), "flagword": ("X.flag", 1.0)})
    b = FakeClassifier("b", {"炸药配方": ("X.block", 0.95)})
    decision = await screen(fake_policy(a, b), segs("炸药配方", "flagword 炸药配方"), "output")
    assert len(decision.hits) == 5
    assert decision.risks() == [
        {"code": "X.block", "score": 0.95, "classifier": "b", "action": "block"},
        {"code": "X.flag", "score": 1.0, "classifier": "a", "action": "flag"},
    ]


def test_risks_empty_when_nothing_fired() -> None:
    assert Decision("allow", "input", "p", "v").risks() == []


# --- with a real lexicon policy --------------------------------------------------------------

LEXICON_POLICY = TEST_POLICY  # the same terms and rules the end-to-end tests use


@pytest.fixture
def lexicon_policy(tmp_path: Path) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(LEXICON_POLICY, encoding="utf-8")
    return load_policy(path)


@pytest.mark.parametrize(
    ("texts", "action", "codes"),
    [
        (["你好，今天过得怎么样？", "How are you today?"], "allow", []),
        (["Tell me about ZORBLAX."], "block", ["A.1.d"]),
        (["请给我炸药配方"], "block", ["A.1.d"]),
        (["这是拒绝词", "a flagword"], "refuse", ["X.test_refuse", "X.test_flag"]),
        (["标记词", "the secretword"], "redact", ["X.test_redact", "X.test_flag"]),
        (
            ["炸药配方", "refuseword", "机密词", "flagword"],
            "block",
            ["A.1.d", "X.test_refuse", "X.test_redact", "X.test_flag"],
        ),
    ],
)
async def test_lexicon_policy(
    lexicon_policy: Policy, texts: list[str], action: Action, codes: list[str]
) -> None:
    decision = await screen(lexicon_policy, segs(*texts), "input")
    assert decision.action == action
    assert [r["code"] for r in decision.risks()] == codes  # most severe first
    for hit in decision.hits:
        assert hit.classifier == "banned-terms"
        assert all(s.code == hit.code for s in hit.spans)


async def test_lexicon_policy_redacts_pii_on_output_only(lexicon_policy: Policy) -> None:
    texts = ("请拨打13800138000联系我", "write to alice@example.com today")
    output = await screen(lexicon_policy, segs(*texts), "output")
    assert output.action == "redact"
    redacted = [
        redact(text, [s for h in output.hits if h.segment == i for s in h.spans], "[REDACTED]")
        for i, text in enumerate(texts)
    ]
    assert redacted == ["请拨打[REDACTED]联系我", "write to [REDACTED] today"]
    assert (await screen(lexicon_policy, segs(*texts), "input")).action == "allow"


async def test_lexicon_redact_spans_apply_to_the_original_text(lexicon_policy: Policy) -> None:
    texts = ("这份机密词不能说，机密词！", "The SECRETWORD, and secretword again.")
    decision = await screen(lexicon_policy, segs(*texts), "output")
    assert decision.action == "redact"
    out = [
        redact(text, [s for h in decision.hits if h.segment == i for s in h.spans], "[X]")
        for i, text in enumerate(texts)
    ]
    assert out == ["这份[X]不能说，[X]！", "The [X], and [X] again."]


# --- redact() --------------------------------------------------------------------------------


def sp(start: int, end: int) -> Span:
    return Span(start, end, "X.t")


@pytest.mark.parametrize(
    ("text", "spans", "expected"),
    [
        ("hello world", [], "hello world"),
        ("hello world", [sp(0, 5)], "[X] world"),
        ("hello world", [sp(6, 11)], "hello [X]"),
        ("hello world", [sp(0, 11)], "[X]"),
        ("你好世界，再见", [sp(2, 4)], "你好[X]，再见"),
        ("你好世界，再见", [sp(5, 7), sp(0, 2)], "[X]世界，[X]"),  # unsorted
        ("你好世界，再见", [sp(1, 3), sp(2, 4)], "你[X]，再见"),  # overlapping
        ("你好世界，再见", [sp(1, 5), sp(2, 3)], "你[X]再见"),  # nested
        ("abcdefghij", [sp(1, 4), sp(3, 6), sp(5, 8)], "a[X]ij"),  # chain of overlaps
        ("abcdefghij", [sp(2, 4), sp(2, 4)], "ab[X]efghij"),  # duplicates
        ("call 13800138000 或 电邮 a@b.cn 谢谢", [sp(5, 16), sp(22, 28)], "call [X] 或 电邮 [X] 谢谢"),
        ("😀炸药配方😀", [sp(1, 5)], "😀[X]😀"),  # astral characters count as one
    ],
)
def test_redact(text: str, spans: list[Span], expected: str) -> None:
    assert redact(text, spans, "[X]") == expected


def test_redact_adjacent_spans_give_one_replacement() -> None:
    assert redact("机密词机密词 end", [sp(0, 3), sp(3, 6)], "[X]") == "[X] end"


class _CountingInline:
    """An inline classifier (has ``scan``) that counts its scans."""

    def __init__(self) -> None:
        self.name = "counting"
        self.calls: list[str] = []

    def scan(self, text: str) -> Scores:
        self.calls.append(text)
        return Scores(self.name, {"A.1.d": 1.0} if "zorblax" in text else {}, (), "r1")

    async def classify(self, texts: Sequence[str]) -> list[Scores]:
        return [self.scan(t) for t in texts]


async def test_repeated_texts_are_answered_from_the_policy_cache() -> None:
    clf = _CountingInline()
    spec = PolicyFile(name="cache", rules={"A.1.d": Rule(input="block", output="block")})
    policy = Policy(spec=spec, classifiers={"counting": clf}, version="v", source="x")
    system = Segment("You are a helpful assistant. 你是一个乐于助人的助手。", "system")
    first = await screen(policy, [system, Segment("hello zorblax", "user")], "input")
    second = await screen(policy, [system, Segment("another question", "user")], "input")
    third = await screen(policy, [system, Segment("hello zorblax", "user")], "input")
    assert clf.calls == [system.text, "hello zorblax", "another question"]
    assert first.action == third.action == "block" and second.action == "allow"
    await screen(policy, [Segment("stream window 窗口", "content")], "output", cache=False)
    await screen(policy, [Segment("stream window 窗口", "content")], "output", cache=False)
    assert clf.calls[-2:] == ["stream window 窗口", "stream window 窗口"]
