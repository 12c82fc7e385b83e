"""Pattern classifier (``type: patterns``): personal-information detectors and custom regexes.

Patterns run on the normalised text (:mod:`classifiers.normalize`): full-width and other
scripts' digits are ASCII, zero-width characters are gone, whitespace runs are one space and
letters are case-folded. So ``１３８\u200b0013 8000`` is a phone number, and a custom regex
sees lower-case text (``ignore_case`` matters only for its own upper-case literals).
Numbers are matched with digit boundaries: a phone number inside a longer run of digits is
not a phone number. Spans are reported in original-text offsets.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Annotated, Any

import regex  # type: ignore[import-untyped,unused-ignore]
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
    model_validator,
)

from classifiers.base import Scores, Span
from classifiers.lexicon import RiskCode
from classifiers.normalize import normalize, normalize_tail
from classifiers.registry import ClassifierParams

__all__ = ["BUILTIN_DETECTORS", "PatternClassifier", "PatternParams", "PatternRule", "RegexRule"]

#: How far back (normalised characters) a stream hold-back looks for a match that could
#: still complete; longer matches are not held whole.
HOLDBACK_WINDOW = 256
#: A custom regex that backtracks catastrophically raises ``TimeoutError`` (the policy's
#: ``on_error`` then applies) instead of stalling the event loop.
MATCH_TIMEOUT_S = 1.0

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS = "10x98765432"  # normalised text is case-folded: the check 'X' is 'x'


def _valid_cn_id(candidate: str) -> bool:
    """GB 11643 check character and a birth date (positions 7-14) that is real and past."""
    digits = [int(ch) for ch in candidate[:17]]
    if _ID_CHECK_CHARS[sum(d * w for d, w in zip(digits, _ID_WEIGHTS, strict=True)) % 11] != candidate[17]:
        return False
    try:
        born = date(int(candidate[6:10]), int(candidate[10:12]), int(candidate[12:14]))
    except ValueError:
        return False
    return born <= date.today()


def _valid_bank_card(candidate: str) -> bool:
    """Luhn checksum over 12-19 digits; a leading 0 (no issuer uses it, but runs of zeros
    pass Luhn) and 18-digit valid ID numbers (reported by ``cn_id_card``) are not cards."""
    digits = [int(ch) for ch in candidate if ch.isdigit()]
    if not 12 <= len(digits) <= 19 or digits[0] == 0:
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    if total % 10:
        return False
    plain = "".join(map(str, digits))
    return not (len(plain) == 18 and _valid_cn_id(plain))


@dataclass(frozen=True, slots=True)
class _Detector:
    pattern: str
    check: Callable[[str], bool] | None = None
    #: A stdlib regex that every match contains: a cheap C search that skips most texts.
    needs: str | None = None
    #: Characters a match can end with; an open match at the end of a stream always ends
    #: with the text's last character, so hold-back skips the rule when that is not one.
    ends: frozenset[str] | None = None
    #: A stdlib regex an open match at the end of a stream must contain to be held back.
    held: str | None = None


_DIGIT_END = frozenset("0123456789+- x")
_EMAIL_END = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._%+-@")


#: Built-in detectors by name; their patterns assume normalised text.
BUILTIN_DETECTORS: Mapping[str, _Detector] = {
    # Mainland resident ID (GB 11643): area, birth date YYYYMMDD, sequence, check character.
    "cn_id_card": _Detector(
        r"(?<![0-9])[1-9][0-9]{5}(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
        r"[0-9]{3}[0-9x](?![0-9])",
        _valid_cn_id,
        needs=r"[0-9]{8}",
        ends=_DIGIT_END,
    ),
    # Mainland mobile 1[3-9]x, optional +86/0086, 3-4-4 grouping with single spaces/hyphens.
    "cn_mobile": _Detector(
        r"(?<![0-9])(?:(?:\+|00)86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9])",
        needs=r"1[3-9][0-9]",
        ends=_DIGIT_END,
    ),
    # Card numbers: plain 12-19 digits, groups of four, or the 4-6-5 (Amex) grouping.
    "bank_card": _Detector(
        # The shared first four digits stand outside the alternation: the engine then gives up
        # at once where no digit starts (10x faster on ordinary text, same matches).
        r"(?<![0-9])[0-9]{4}(?:(?:[ -][0-9]{4}){2,3}(?:[ -][0-9]{1,3})?"
        r"|[ -][0-9]{6}[ -][0-9]{4,5}|[0-9]{8,15})(?![0-9])",
        _valid_bank_card,
        needs=r"[0-9]{4}",
        ends=_DIGIT_END,
    ),
    "email": _Detector(
        r"(?<![a-z0-9._%+-])[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?![a-z0-9-])",
        needs="@",
        ends=_EMAIL_END,
        # Any trailing English word could still become an address's local part; holding every
        # one back made every English delta wait for the next (20 ms lag per delta in
        # benchmarks/stream.py). Held: a tail with '@', a digit or a '._%+-' (the shape of
        # "zhang.wei88" or "j_smith"). A plain word ("info") may show before an '@' turns it into
        # an address; the address is still redacted from there on and the incident records
        # the characters shown.
        held=r"[@0-9._%+-]",
    ),
}

RuleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=64)]


class RegexRule(BaseModel):
    """A custom regular expression (``regex`` module syntax) matched on the normalised text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: RuleName = Field(description="Rule name; reported as the span's detail, so no content.")
    pattern: str = Field(description="Regular expression, matched on normalised (lower-case) text.")
    code: RiskCode = Field(description="Risk code a match scores.")
    ignore_case: bool = Field(default=True, description="Compile with IGNORECASE.")
    _compiled: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _compiles(self) -> RegexRule:
        try:
            compiled = regex.compile(self.pattern, regex.IGNORECASE if self.ignore_case else 0)
        except regex.error as exc:
            raise ValueError(f"regex rule {self.name!r}: invalid pattern: {exc}") from exc
        if compiled.search("") is not None:
            raise ValueError(f"regex rule {self.name!r}: pattern matches the empty string")
        self._compiled = compiled
        return self

    @property
    def compiled(self) -> Any:
        """The ``regex.Pattern`` compiled during validation."""
        return self._compiled


