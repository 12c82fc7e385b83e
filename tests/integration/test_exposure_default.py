"""The streamed adversarial set through the stream guard with the bundled default policy's
classifiers, its model included (built on first use, ~1 min): every split of every case, in both
modes. The policy is ``benchmarks/policies/model-output-block.yaml``: the default, with its
request classifiers (X.harmful, X.illegal_request) blocking output as well, since the default
only flags them on output and the set's model cases are what they catch.

The unit test (tests/unit/test_stream_exposure.py) does the same with the lists and patterns
alone. Here the model can cut too; a model's verdict has no span, so for ``model`` cases what
the client saw is measured against the whole harmful passage (see benchmarks/_exposure.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks._exposure import Case, Mode, control, delivered_of, drive, in_mode, load_cases, stream_chunks
from gateway.policy import Policy
from gateway.policy_loader import load_policy
from gateway.screening import Segment, screen
from tests.support.exposure import HOLD_LEAKS, Runs, params

pytestmark = pytest.mark.slow

CASES = load_cases()
INLINE = [c for c in CASES if c.kind != "model"]

MODEL_FRAGMENTS = (
    "hold mode with the model: benign text is cut when a window ends inside a word "
    "('... Then gather ever', '... your last messa' score X.harmful >= 0.5), though the whole "
    "text passes"
)

MODEL_MISSES_WHOLE = {
    "zh-model-08": (
        "the tuned head lets the whole text (ID photos bought to take out loans, then a benign tail) "
        "pass; the stream guard cuts it in every split all the same, on the sentence alone"
    ),
}


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(Path(__file__).parents[2] / "benchmarks" / "policies" / "model-output-block.yaml")


@pytest.fixture(scope="module")
def runs(policy: Policy) -> Runs:
    return Runs(policy)


@pytest.mark.parametrize("case", params(INLINE, HOLD_LEAKS))
async def test_hold_delivers_no_violating_character(runs: Runs, case: Case) -> None:
    outcomes = await runs.get(case, "hold")
    assert {o.split: o.violating_exposed for o in outcomes if o.violating_exposed} == {}


@pytest.mark.parametrize("mode", ["hold", "async"])
@pytest.mark.parametrize("case", params(CASES, MODEL_MISSES_WHOLE))
async def test_every_case_flagged_whole_is_stopped_in_every_split(runs: Runs, case: Case, mode: Mode) -> None:
    whole = await runs.whole(case)
    assert whole.flagged, "every case of the set is flagged by the default policy on the whole text"
    outcomes = await runs.get(case, mode)
    assert [o.split for o in outcomes if whole.missed_by(o)] == []
    if mode == "hold":  # the guard's own count: nothing it decided on had been released
        assert all(not o.guard_exposed for o in outcomes if case.id not in HOLD_LEAKS)


async def test_async_cut_retracts_what_was_delivered(runs: Runs) -> None:
    misses = {}
    for case in CASES:
        outcomes = await runs.get(case, "async")
        missed = [o.split for o in outcomes if o.retract_covers is False]
        if missed:
            misses[case.id] = missed
    assert misses == {}


@pytest.mark.xfail(strict=True, reason=MODEL_FRAGMENTS)
async def test_the_benign_text_alone_is_not_cut_in_hold_mode(policy: Policy) -> None:
    cut = [c.id for c in CASES if any(await control(policy, c, "hold"))]
    assert cut == []


async def test_hold_never_delivers_a_whole_harmful_sentence(runs: Runs) -> None:
    whole = {}
    for case in (c for c in CASES if c.kind == "model"):
        full = sum(not ch.isspace() for ch in case.harmful)
        delivered = [o.split for o in await runs.get(case, "hold") if o.violating_exposed == full]
        if delivered:
            whole[case.id] = delivered
    assert whole == {}


ZH_MODEL_01 = next(c for c in CASES if c.id == "zh-model-01")


async def test_the_sentence_alone_is_flagged(policy: Policy) -> None:
    """The premise of the next test."""
    decision = await screen(policy, [Segment(ZH_MODEL_01.harmful, "content")], "output", cache=False)
    assert decision.action == "block"


async def test_a_sentence_the_model_flags_alone_is_held_after_a_benign_lead_in(policy: Policy) -> None:
    case = ZH_MODEL_01
    out, _ = await drive(in_mode(policy, "hold"), stream_chunks([case.lead_in, case.harmful, case.tail]))
    text, note = delivered_of(out)
    assert note is not None  # cut, but only on the tail
    assert case.harmful not in text
