"""Shared by the exposure tests (unit: lists and patterns; integration: the default policy with
its model): one run of each case per mode, and the known hold-mode leaks."""

from __future__ import annotations

import pytest

from benchmarks._exposure import Case, Mode, Outcome, WholeText, run_case, whole_text
from gateway.policy import Policy

__all__ = [
    "HOLD_LEAKS",
    "LEAK_EMAIL_LOCAL_PART",
    "Runs",
    "params",
]

LEAK_EMAIL_LOCAL_PART = (
    "accepted trade-off: hold mode releases a plain word before an e-mail address's '.' or '@' "
    "turns it into one (holding every English word back as a possible address delayed every "
    "English delta by one delta); the rest of the address is masked and the incident records "
    "the characters shown"
)
#: Cases where some split delivers part of a term or number in hold mode; strict xfails, so the
#: fix turns them into failures that say to empty this.
HOLD_LEAKS = {
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