class PatternParams(ClassifierParams):
    """Params of a ``type: patterns`` classifier: built-in detectors and custom regexes."""

    detectors: dict[str, RiskCode] = Field(
        default_factory=dict,
        description=f"Built-in detector name -> risk code; detectors: {', '.join(BUILTIN_DETECTORS)}.",
    )
    regexes: list[RegexRule] = Field(default_factory=list, description="Custom regular expressions.")

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, detectors: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(detectors) - set(BUILTIN_DETECTORS))
        if unknown:
            known = ", ".join(sorted(BUILTIN_DETECTORS))
            raise ValueError(f"unknown detector(s) {', '.join(unknown)} (known: {known})")
        return detectors

    @model_validator(mode="after")
    def _names_unique_and_some_rule(self) -> PatternParams:
        names = [rule.name for rule in self.regexes] + list(self.detectors)
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique and not a detector's: {', '.join(duplicates)}")
        if not self.detectors and not self.regexes:
            raise ValueError("a patterns classifier needs at least one detector or regex")
        return self


@dataclass(frozen=True, slots=True)
class PatternRule:
    """One compiled rule: matches of ``pattern`` that pass ``check`` score ``code``."""

    name: str
    code: str
    pattern: Any  # regex.Pattern[str]; the regex module ships no type stubs
    check: Callable[[str], bool] | None = None
    needs: re.Pattern[str] | None = None
    ends: frozenset[str] | None = None
    held: re.Pattern[str] | None = None
    #: Built-in patterns are linear; only user regexes need a backtracking guard (it costs
    #: a few microseconds per search).
    timeout: float | None = MATCH_TIMEOUT_S

    @classmethod
    def builtin(cls, detector: str, code: str) -> PatternRule:
        """The built-in detector ``detector`` (a key of :data:`BUILTIN_DETECTORS`)."""
        spec = BUILTIN_DETECTORS[detector]
        needs = re.compile(spec.needs) if spec.needs else None
        held = re.compile(spec.held) if spec.held else None
        return cls(detector, code, regex.compile(spec.pattern), spec.check, needs, spec.ends, held, None)


