"""Guard-model families: how a text becomes prompts, and how the answers become scores.

* Llama Guard 3 / 4 answer ``safe`` or ``unsafe\\nS1,S10``.
* Qwen3Guard-Gen answers ``Safety: Safe|Unsafe|Controversial``, ``Categories: Violent, ...`` and,
  judging a response, ``Refusal: Yes|No`` (read, not scored: a refusal is no risk).
* ShieldGemma is asked once per harm policy and answers ``Yes`` or ``No``.

The verdict decides which codes are scored; the score is the model's probability of the verdict
where the backend gives token probabilities (the unsafe word against the safe one at the verdict
step), else 1.0. A safe verdict scores nothing (ShieldGemma's probability is kept whatever the
answer: it is a scorer, and its low scores are information). An answer that cannot be read
raises :class:`GuardLLMError`: never a silent "safe".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

from classifiers.base import Direction
from classifiers.guardllm.categories import SHIELDGEMMA, ShieldPolicy
from classifiers.guardllm.generation import Generation, GuardLLMError, Prompt, verdict_probabilities

__all__ = [
    "CategoryCodes",
    "Family",
    "LlamaGuard",
    "Mode",
    "Qwen3Guard",
    "ShieldGemma",
    "conversation",
    "neutralise",
]

logger = logging.getLogger(__name__)

#: ``chat``: messages formatted by the model's own chat template; ``prompt``: text modgate rendered.
Mode = Literal["chat", "prompt"]


class Family(Protocol):
    """Prompts for one text and the scores read from the answers to them."""

    name: str

    def prompts(self, text: str, direction: Direction) -> list[Prompt]: ...

    def scores(self, answers: Sequence[Generation], direction: Direction) -> dict[str, float]:
        """Scores per risk code from the answers to ``prompts(text, direction)``, in order."""
        ...


class CategoryCodes:
    """A family's category names -> risk codes (``None``: ignored), matched case-insensitively."""

    def __init__(self, codes: Mapping[str, str | None], unsafe_code: str, classifier: str) -> None:
        self._codes = {name.strip().casefold(): code for name, code in codes.items()}
        self.unsafe_code = unsafe_code
        self._classifier = classifier

    def score(self, names: Iterable[str], score: float) -> dict[str, float]:
        """``score`` on the code of every named category. A name not in the map scores
        ``unsafe_code`` (and is logged, by name); no name at all scores ``unsafe_code``: the model
        said unsafe without saying why, which must not count as safe."""
        out: dict[str, float] = {}
        named = False
        for raw in names:
            name = raw.strip()
            if not name:
                continue
            named = True
            key = name.casefold()
            if key in self._codes:
                code = self._codes[key]
            else:
                code = self.unsafe_code
                logger.warning(
                    "guard model named a category not in its map",
                    extra={"classifier": self._classifier, "category": name[:64], "code": code},
                )
            if code is not None:
                out[code] = max(out.get(code, 0.0), score)
        if not named:
            out[self.unsafe_code] = score
        return out


#: Control tokens of the shipped families' templates (Llama 3 and 4, Qwen, Gemma).
_CONTROL = re.compile(r"<(\|[A-Za-z0-9_]+\||start_of_turn|end_of_turn|bos|eos)>")


def neutralise(text: str) -> str:
    """``text`` with control tokens broken (``<|eot_id|>`` -> ``< |eot_id|>``). A server
    tokenises the rendered prompt with its special tokens, so a text holding them could close its
    turn and write the guard's verdict itself; broken, they reach the model as plain characters."""
    return _CONTROL.sub(r"< \1>", text)


