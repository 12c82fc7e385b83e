"""Cascades: which awaited classifiers run on which texts, stage by stage.

A classifier entry in a policy may carry a ``run:`` block. Classifiers run in stages by
``stage`` (0 first); those of one stage run concurrently. ``when`` narrows where a classifier
runs: some routes, one direction, and -- the point of a cascade -- only the texts an earlier
stage was unsure about (``uncertain: [low, high]``: some score, of ``codes`` when given, at or
above ``low`` and below ``high``). A guard LLM that takes 300 ms then runs on the few texts the
fast tier cannot settle, not on every request. The same block sets the classifier's timeout,
its limit of calls in flight, its circuit breaker, its cache and its own ``on_error``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from classifiers.base import Classifier, Direction, RiskCode
from classifiers.guarded import BreakerSettings, Guarded

__all__ = ["BreakerParams", "ClassifierRun", "Member", "When", "build_stages"]

OnError = Literal["block", "allow", "flag"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class When(_Strict):
    uncertain: tuple[float, float] | None = Field(
        None,
        description="[low, high]: run only on texts an earlier stage scored at or above low and below "
        "high on some code (of `codes`); high 1.0 includes 1.0. None: every text.",
    )
    codes: tuple[RiskCode, ...] = Field(
        (), description="Codes (or branches: A.1 covers A.1.d) whose scores `uncertain` looks at; empty: any."
    )
    routes: tuple[str, ...] = Field((), description="Route names (gateway config) to run on; empty: all.")
    directions: tuple[Direction, ...] = Field(("input", "output"), description="input, output or both.")

    @model_validator(mode="after")
    def _band(self) -> When:
        if self.uncertain is not None:
            low, high = self.uncertain
            if not 0.0 <= low < high <= 1.0:
                raise ValueError("uncertain must be [low, high] with 0 <= low < high <= 1")
        elif self.codes:
            raise ValueError("codes narrows `uncertain`; set uncertain: [low, high] too")
        if not self.directions:
            raise ValueError("directions must name input, output or both")
        return self

    def covers(self, code: str) -> bool:
        return not self.codes or any(code == c or code.startswith(c + ".") for c in self.codes)

    def unsure(self, scores: Mapping[str, float]) -> bool:
        if self.uncertain is None:
            return True
        low, high = self.uncertain
        return any(low <= s and (s < high or high == 1.0) for code, s in scores.items() if self.covers(code))


class BreakerParams(_Strict):
    failures: int = Field(5, ge=1, description="Failures in a row that open the breaker.")
    reset_s: float = Field(30.0, gt=0, description="Seconds it stays open before one trial call.")


class ClassifierRun(_Strict):
    """The ``run:`` block of a classifier entry (awaited classifiers only)."""

    stage: int = Field(0, ge=0, le=9, description="Stages run in order; one stage's classifiers together.")
    when: When = When()
    timeout_s: float | None = Field(
        None,
        gt=0,
        le=120,
        description="Per call, waiting for a free slot included; default classifier_timeout_s.",
    )
    max_concurrency: int | None = Field(None, ge=1, description="Calls in flight at once; more wait.")
    on_error: OnError | None = Field(None, description="What a failure counts as; default the policy's.")
    circuit_breaker: BreakerParams | None = Field(None, description="None: no breaker.")
    cache_size: int = Field(
        4096, ge=0, description="Verdicts kept per normalised text, for classifiers that are deterministic."
    )

    @model_validator(mode="after")
    def _cascade(self) -> ClassifierRun:
        if self.stage == 0 and self.when.uncertain is not None:
            raise ValueError("when.uncertain needs an earlier stage: set stage: 1 or more")
        return self


@dataclass(frozen=True)
class Member:
    """One classifier in its stage, with the settings it runs under."""

    runner: Guarded
    run: ClassifierRun
    on_error: OnError

    @property
    def name(self) -> str:
        return self.runner.name

    def applies(self, route: str | None, direction: Direction) -> bool:
        when = self.run.when
        if direction not in when.directions:
            return False
        return not when.routes or route in when.routes

    def targets(self, scores: Sequence[Mapping[str, float]]) -> list[int]:
        """Indices of the texts to run on, given what earlier stages scored each."""
        return [i for i, s in enumerate(scores) if self.run.when.unsure(s)]


def build_stages(
    classifiers: Mapping[str, Classifier],
    runs: Mapping[str, ClassifierRun],
    *,
    timeout_s: float,
    on_error: OnError,
) -> tuple[tuple[Member, ...], ...]:
    """The awaited classifiers grouped by stage, in stage order, each behind its guard."""
    by_stage: dict[int, list[Member]] = {}
    for name in sorted(classifiers):
        run = runs.get(name, ClassifierRun())
        breaker = run.circuit_breaker
        runner = Guarded(
            classifiers[name],
            timeout_s=run.timeout_s or timeout_s,
            max_concurrency=run.max_concurrency,
            breaker=BreakerSettings(breaker.failures, breaker.reset_s) if breaker else None,
            cache_size=run.cache_size,
        )
        by_stage.setdefault(run.stage, []).append(Member(runner, run, run.on_error or on_error))
    return tuple(tuple(by_stage[stage]) for stage in sorted(by_stage))
