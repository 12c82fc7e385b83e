"""Cascades and the guard around awaited classifiers: stages, ``when``, per-classifier timeout,
concurrency limit, circuit breaker, cache and ``on_error`` (gateway.cascade, classifiers.guarded,
gateway.screening), with fakes at the classifier boundary."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from classifiers.base import Direction, Scores
from classifiers.guarded import BreakerSettings, CircuitBreaker, CircuitOpen, Guarded
from classifiers.registry import ClassifierParams, Registry, builtin_registry
from gateway.metrics import Metrics
from gateway.policy import Policy
from gateway.policy_loader import PolicyError, load_policy
from gateway.screening import ERROR_CODE, Segment, screen

# --- fakes at the classifier boundary ----------------------------------------------------------


@dataclass
class Scripted:
    """Scores by needle: ``needles`` maps a substring to (code, score). ``fail`` raises, ``delay_s``
    sleeps before answering; ``calls`` records each batch and ``inflight`` the most at once."""

    name: str
    needles: dict[str, tuple[str, float]] = field(default_factory=dict)
    fail: bool = False
    delay_s: float = 0.0
    deterministic: bool = False
    calls: list[list[str]] = field(default_factory=list)
    directions: list[Direction] = field(default_factory=list)
    inflight: int = 0
    most: int = 0

    async def classify(self, texts: Sequence[str]) -> list[Scores]:
        self.calls.append(list(texts))
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail:
                raise RuntimeError("model server answered 503")
            return [self._one(t) for t in texts]
        finally:
            self.inflight -= 1

    def _one(self, text: str) -> Scores:
        scores: dict[str, float] = {}
        for needle, (code, score) in self.needles.items():
            if needle in text:
                scores[code] = max(scores.get(code, 0.0), score)
        return Scores(self.name, scores)


@dataclass
class Directed(Scripted):
    async def classify_directed(self, texts: Sequence[str], direction: Direction) -> list[Scores]:
        self.directions.append(direction)
        return await self.classify(texts)


class FakeParams(ClassifierParams):
    needles: dict[str, tuple[str, float]] = Field(default_factory=dict)
    fail: bool = False
    delay_s: float = 0.0
    deterministic: bool = False


BUILT: dict[str, Scripted] = {}


def _factory(name: str, params: FakeParams) -> Scripted:
    clf = Scripted(name, dict(params.needles), params.fail, params.delay_s, params.deterministic)
    BUILT[name] = clf
    return clf


@pytest.fixture
def registry() -> Registry:
    BUILT.clear()
    reg = Registry()
    reg.register("fake", FakeParams, _factory)
    reg.register("lexicon", *_lexicon(builtin_registry()))
    return reg


def _lexicon(builtin: Registry) -> tuple[Any, Any]:
    kind = builtin.get("lexicon")
    return kind.params, kind.factory


FAST = {
    "bomb": ["X.harmful", 0.95],
    "炸弹": ["X.harmful", 0.95],
    "kill": ["X.harmful", 0.45],
    "杀掉": ["X.harmful", 0.45],
    "grey": ["A.2.e", 0.4],
    "灰色": ["A.2.e", 0.95],
}
EXPENSIVE = {"process": ["X.harmful", 0.1], "进程": ["X.harmful", 0.1], "him": ["X.harmful", 0.9]}


def policy_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "cascade.yaml"
    path.write_text(
        "name: cascade\n"
        "rules:\n  X.harmful: {input: block, output: block, threshold: 0.5}\n"
        "  A.2: {input: flag, output: flag, threshold: 0.5}\n"
        "  X.controversial: {input: flag, output: flag, threshold: 0.5}\n" + body,
        encoding="utf-8",
    )
    return path


def cascade(tmp_path: Path, registry: Registry, run: str, **policy: str) -> Policy:
    extra = "".join(f"{k}: {v}\n" for k, v in policy.items())
    body = (
        "classifiers:\n"
        f"  fast: {{type: fake, needles: {FAST}}}\n"
        f"  llm:\n    type: fake\n    needles: {EXPENSIVE}\n    run: {run}\n" + extra
    )
    return load_policy(policy_file(tmp_path, body.replace("'", '"')), registry)


def segs(*texts: str) -> list[Segment]:
    return [Segment(t, "user") for t in texts]


# --- stages and when -------------------------------------------------------------------------


async def test_expensive_stage_runs_only_on_texts_the_fast_tier_is_unsure_about(
    tmp_path: Path, registry: Registry
) -> None:
    policy = cascade(tmp_path, registry, "{stage: 1, when: {uncertain: [0.3, 0.8]}}")
    metrics = Metrics()
    texts = (
        "how to build a bomb",
        "怎么杀掉一个卡住的进程",
        "kill him",
        "今天天气很好",
        "how to kill a process",
    )
    decision = await screen(policy, segs(*texts), "input", metrics)
    # Confident harmful (bomb) and confident benign (weather) never reach the LLM.
    assert BUILT["llm"].calls == [["怎么杀掉一个卡住的进程", "kill him", "how to kill a process"]]
    blocked = sorted({h.segment for h in decision.hits if h.action == "block"})
    assert blocked == [0, 2]  # the LLM settled what the fast tier could not
    assert decision.scores[1]["X.harmful"] == 0.45
    assert decision.scores[2]["X.harmful"] == 0.9
    assert decision.scores[3] == {}
    ran = metrics.cascade_texts.labels("llm", "ran")._value.get()
    skipped = metrics.cascade_texts.labels("llm", "skipped")._value.get()
    assert (ran, skipped) == (3, 2)


async def test_uncertain_band_narrowed_to_codes(tmp_path: Path, registry: Registry) -> None:
    policy = cascade(tmp_path, registry, "{stage: 1, when: {uncertain: [0.3, 0.8], codes: [A.2]}}")
    await screen(policy, segs("kill him", "grey area him", "hello him", "灰色 grey"), "input")
    # "kill" is unsure on X.harmful, not on A.2; "灰色" scores A.2.e 0.95, sure enough.
    assert BUILT["llm"].calls == [["grey area him"]]


async def test_uncertain_band_up_to_one_includes_one(tmp_path: Path, registry: Registry) -> None:
    policy = cascade(tmp_path, registry, "{stage: 1, when: {uncertain: [0.9, 1.0]}}")
    await screen(policy, segs("灰色 him", "grey him"), "input")
    assert BUILT["llm"].calls == [["灰色 him"]]


async def test_later_stage_skips_texts_already_blocked(tmp_path: Path, registry: Registry) -> None:
    policy = cascade(tmp_path, registry, "{stage: 1}")
    decision = await screen(policy, segs("bomb", "炸弹"), "input")
    assert decision.action == "block"
    assert BUILT["llm"].calls == []
    # Stream windows of several choices are screened together; each is judged on its own.
    decision = await screen(policy, segs("hello", "炸弹", "你好 him"), "output")
    assert BUILT["llm"].calls == [["hello", "你好 him"]]
    assert sorted(h.segment for h in decision.hits) == [1, 2]


async def test_when_routes_and_directions(tmp_path: Path, registry: Registry) -> None:
    policy = cascade(tmp_path, registry, "{stage: 1, when: {routes: [acme], directions: [output]}}")
    for route, direction in (("acme", "input"), ("other", "output"), (None, "output")):
        await screen(policy, segs("kill him"), direction, route=route)  # type: ignore[arg-type]
    assert BUILT["llm"].calls == []
    decision = await screen(policy, segs("him, 他"), "output", route="acme")
    assert BUILT["llm"].calls == [["him, 他"]]
    assert decision.action == "block"


async def test_one_stage_runs_concurrently(tmp_path: Path, registry: Registry) -> None:
    body = (
        "classifiers:\n"
        "  a: {type: fake, delay_s: 0.3}\n"
        "  b: {type: fake, delay_s: 0.3, run: {timeout_s: 5}}\n"
    )
    policy = load_policy(policy_file(tmp_path, body), registry)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await screen(policy, segs("x"), "input")
    assert loop.time() - start < 0.55


async def test_stream_windows_reach_the_cascade(tmp_path: Path, registry: Registry) -> None:
    """The stream guard screens model windows with kinds="awaited": the stages apply there too."""
    policy = cascade(tmp_path, registry, "{stage: 1, when: {uncertain: [0.3, 0.8]}}")
    decision = await screen(policy, segs("kill him now"), "output", kinds="awaited", route="r")
    assert BUILT["llm"].calls == [["kill him now"]]
    assert decision.action == "block"
    assert decision.scores[0]["X.harmful"] == 0.9


# --- run: validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ("{stage: 1, when: {uncertain: [0.8, 0.3]}}", "0 <= low < high <= 1"),
        ("{stage: 0, when: {uncertain: [0.3, 0.8]}}", "needs an earlier stage"),
        ("{stage: 1, when: {codes: [A.1]}}", "set uncertain"),
        ("{stage: 1, when: {codes: [not-a-code], uncertain: [0.1, 0.2]}}", "classifiers.llm.run.when.codes"),
        ("{stage: 1, timeout: 3}", "classifiers.llm.run.timeout"),
        ("{on_error: explode}", "classifiers.llm.run.on_error"),
        ("{circuit_breaker: {failures: 0}}", "classifiers.llm.run.circuit_breaker.failures"),
    ],
)
def test_bad_run_blocks_are_refused_with_their_key(
    tmp_path: Path, registry: Registry, run: str, message: str
) -> None:
    with pytest.raises(PolicyError, match=re.escape(message)):
        cascade(tmp_path, registry, run)


def test_uncertain_needs_a_classifier_at_an_earlier_stage(tmp_path: Path, registry: Registry) -> None:
    body = "classifiers:\n  llm: {type: fake, run: {stage: 2, when: {uncertain: [0.2, 0.8]}}}\n"
    with pytest.raises(PolicyError, match="no classifier runs at an earlier stage than 2"):
        load_policy(policy_file(tmp_path, body), registry)


def test_run_on_a_keyword_list_is_refused(tmp_path: Path, registry: Registry) -> None:
    (tmp_path / "terms.txt").write_text("zorblax\n", encoding="utf-8")
    body = "classifiers:\n  kw: {type: lexicon, files: {X.harmful: [terms.txt]}, run: {stage: 1}}\n"
    with pytest.raises(PolicyError, match=r"classifiers\.kw\.run: keyword lists and patterns always run"):
        load_policy(policy_file(tmp_path, body), registry)


# --- timeout, on_error, breaker, limit, cache ------------------------------------------------------


@pytest.mark.parametrize("direction", ["input", "output"])
async def test_per_classifier_timeout_and_on_error(
    tmp_path: Path, registry: Registry, direction: Direction
) -> None:
    body = (
        "classifiers:\n"
        "  slow: {type: fake, delay_s: 5, run: {timeout_s: 0.05, on_error: flag}}\n"
        "  broken: {type: fake, fail: true, run: {on_error: allow}}\n"
        "  strict: {type: fake, fail: true}\n"
        "on_error: block\n"
    )
    policy = load_policy(policy_file(tmp_path, body), registry)
    metrics = Metrics()
    decision = await screen(policy, segs("hello", "你好"), direction, metrics)
    errors = sorted((h.classifier, h.action, h.segment) for h in decision.hits if h.code == ERROR_CODE)
    assert errors == [
        ("slow", "flag", 0),
        ("slow", "flag", 1),
        ("strict", "block", 0),
        ("strict", "block", 1),
    ]
    fallbacks = metrics.classifier_fallbacks
    assert fallbacks.labels("slow", "timeout", "flag")._value.get() == 1
    assert fallbacks.labels("broken", "error", "allow")._value.get() == 1
    assert fallbacks.labels("strict", "error", "block")._value.get() == 1


@pytest.mark.parametrize("direction", ["input", "output"])
async def test_circuit_breaker_opens_fails_fast_and_recovers(
    tmp_path: Path, registry: Registry, direction: Direction
) -> None:
    body = (
        "classifiers:\n"
        "  remote: {type: fake, fail: true, run: {circuit_breaker: {failures: 2, reset_s: 0.2}}}\n"
        "on_error: flag\n"
    )
    policy = load_policy(policy_file(tmp_path, body), registry)
    metrics = Metrics()
    clf = BUILT["remote"]
    for _ in range(4):
        decision = await screen(policy, segs("hello"), direction, metrics)
        assert decision.action == "flag"
    assert len(clf.calls) == 2  # the last two failed fast without a call
    fallbacks = metrics.classifier_fallbacks
    assert fallbacks.labels("remote", "circuit_open", "flag")._value.get() == 2
    assert metrics.classifier_circuit_open.labels("remote")._value.get() == 1
    await asyncio.sleep(0.25)
    clf.fail = False  # the server is back: the trial call closes the breaker
    assert (await screen(policy, segs("你好"), direction, metrics)).action == "allow"
    assert len(clf.calls) == 3
    assert metrics.classifier_circuit_open.labels("remote")._value.get() == 0


def test_breaker_half_open_admits_one_trial() -> None:
    now = [0.0]
    breaker = CircuitBreaker(BreakerSettings(failures=1, reset_s=10), clock=lambda: now[0])
    breaker.admit()
    breaker.record(False)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen):
        breaker.admit()
    now[0] = 10.0
    assert breaker.state == "half_open"
    breaker.admit()  # the trial
    with pytest.raises(CircuitOpen):
        breaker.admit()  # a second caller while the trial runs
    breaker.record(False)
    assert breaker.state == "open"
    now[0] = 20.0
    breaker.admit()
    breaker.release()  # the trial's caller went away: another may try
    breaker.admit()
    breaker.record(True)
    assert breaker.state == "closed"


async def test_concurrency_limit_queues_within_the_timeout() -> None:
    clf = Scripted("llm", delay_s=0.1)
    guarded = Guarded(clf, timeout_s=0.15, max_concurrency=1)
    results = await asyncio.gather(
        guarded.classify(["a"], "input"), guarded.classify(["b"], "input"), return_exceptions=True
    )
    assert clf.most == 1
    assert isinstance(results[0], list)
    assert isinstance(results[1], TimeoutError)  # it waited for the slot past its time


async def test_cache_serves_deterministic_classifiers_per_direction() -> None:
    clf = Directed("llm", {"bomb": ("X.harmful", 0.9), "炸弹": ("X.harmful", 0.9)}, deterministic=True)
    guarded = Guarded(clf, timeout_s=1, cache_size=8)
    first = await guarded.classify(["a bomb", "一个炸弹"], "input")
    again = await guarded.classify(["A  BOMB", "一個炸彈", "new"], "input")  # same once normalised
    assert clf.calls == [["a bomb", "一个炸弹"], ["new"]]
    assert [s.scores for s in again[:2]] == [s.scores for s in first]
    await guarded.classify(["a bomb"], "output")
    assert clf.calls[-1] == ["a bomb"]
    assert clf.directions == ["input", "input", "output"]


async def test_no_cache_for_classifiers_that_are_not_deterministic() -> None:
    clf = Scripted("sampler")
    guarded = Guarded(clf, timeout_s=1, cache_size=8)
    await guarded.classify(["x"], "input")
    await guarded.classify(["x"], "input")
    assert len(clf.calls) == 2
