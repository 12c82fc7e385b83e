"""Policy sections for the provider's legal duties: enforcement (Art. 14 ¶2), complaints
(Art. 15), labels (Art. 12, GB 45438-2025) and retention (Cybersecurity Law Art. 21).

Durations are written ``90s``, ``30m``, ``24h``, ``7d`` (or a number of seconds) and held as
seconds; rates as ``10/min`` (also ``/s``, ``/h``, ``/d``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = [
    "ComplaintSettings",
    "Duration",
    "EnforcementSettings",
    "ExplicitLabel",
    "LabelingSettings",
    "LadderStep",
    "Rate",
    "RetentionSettings",
    "parse_duration",
    "parse_rate",
]

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)\s*$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|min|m|h|hour|d|day)\s*$")
_RATE_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE_UNITS |= {"d": 86400.0, "day": 86400.0}
MIN_RETENTION_S = 190 * 86400.0  # six months and a margin: the law asks for at least six


def parse_duration(value: Any) -> float:
    """``"24h"`` → 86400.0; numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is like 90s, 30m, 24h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (like 90s, 30m, 24h or 7d)")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def parse_rate(value: Any) -> tuple[int, float]:
    """``"10/min"`` → (10, 60.0): at most 10 requests per 60 seconds."""
    if isinstance(value, str) and (match := _RATE.match(value)):
        count = int(match.group(1))
        if count >= 1:
            return count, _RATE_UNITS[match.group(2)]
    if isinstance(value, list | tuple) and len(value) == 2:
        return int(value[0]), float(value[1])
    raise ValueError(f"{value!r} is not a rate (like 10/min or 100/h)")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Rate = Annotated[tuple[int, float], BeforeValidator(parse_rate)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LadderStep(_Strict):
    strikes: int = Field(..., ge=1, description="Strikes within the window that reach this step.")
    action: Literal["warn", "restrict", "suspend"]
    rate: Rate | None = Field(None, description="restrict: the most requests allowed, e.g. 10/min.")
    duration: Duration | None = Field(
        None, alias="for", description="How long the step lasts (restrict, suspend); none: until reinstated."
    )

    @model_validator(mode="after")
    def _complete(self) -> LadderStep:
        if self.action == "restrict" and self.rate is None:
            raise ValueError("a restrict step needs a rate, e.g. rate: 10/min")
        if self.action != "restrict" and self.rate is not None:
            raise ValueError(f"rate applies to restrict only, not {self.action}")
        return self


class EnforcementSettings(_Strict):
    """Each block or refuse is one strike; strikes within ``window`` climb the ladder."""

    window: Duration = Field(86400.0, description="Strikes older than this no longer count.")
    ladder: list[LadderStep] = Field(..., min_length=1)
    warning: str = Field(
        "您的请求多次违反使用规范，继续违规将被限制使用。"
        "Your requests have repeatedly broken the usage policy; "
        "further violations will restrict your access.",
        description="Notice sent with responses to a warned user.",
    )

    @model_validator(mode="after")
    def _ascending(self) -> EnforcementSettings:
        counts = [step.strikes for step in self.ladder]
        if counts != sorted(set(counts)):
            raise ValueError("ladder steps must have strictly increasing strikes")
        return self

    def step_for(self, strikes: int) -> LadderStep | None:
        """The highest step that ``strikes`` reach, or None below the first."""
        reached = [step for step in self.ladder if strikes >= step.strikes]
        return reached[-1] if reached else None


class ExplicitLabel(_Strict):
    text: str = Field("【AI生成】", min_length=1, description="Label text shown to the reader.")
    position: Literal["start", "end"] = "end"


class LabelingSettings(_Strict):
    explicit: ExplicitLabel | None = Field(
        None, description="Visible label added to generated text (never to tool calls or JSON output)."
    )
    implicit: bool = Field(True, description="x-aigc-label header and aigc body field (GB 45438).")


class RetentionSettings(_Strict):
    incidents: Duration = Field(MIN_RETENTION_S, description="Incidents older than this are purged daily.")
    allow_shorter: bool = Field(
        False, description="Allow less than 190 days (the law asks for at least six months)."
    )

    @model_validator(mode="after")
    def _lawful(self) -> RetentionSettings:
        if self.incidents < MIN_RETENTION_S and not self.allow_shorter:
            raise ValueError(
                "retention.incidents is under 190 days; the law asks for at least six months "
                "(set allow_shorter: true to override)"
            )
        return self


class ComplaintSettings(_Strict):
    response_deadline: Duration = Field(15 * 86400.0, description="Time to answer a complaint.")
