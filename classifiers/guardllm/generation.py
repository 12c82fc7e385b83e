"""What a guard model is asked and what it answers, independent of family and backend.

A family turns a text into :class:`Prompt` s (chat messages for the model's own chat template, or
a raw prompt modgate rendered), a backend turns prompts into :class:`Generation` s (the answer's
text and, where the backend gives them, the top candidates and probabilities of each generated
token), and the family reads scores from those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Backend", "Generation", "GuardLLMError", "Prompt", "TokenChoice", "verdict_probabilities"]


class GuardLLMError(RuntimeError):
    """A guard model failed: an HTTP error status, a malformed or unparseable answer, a model
    error. The message names the classifier and the reason, never the text judged."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """One request to the model: ``messages`` in chat mode, else the rendered ``text``.

    ``template_kwargs`` go to the chat template (ShieldGemma's ``guideline``): locally as
    keyword arguments of ``apply_chat_template``, over HTTP as vLLM's ``chat_template_kwargs``.
    """

    messages: tuple[Mapping[str, Any], ...] | None = None
    text: str | None = None
    template_kwargs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenChoice:
    """One generated token: its text and the probabilities of the top candidates at its step
    (the chosen token among them)."""

    text: str
    top: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Generation:
    """The model's answer; ``tokens`` is None where the backend gave no probabilities."""

    text: str
    tokens: tuple[TokenChoice, ...] | None = None


class Backend(Protocol):
    """Generates greedily (temperature 0) for a batch of prompts, one answer each, in order."""

    async def generate(self, prompts: Sequence[Prompt]) -> list[Generation]: ...

    async def aclose(self) -> None: ...


def verdict_probabilities(
    tokens: Sequence[TokenChoice] | None, words: Sequence[str], anchor: str = ""
) -> dict[str, float] | None:
    """The probability of each verdict word at the step where the verdict was generated: the
    first token with visible text after the answer so far ends with ``anchor`` (``""``: the first
    visible token; ``"Safety:"`` for Qwen3Guard).

    A candidate token counts for a word when its stripped text is a prefix of the word (case
    folded): tokenizers split words differently (``" Unsafe"``, ``"unsafe"``, ``"Uns"``), and
    the first piece already decides the word. A piece that begins several words decides none.
    None when there are no probabilities, no such step, or no candidate begins a word.
    """
    if not tokens:
        return None
    folded = [w.casefold() for w in words]
    anchor = anchor.casefold()
    before = ""
    for token in tokens:
        if token.text.strip() and before.strip().casefold().endswith(anchor):
            probs = dict.fromkeys(words, 0.0)
            for candidate, p in token.top.items():
                piece = candidate.strip().casefold()
                hits = [w for w, f in zip(words, folded, strict=True) if piece and f.startswith(piece)]
                if len(hits) == 1:
                    probs[hits[0]] += p
            return probs if any(probs.values()) else None
        before += token.text
    return None