def conversation(text: str, direction: Direction, parts: bool = False) -> tuple[dict[str, Any], ...]:
    """The text as a chat: the user's turn, or the assistant's turn after an *empty* user turn.

    The screener judges one text at a time, so for an answer the user's turn is unknown. The
    empty turn keeps each template's own logic (Llama Guard judges the role of the last turn,
    Qwen3Guard switches to response moderation on an assistant turn, ShieldGemma to its response
    wording) without inventing a question that could sway the verdict.
    """

    def message(role: str, content: str) -> dict[str, Any]:
        # Llama Guard 4's processor template reads content parts, the OpenAI format; others a string.
        return {"role": role, "content": [{"type": "text", "text": content}] if parts else content}

    if direction == "input":
        return (message("user", neutralise(text)),)
    return (message("user", ""), message("assistant", neutralise(text)))


def unsafe_score(probs: Mapping[str, float] | None, unsafe: str, safe: str, fallback: float = 1.0) -> float:
    """P(unsafe word) against P(safe word) at the verdict step: ≥ 0.5 whenever greedy decoding
    chose the unsafe word over the safe one, whatever other tokens took."""
    if probs is None or probs[unsafe] + probs[safe] <= 0.0:
        return fallback
    return probs[unsafe] / (probs[unsafe] + probs[safe])


def single(answers: Sequence[Generation]) -> Generation:
    if len(answers) != 1:
        raise GuardLLMError(f"expected one answer, got {len(answers)}")
    return answers[0]


_LLAMA_VERDICT = re.compile(r"^\s*(unsafe|safe)\b", re.IGNORECASE)
_LLAMA_CATEGORY = re.compile(r"\bS(\d{1,3})\b", re.IGNORECASE)


class LlamaGuard:
    """Llama Guard 3 and 4, through the model's own chat template (it lists the categories)."""

    modes: tuple[Mode, ...] = ("chat",)

    def __init__(self, version: Literal[3, 4], categories: CategoryCodes) -> None:
        self.name = f"llama-guard-{version}"
        self._parts = version == 4
        self._categories = categories

    def prompts(self, text: str, direction: Direction) -> list[Prompt]:
        return [Prompt(messages=conversation(text, direction, parts=self._parts))]

    def scores(self, answers: Sequence[Generation], direction: Direction) -> dict[str, float]:
        answer = single(answers)
        match = _LLAMA_VERDICT.match(answer.text)
        if match is None:
            raise GuardLLMError(f"{self.name} answer starts with neither 'safe' nor 'unsafe'")
        if match.group(1).casefold() == "safe":
            return {}
        score = unsafe_score(verdict_probabilities(answer.tokens, ("safe", "unsafe")), "unsafe", "safe")
        names = [f"S{int(n)}" for n in _LLAMA_CATEGORY.findall(answer.text, match.end())]
        return self._categories.score(names, score)


_QWEN_SAFETY = re.compile(r"safety\s*:\s*(safe|unsafe|controversial)\b", re.IGNORECASE)
_QWEN_CATEGORIES = re.compile(r"categories\s*:[ \t]*([^\n]*)", re.IGNORECASE)
_QWEN_VERDICTS = ("Safe", "Unsafe", "Controversial")


class Qwen3Guard:
    """Qwen3Guard-Gen. Its middle tier scores ``controversial_code`` (whatever the categories),
    so that the policy's rule for that one code decides what controversial means: flag it,
    block it (Qwen's "strict" reading) or allow it (the "loose" one)."""

    modes: tuple[Mode, ...] = ("chat",)
    name = "qwen3guard"

    def __init__(self, categories: CategoryCodes, controversial_code: str) -> None:
        self._categories = categories
        self._controversial = controversial_code

    def prompts(self, text: str, direction: Direction) -> list[Prompt]:
        return [Prompt(messages=conversation(text, direction))]

    def scores(self, answers: Sequence[Generation], direction: Direction) -> dict[str, float]:
        answer = single(answers)
        match = _QWEN_SAFETY.search(answer.text)
        if match is None:
            raise GuardLLMError("qwen3guard answer has no 'Safety: Safe|Unsafe|Controversial' line")
        verdict = match.group(1).capitalize()
        if verdict == "Safe":
            return {}
        probs = verdict_probabilities(answer.tokens, _QWEN_VERDICTS, anchor="Safety:")
        score = unsafe_score(probs, verdict, "Safe")
        if verdict == "Controversial":
            return {self._controversial: score}
        line = _QWEN_CATEGORIES.search(answer.text, match.end())
        names = [n for n in (line.group(1).split(",") if line else []) if n.strip().casefold() != "none"]
        return self._categories.score(names, score)