class PatternClassifier:
    """Scores 1.0 for every risk code whose rule matched; spans in original offsets.

    Implements :class:`classifiers.base.Classifier` and
    :class:`classifiers.base.StreamingClassifier`.
    """

    def __init__(self, name: str, rules: Sequence[PatternRule]):
        if not rules:
            raise ValueError(f"patterns classifier {name!r} has no rules")
        self.name = name
        self._rules = tuple(rules)
        self.revision = _revision(self._rules)
        self._empty = Scores(self.name, MappingProxyType({}), (), self.revision)  # the common verdict, shared

    @classmethod
    def from_params(cls, name: str, params: PatternParams) -> PatternClassifier:
        """Build from validated params."""
        rules = [PatternRule.builtin(detector, code) for detector, code in params.detectors.items()]
        rules += [PatternRule(rule.name, rule.code, rule.compiled) for rule in params.regexes]
        return cls(name, rules)

    async def classify(self, texts: Sequence[str]) -> list[Scores]:
        """Scan every text; regex scans are fast enough to run inline."""
        return [self.scan(text) for text in texts]

    def scan(self, text: str) -> Scores:
        """Every rule match in ``text``, as spans over the original text."""
        norm = normalize(text)
        spans: list[Span] = []
        for rule in self._rules:
            if rule.needs is not None and rule.needs.search(norm.text) is None:
                continue
            for match in rule.pattern.finditer(norm.text, timeout=rule.timeout):
                if match.start() == match.end() or (rule.check and not rule.check(match.group())):
                    continue
                start, end = norm.to_original(match.start(), match.end())
                spans.append(Span(start, end, rule.code, 1.0, rule.name))
        if not spans:
            return self._empty
        spans.sort(key=lambda span: (span.start, span.end, span.code, span.detail))
        return Scores(self.name, {span.code: 1.0 for span in spans}, tuple(spans), self.revision)

    def holdback(self, text: str) -> int:
        """Original characters from the earliest point where a match could still complete (or,
        complete, still be extended or undone, as 11 digits can grow into a card number) to the
        end of ``text``; 0 when no rule could match across the end."""
        # Two characters more than the window: lookbehinds need the character before it,
        # and the tail's first character may differ from the full text's.
        norm = normalize_tail(text, HOLDBACK_WINDOW + 2)
        tail = norm.text
        earliest = len(tail)
        last = tail[-1:]
        for rule in self._rules:
            if rule.ends is not None and last not in rule.ends:
                continue
            start = _open_match_start(
                rule.pattern, tail, max(0, len(tail) - HOLDBACK_WINDOW), earliest, rule.timeout
            )
            if rule.held is None or rule.held.search(tail, start) is not None:
                earliest = start
        return norm.original_length - norm.original_offset(earliest)


def _open_match_start(pattern: Any, text: str, pos: int, limit: int, timeout: float | None) -> int:
    """The first start in ``[pos, limit)`` of a match that reaches the end of ``text`` or
    could with more text; ``limit`` if there is none."""
    while pos < limit:
        match = pattern.search(text, pos, partial=True, timeout=timeout)
        if match is None or match.start() >= limit:
            break
        # search prefers a complete match that stops short of the end ('6222 0213 8001' in
        # '6222 0213 8001 38'); fullmatch asks whether the whole tail could still be one.
        start = int(match.start())
        if match.end() == len(text) or pattern.fullmatch(text, start, partial=True, timeout=timeout):
            return start
        pos = start + 1
    return limit


def _revision(rules: Sequence[PatternRule]) -> str:
    digest = hashlib.sha256()
    for rule in rules:
        check = rule.check.__name__ if rule.check else ""
        line = f"{rule.name}\t{rule.code}\t{rule.pattern.flags}\t{rule.pattern.pattern}\t{check}\n"
        digest.update(line.encode())
    return digest.hexdigest()[:12]
