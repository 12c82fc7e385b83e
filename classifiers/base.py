"""The classifier interface: texts in, typed scores per risk code out.

Every classifier, from a keyword list to a guard LLM, satisfies :class:`Classifier`.
Implementations do not inherit from it; the registry (``classifiers.registry``) builds
them from their own pydantic params models, referenced by ``type:`` in policy files.

Optional abilities are separate small protocols:

* :class:`InlineClassifier` -- cheap and synchronous, run inline on the event loop.
* :class:`StreamingClassifier` -- can say how much of a text's tail must be held back in
  a stream because it could still grow into a match (lexicon, patterns).
* :class:`DirectedClassifier` -- judges a user's turn and the assistant's turn differently
  (a guard LLM asked "is this prompt unsafe?" or "is this answer unsafe?").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal, Protocol, runtime_checkable

from pydantic import StringConstraints

__all__ = [
    "RISK_CODE_PATTERN",
    "Classifier",
    "DirectedClassifier",
    "Direction",
    "InlineClassifier",
    "RiskCode",
    "Scores",
    "Span",
    "StreamingClassifier",
]

#: GB/T 45654-2025 Appendix A codes (``A.1.d``) and custom ones (``X.jailbreak``); a bare
#: letter or a partial code (``A``, ``A.1``) names a whole branch in policy rules.
RISK_CODE_PATTERN = r"^[A-Z](\.[0-9A-Za-z_\-]+)*$"
RiskCode = Annotated[str, StringConstraints(pattern=RISK_CODE_PATTERN)]
#: Which way a text travels: from the client (prompts, history, tool results) or from the model.
Direction = Literal["input", "output"]


@dataclass(frozen=True, slots=True)
class Span:
    """A matched region of the *original* (not normalised) text, ``text[start:end]``."""

    start: int
    end: int
    code: str
    score: float = 1.0
    #: What matched, for the incident record: a rule or detector name, never the text itself.
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Scores:
    """One classifier's verdict on one text.

    ``scores`` maps risk codes (``A.1.d``, ``X.jailbreak``) to a score in [0, 1]; a code that
    is absent scored 0. ``spans`` lists where in the text the evidence lies, when the
    classifier knows (keyword and pattern matches do, whole-text models do not).
    """

    classifier: str
    scores: Mapping[str, float] = field(default_factory=dict)
    spans: tuple[Span, ...] = ()
    revision: str = ""


@runtime_checkable
class Classifier(Protocol):
    """Turns a batch of texts into one :class:`Scores` per text, in order."""

    name: str

    async def classify(self, texts: Sequence[str]) -> list[Scores]:
        """Score every text; the result has the same length and order as ``texts``."""
        ...


@runtime_checkable
class InlineClassifier(Protocol):
    """A classifier cheap enough to run on the event loop without a hop (keywords, regexes):
    the screener calls ``scan`` directly, with no task or timeout around it."""

    name: str

    def scan(self, text: str) -> Scores: ...


@runtime_checkable
class StreamingClassifier(Protocol):
    """A classifier whose matches are local, so a stream can release text behind them."""

    name: str

    def holdback(self, text: str) -> int:
        """How many trailing characters of ``text`` (original, not normalised) could still
        become part of a match once more text arrives, and so must not be released yet."""
        ...


@runtime_checkable
class DirectedClassifier(Protocol):
    """A classifier that needs to know whose turn a text is. The screener calls
    ``classify_directed`` instead of ``classify`` when a classifier has it."""

    name: str

    async def classify_directed(self, texts: Sequence[str], direction: Direction) -> list[Scores]:
        """As :meth:`Classifier.classify`, for texts that travel in ``direction``."""
        ...
