"""The streamed adversarial set (data/stream_adversarial) through the stream guard with the default
policy's keyword lists and patterns (no model): every split of every harmful passage.

In hold mode no character of a term or number may reach the client, and every case the policy
flags on the whole text is stopped in every split; in async mode every cut names a span to
retract that covers what was delivered. The helper that streams and measures is
``benchmarks/_exposure.py``; the same with the model is ``tests/integration/test_exposure_default.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks._exposure import (
    Case,
    Mode,
    align,
    control,
    delivered_of,
    drive,
    in_mode,
    load_cases,
    splits,
    stream_chunks,
)
from gateway.policy import Policy
from gateway.policy_loader import load_policy
from tests.support.exposure import (
    HOLD_LEAKS,
    LEAK_EMAIL_LOCAL_PART,
    Runs,
    params,
)

LEXICON_PATTERNS = Path(__file__).parents[2] / "benchmarks" / "policies" / "lexicon-patterns.yaml"
CASES = load_cases()
INLINE = [c for c in CASES if c.kind != "model"]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(LEXICON_PATTERNS)


@pytest.fixture(scope="module")
def runs(policy: Policy) -> Runs:
    return Runs(policy)


# --- the set ---------------------------------------------------------------------------------


def test_the_set_is_what_its_readme_says() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
    for lang in ("zh", "en"):
        kinds = [c.kind for c in CASES if c.lang == lang]
        assert len(kinds) >= 40 and set(kinds) == {"lexicon", "pattern", "model"}, lang
    assert all(len(c.lead_in) <= 300 and c.harmful for c in CASES)
    tricks = {c.trick for c in CASES if c.kind == "lexicon"}
    assert {"traditional", "full-width", "zero-width", "mixed case"} <= tricks


def test_splits_put_a_boundary_at_every_inner_position() -> None:
    case = Case("x", "en", "lexicon", "plain", "ab cd ef", "XYZW", "gh")
    labelled = dict(splits(case, piece=3))
    assert list(labelled) == ["k=1", "k=2", "k=3", "chars"]
    assert labelled["k=2"] == ["ab ", "cd ", "ef", "XY", "ZW", "gh"]
    assert labelled["chars"] == list("ab cd efXYZWgh")


@pytest.mark.parametrize(
    ("delivered", "shown", "masked"),
    [
        ("call ", [0, 1, 2, 3, 4], 0),  # cut short
        ("call [X] now", [*range(5), 18, 19, 20, 21], 1),  # replaced
        ("call 138 now", [*range(8), 18, 19, 20, 21], 1),  # start shown, rest dropped
        ("call 138 0013 8000 now", list(range(22)), 0),  # shown whole
    ],
)
def test_align_counts_what_the_client_saw(delivered: str, shown: list[int], masked: int) -> None:
    text = "call 138 0013 8000 now"
    assert align(text, delivered, "[X]", [(5, 18)]) == (shown, masked)


# --- every case, every split -----------------------------------------------------------------


@pytest.mark.parametrize("case", params(INLINE, HOLD_LEAKS))
async def test_hold_delivers_no_violating_character(runs: Runs, case: Case) -> None:
    outcomes = await runs.get(case, "hold")
    exposed = {o.split: o.violating_exposed for o in outcomes if o.violating_exposed}
    assert exposed == {}
    assert all(not o.guard_exposed for o in outcomes)


@pytest.mark.parametrize("mode", ["hold", "async"])
@pytest.mark.parametrize("case", INLINE, ids=[c.id for c in INLINE])
async def test_every_case_flagged_whole_is_stopped_in_every_split(runs: Runs, case: Case, mode: Mode) -> None:
    whole = await runs.whole(case)
    assert whole.flagged, "every lexicon and pattern case is flagged by the lists and patterns"
    outcomes = await runs.get(case, mode)
    assert len(outcomes) == len(case.harmful)  # every inner boundary, and one character a chunk
    assert [o.split for o in outcomes if whole.missed_by(o)] == []
    if whole.action == "block":
        assert all(o.cut and o.retract is None for o in outcomes if mode == "hold")


@pytest.mark.parametrize("case", INLINE, ids=[c.id for c in INLINE])
async def test_async_cut_retracts_what_was_delivered(runs: Runs, case: Case) -> None:
    outcomes = await runs.get(case, "async")
    assert [o.split for o in outcomes if o.retract_covers is False] == []
    exposed_cuts = [o for o in outcomes if o.cut and o.violating_exposed]
    assert all(o.retract is not None for o in exposed_cuts)
    if case.kind == "lexicon" and len(case.harmful) > 2:  # a term split in two goes out in part
        assert exposed_cuts


@pytest.mark.parametrize("mode", ["hold", "async"])
async def test_the_benign_text_alone_is_never_cut(policy: Policy, mode: Mode) -> None:
    """The control: lead-in and tail without the harmful passage pass in both splits."""
    cut = [c.id for c in CASES if any(await control(policy, c, mode))]
    assert cut == []


# --- the leaks, as small as they get ---------------------------------------------------------


async def _deliver(policy: Policy, pieces: list[str]) -> tuple[str, bool]:
    out, _ = await drive(in_mode(policy, "hold"), stream_chunks(pieces))
    text, note = delivered_of(out)
    return text, note is not None


async def test_term_before_a_full_stop_at_a_chunk_end_is_not_released_in_part(policy: Policy) -> None:
    text, cut = await _deliver(policy, ["women belong in the kitchen.", " Bye."])
    assert cut
    assert text == ""  # a match ending in the held tail holds back from its start


async def test_phone_number_before_a_space_at_a_chunk_end_is_not_released_in_part(policy: Policy) -> None:
    text, _ = await _deliver(policy, ["call 138 0013 8000 ", "now."])
    assert text == "call [REDACTED] now."


@pytest.mark.xfail(strict=True, reason=LEAK_EMAIL_LOCAL_PART)
async def test_email_split_before_its_dot_is_not_released_in_part(policy: Policy) -> None:
    text, _ = await _deliver(policy, ["mail zhang", ".wei@example.com now"])
    assert text == "mail [REDACTED] now"  # delivered: "mail zhang[REDACTED] now"


async def test_the_same_without_the_trailing_character_is_held(policy: Policy) -> None:
    """The control for the two above: one character fewer in the chunk and nothing leaks."""
    assert await _deliver(policy, ["women belong in the kitchen", ". Bye."]) == ("", True)
    assert await _deliver(policy, ["call 138 0013 8000", " now."]) == ("call [REDACTED] now.", False)
    assert await _deliver(policy, ["mail zhang.wei", "@example.com now"]) == ("mail [REDACTED] now", False)


@pytest.mark.parametrize(
    ("pieces", "term"),
    [
        (["Fine. women belong ", "in the kitchen. Bye."], "women belong in the kitchen"),
        (["好的。", "有偿拍摄军事基地", "。"], "有偿拍摄军事基地"),
    ],
    ids=["en", "zh"],
)
async def test_drive_names_what_stopped_a_stream(policy: Policy, pieces: list[str], term: str) -> None:
    stops: list[dict[str, Any]] = []
    await drive(in_mode(policy, "hold"), stream_chunks(pieces), stops)
    assert stops and all(s["score"] > 0 for s in stops)
    assert any(term in s["text"] for s in stops)  # the window the list saw
    assert stops[0]["code"].startswith("A.")
