"""Shared by the exposure tests (unit: lists and patterns; integration: the default policy with
its model): one run of each case per mode, and the known hold-mode leaks."""

from __future__ import annotations

import pytest

from benchmarks._exposure import Case, Mode, Outcome, WholeText, run_case, whole_text
from gateway.policy import Policy

__all__ = [
    "HOLD_LEAKS",
    "LEAK_EMAIL_LOCAL_PART",
    "LEAK_NUMBER_BEFORE_SPACE",
    "LEAK_TERM_BEFORE_STOP",
    "Runs",
    "params",
]

LEAK_TERM_BEFORE_STOP = (
    "hold mode releases the start of a term that ends just before a full stop at the end of a "
    "chunk: the e-mail pattern holds back only the last word, the term's hit is deferred to the "
    "next check, and the text before the held tail is released"
)
LEAK_NUMBER_BEFORE_SPACE = (
    "hold mode releases the start of a phone number followed by a space at the end of a chunk: "
    "the bank-card pattern holds back from the number's second group, the phone hit is deferred "
    "and its first group is released"
)
LEAK_EMAIL_LOCAL_PART = (
    "hold mode releases the start of an e-mail address split before its '.' or '@': a plain "
    "word is no longer held back as a possible address (since bb621c2), and the rest of the "
    "address is masked when it comes"
)
#: Cases where some split delivers part of a term or number in hold mode; strict xfails, so the
#: fix turns them into failures that say to empty this.
HOLD_LEAKS = {
    "en-lexicon-05": LEAK_TERM_BEFORE_STOP,
    "en-lexicon-18": LEAK_TERM_BEFORE_STOP,
    "en-lexicon-21": LEAK_TERM_BEFORE_STOP,
    "zh-pattern-02": LEAK_NUMBER_BEFORE_SPACE,
    "en-pattern-02": LEAK_NUMBER_BEFORE_SPACE,
    "zh-pattern-10": LEAK_EMAIL_LOCAL_PART,
    "en-pattern-10": LEAK_EMAIL_LOCAL_PART,
}


def params(cases: list[Case], leaks: dict[str, str]) -> list[object]:
    """One pytest param per case, the known leaks marked as strict xfails."""
    return [
        pytest.param(
            c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=leaks[c.id])] if c.id in leaks else []
        )
        for c in cases
    ]


class Runs:
    """Streams each case once per mode for all the tests of a module."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.wholes: dict[str, WholeText] = {}
        self.outcomes: dict[tuple[str, Mode], list[Outcome]] = {}

    async def whole(self, case: Case) -> WholeText:
        if case.id not in self.wholes:
            self.wholes[case.id] = await whole_text(self.policy, case)
        return self.wholes[case.id]

    async def get(self, case: Case, mode: Mode) -> list[Outcome]:
        if (case.id, mode) not in self.outcomes:
            self.outcomes[case.id, mode] = await run_case(self.policy, case, mode, await self.whole(case))
        return self.outcomes[case.id, mode]