_PROMPT_INTRO = (
    "You are a policy expert trying to help determine whether a user prompt is in violation of the "
    "defined safety policies.\n\n<start_of_turn>\nHuman Question: {prompt}\n<end_of_turn>\n\n"
)
_RESPONSE_INTRO = (
    "You are a policy expert trying to help determine whether an AI response to a prompt is in violation "
    "of the defined safety policies.\n\n<start_of_turn>\nHuman Question: {prompt}\n<end_of_turn>\n\n"
    "<start_of_turn>\nChatbot Response: {response}\n<end_of_turn>\n\n"
)
_PRINCIPLE = "Our safety principle is defined in the below:\n\n* {policy}\n\n===\n\n"
_QUESTION = (
    "Does the {subject} violate the above principle? Your answer must start with 'Yes' or 'No'. "
    "And then walk through step by step to be sure we answer correctly.\n\n"
)
_YES_NO = re.compile(r"^\s*(yes|no)\b", re.IGNORECASE)


class ShieldGemma:
    """ShieldGemma: one prompt per harm policy (it was trained on one policy per call), score
    P(Yes) / (P(Yes) + P(No)) from the first generated token, as the model card computes it.

    ``prompt`` mode renders the model card's prompt here (sent to ``/completions``); ``chat``
    mode sends the turns and lets the model's chat template render it with the ``guideline``.
    """

    modes: tuple[Mode, ...] = ("prompt", "chat")
    name = "shieldgemma"

    def __init__(self, policies: Mapping[str, str], mode: Mode) -> None:
        self._policies: dict[str, tuple[ShieldPolicy, str]] = {
            key: (SHIELDGEMMA[key], code) for key, code in policies.items()
        }
        self._mode = mode

    def prompts(self, text: str, direction: Direction) -> list[Prompt]:
        return [self._prompt(text, direction, policy) for policy, _ in self._policies.values()]

    def _prompt(self, text: str, direction: Direction, policy: ShieldPolicy) -> Prompt:
        guideline = policy.prompt if direction == "input" else policy.response
        if self._mode == "chat":
            return Prompt(messages=conversation(text, direction), template_kwargs={"guideline": guideline})
        if direction == "input":
            head, subject = _PROMPT_INTRO.format(prompt=neutralise(text)), "human question"
        else:  # see conversation(): the user's turn is unknown, so it is left empty
            head, subject = _RESPONSE_INTRO.format(prompt="", response=neutralise(text)), "Chatbot Response"
        return Prompt(text=head + _PRINCIPLE.format(policy=guideline) + _QUESTION.format(subject=subject))

    def scores(self, answers: Sequence[Generation], direction: Direction) -> dict[str, float]:
        if len(answers) != len(self._policies):
            raise GuardLLMError(f"expected {len(self._policies)} answers, got {len(answers)}")
        out: dict[str, float] = {}
        for (_, code), answer in zip(self._policies.values(), answers, strict=True):
            match = _YES_NO.match(answer.text)
            if match is None:
                raise GuardLLMError("shieldgemma answer starts with neither 'Yes' nor 'No'")
            fallback = 1.0 if match.group(1).casefold() == "yes" else 0.0
            probs = verdict_probabilities(answer.tokens, ("Yes", "No"))
            score = unsafe_score(probs, "Yes", "No", fallback)
            if score > out.get(code, 0.0):
                out[code] = score
        return out
