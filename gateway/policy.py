"""Policy files: what to screen with, and what to do when a risk fires.

Semantics (documented for operators in README.md):

* A classifier yields a score per risk code. A rule per code gives the action for input and
  output and a ``threshold``; keyword and pattern hits score 1.0.
* A code with no rule falls back to the rule of its nearest parent code (``A.1.d`` → ``A.1``
  → ``A``), then to ``default_rule``.
* When several rules fire, the most severe action wins: block > refuse > redact > flag > allow.
* ``extends`` merges by key: classifier ids and rule codes of the child replace the parent's
  whole entry (``null`` removes it); settings blocks merge key by key; lists are replaced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from classifiers.base import RISK_CODE_PATTERN, Classifier, InlineClassifier, Scores, StreamingClassifier
from classifiers.lru import LRU
from gateway.cascade import ClassifierRun, Member, build_stages
from gateway.duties import ComplaintSettings, EnforcementSettings, LabelingSettings, RetentionSettings

__all__ = [
    "ACTIONS",
    "STOPPING",
    "Action",
    "Policy",
    "PolicyFile",
    "RefusalSettings",
    "Rule",
    "StreamingSettings",
    "severity",
]

Action = Literal["allow", "flag", "redact", "refuse", "block"]
ACTIONS: tuple[Action, ...] = ("allow", "flag", "redact", "refuse", "block")
#: The actions that keep content from its destination.
STOPPING: frozenset[Action] = frozenset({"refuse", "block"})
_SEVERITY = {action: rank for rank, action in enumerate(ACTIONS)}


def severity(action: Action) -> int:
    return _SEVERITY[action]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """What to do when a risk code scores at or above ``threshold``."""

    input: Action = Field("block", description="Action on client input (prompts, history, tool results).")
    output: Action = Field("block", description="Action on model output (content, reasoning, tool calls).")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Score at or above which the rule fires.")
    report: bool = Field(False, description="Queue a report to the authority (Art. 14) when it fires.")


class StreamingSettings(_Strict):
    mode: Literal["hold", "async"] = Field(
        "hold", description="hold: release text only after a check covered it; async: check behind."
    )
    context_chars: int = Field(
        64, ge=8, le=4096, description="Released text kept as left context for the next check."
    )
    model_context_chars: int = Field(
        200,
        ge=0,
        le=8192,
        description="Left context a model classifier sees before the new text (a CJK character counts 3).",
    )
    release: Literal["window", "sentence"] = Field(
        "window",
        description="hold mode with model classifiers: 'window' releases what a model's window "
        "cleared; 'sentence' only whole sentences a model judged (no part of a harmful sentence "
        "is shown; text appears a sentence at a time).",
    )
    window_min_score: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Least model score that stops a stream on a window that ends mid-sentence (rule "
        "thresholds apply at sentence ends and at the end).",
    )
    passage_chars: int = Field(
        600,
        ge=0,
        le=16384,
        description="At sentence ends and at the end of a stream, a model sees this much recent text "
        "(a CJK character counts 3).",
    )


class RefusalSettings(_Strict):
    message: str = Field(
        "抱歉，我无法提供这方面的内容。Sorry, I can't help with that.",
        description="Canned reply for refuse (and for block on output).",
    )
    redaction: str = Field("[REDACTED]", description="Replacement text for a redacted span.")


class PolicyFile(_Strict):
    """One policy file as written; ``extends`` is resolved by the loader before this is built."""

    name: str = Field(..., min_length=1, description="Policy name, shown in incidents and metrics.")
    extends: str | None = Field(None, description="Parent policy: 'default' or a path relative to this file.")
    description: str = ""
    classifiers: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict,
        description="Classifier id -> {type: ..., params of that type}; null removes an inherited one.",
    )
    rules: dict[str, Rule | None] = Field(
        default_factory=dict, description="Risk code -> rule; null removes an inherited one."
    )
    default_rule: Rule = Field(
        Rule(input="allow", output="allow", threshold=0.5),
        description="Rule for risk codes with no rule of their own (nor of a parent code).",
    )
    refusal: RefusalSettings = RefusalSettings()
    streaming: StreamingSettings = StreamingSettings()
    on_error: Literal["block", "allow", "flag"] = Field(
        "block", description="What a classifier error or timeout counts as."
    )
    classifier_timeout_s: float = Field(2.0, gt=0, le=60)
    token_ids: Literal["reject", "allow"] = Field(
        "reject",
        description="Prompts and embeddings inputs given as token ids, which no classifier can read: "
        "'reject' answers 400, 'allow' forwards them unscreened (the answer is still screened).",
    )
    enforcement: EnforcementSettings | None = Field(
        None, description="Strikes ladder against users who abuse the service; none: no enforcement."
    )
    labeling: LabelingSettings = LabelingSettings()
    retention: RetentionSettings = RetentionSettings()
    complaints: ComplaintSettings = ComplaintSettings()

    @field_validator("rules")
    @classmethod
    def _codes(cls, rules: dict[str, Rule | None]) -> dict[str, Rule | None]:
        for code in rules:
            if not re.match(RISK_CODE_PATTERN, code):
                raise ValueError(f"{code!r} is not a risk code (e.g. A.1.d or X.jailbreak)")
        return rules

    @field_validator("classifiers")
    @classmethod
    def _types(cls, classifiers: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any] | None]:
        for cid, spec in classifiers.items():
            if spec is not None and not isinstance(spec.get("type"), str):
                raise ValueError(f"classifier {cid!r} needs a 'type'")
        return classifiers


@dataclass(frozen=True)
class Policy:
    """A loaded policy: its merged file, built classifiers and content-hash version."""

    spec: PolicyFile
    classifiers: Mapping[str, Classifier]
    version: str
    source: str
    #: Classifier id -> its ``run:`` block (stage, when, timeout, breaker, ...), where it has one.
    runs: Mapping[str, ClassifierRun] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def scan_cache(self) -> LRU[str, tuple[Scores, ...]]:
        """Inline classifiers' results by text; see ``screening._run_inline``."""
        return LRU(2048)

    @cached_property
    def inline_classifiers(self) -> tuple[InlineClassifier, ...]:
        return tuple(c for c in self.classifiers.values() if isinstance(c, InlineClassifier))

    @cached_property
    def awaited_classifiers(self) -> tuple[Classifier, ...]:
        return tuple(c for c in self.classifiers.values() if not isinstance(c, InlineClassifier))

    @cached_property
    def stages(self) -> tuple[tuple[Member, ...], ...]:
        """The awaited classifiers by stage, each behind its timeout, limit, breaker and cache
        (built once per loaded policy: the breaker's state lives here)."""
        awaited = {cid: c for cid, c in self.classifiers.items() if not isinstance(c, InlineClassifier)}
        return build_stages(
            awaited, self.runs, timeout_s=self.spec.classifier_timeout_s, on_error=self.spec.on_error
        )

    @cached_property
    def streaming_classifiers(self) -> tuple[StreamingClassifier, ...]:
        return tuple(c for c in self.classifiers.values() if isinstance(c, StreamingClassifier))

    def rule_for(self, code: str) -> Rule:
        rules = self.spec.rules
        probe = code
        while True:
            rule = rules.get(probe)
            if rule is not None:
                return rule
            if "." not in probe:
                return self.spec.default_rule
            probe = probe.rsplit(".", 1)[0]

    def action_for(self, code: str, score: float, direction: Literal["input", "output"]) -> Action:
        rule = self.rule_for(code)
        if score < rule.threshold:
            return "allow"
        return rule.input if direction == "input" else rule.output
