"""The ``generic`` family: any guard model, described by the operator in the policy file.

The prompt is the operator's ``template`` with ``{text}`` (and optionally ``{role}``: ``user``
or ``assistant``) replaced, sent as one user message after an optional ``system`` message
(``chat`` mode) or as one raw prompt (``prompt`` mode). The answer is read either by a regex
with named groups ``verdict`` (and optionally ``categories``), or as JSON (``json_verdict_field``,
optionally ``json_categories_field``; dotted paths reach into nested objects). The verdict is
unsafe when it is one of ``unsafe_values`` (case-insensitive), or JSON ``true``.

Scores are 1.0 for an unsafe verdict: the family knows no safe word to weigh the unsafe one
against, so token probabilities are not read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from classifiers.base import Direction
from classifiers.guardllm.families import CategoryCodes, Mode, neutralise, single
from classifiers.guardllm.generation import Generation, GuardLLMError, Prompt

__all__ = ["GenericFamily", "JsonVerdict", "RegexVerdict"]

_ROLES = {"input": "user", "output": "assistant"}


class RegexVerdict:
    """Reads ``(unsafe, category names)`` with a regex (searched, not anchored)."""

    def __init__(self, pattern: str, unsafe_values: Sequence[str], separator: str) -> None:
        self._pattern = re.compile(pattern)
        self._unsafe = {v.strip().casefold() for v in unsafe_values}
        self._separator = separator

    def read(self, answer: str) -> tuple[bool, list[str]]:
        match = self._pattern.search(answer)
        if match is None or match.group("verdict") is None:
            raise GuardLLMError("generic answer does not match verdict_regex")
        categories = match.groupdict().get("categories") or ""
        unsafe = match.group("verdict").strip().casefold() in self._unsafe
        return unsafe, categories.split(self._separator)


class JsonVerdict:
    """Reads ``(unsafe, category names)`` from a JSON object in the answer (code fences and
    words around it are tolerated: the object is taken from the first ``{`` to the last ``}``)."""

    def __init__(
        self, verdict_field: str, categories_field: str | None, unsafe_values: Sequence[str], separator: str
    ) -> None:
        self._verdict = verdict_field.split(".")
        self._categories = categories_field.split(".") if categories_field else None
        self._unsafe = {v.strip().casefold() for v in unsafe_values}
        self._separator = separator

    def read(self, answer: str) -> tuple[bool, list[str]]:
        start, end = answer.find("{"), answer.rfind("}")
        try:
            data = json.loads(answer[start : end + 1]) if 0 <= start < end else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise GuardLLMError("generic answer holds no JSON object")
        verdict = _field(data, self._verdict)
        if isinstance(verdict, bool):
            unsafe = verdict
        elif isinstance(verdict, str):
            unsafe = verdict.strip().casefold() in self._unsafe
        else:
            raise GuardLLMError("generic answer's JSON has no string or boolean verdict field")
        raw = _field(data, self._categories) if self._categories else None
        if raw is None:
            names: list[str] = []
        elif isinstance(raw, str):
            names = raw.split(self._separator)
        elif isinstance(raw, list) and all(isinstance(n, str) for n in raw):
            names = list(raw)
        else:
            raise GuardLLMError("generic answer's categories field is neither a string nor a list of strings")
        return unsafe, names


def _field(data: dict[str, Any], path: list[str]) -> Any:
    value: Any = data
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


class GenericFamily:
    name = "generic"
    modes: tuple[Mode, ...] = ("chat", "prompt")

    def __init__(
        self,
        template: str,
        system: str | None,
        mode: Mode,
        reader: RegexVerdict | JsonVerdict,
        categories: CategoryCodes,
    ) -> None:
        self._template = template
        self._system = system
        self._mode = mode
        self._reader = reader
        self._categories = categories

    def render(self, text: str, direction: Direction) -> str:
        # {role} first: a text that itself contains "{role}" must reach the model unchanged.
        return self._template.replace("{role}", _ROLES[direction]).replace("{text}", neutralise(text))

    def prompts(self, text: str, direction: Direction) -> list[Prompt]:
        body = self.render(text, direction)
        if self._mode == "prompt":
            return [Prompt(text=f"{self._system}\n\n{body}" if self._system else body)]
        system = ({"role": "system", "content": self._system},) if self._system else ()
        return [Prompt(messages=(*system, {"role": "user", "content": body}))]

    def scores(self, answers: Sequence[Generation], direction: Direction) -> dict[str, float]:
        unsafe, names = self._reader.read(single(answers).text)
        return self._categories.score(names, 1.0) if unsafe else {}
