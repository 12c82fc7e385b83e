"""The ``openai`` backend: a guard model on an OpenAI-compatible server (vLLM, SGLang, TGI...).

Chat prompts go to ``{base_url}/chat/completions``, where the server applies the model's chat
template; rendered prompts go to ``{base_url}/completions``. Decoding is greedy (``temperature:
0``) and token probabilities are asked for (``logprobs``), which the families turn into scores.
One request per prompt, all sent at once over the shared client pool: the server batches.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from classifiers.guardllm.generation import Generation, GuardLLMError, Prompt, TokenChoice
from classifiers.http import shared_client

__all__ = ["OpenAIBackend"]

_TOP = 5


class OpenAIBackend:
    """Implements :class:`~classifiers.guardllm.generation.Backend` over HTTP."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        headers: Mapping[str, str],
        max_tokens: int,
        timeout_s: float,
        logprobs: bool = True,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._model = model
        self._headers = dict(headers)
        self._max_tokens = max_tokens
        self._timeout = timeout_s
        self._logprobs = logprobs

    async def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the rest
                tasks = [group.create_task(self._one(p)) for p in prompts]
        except BaseExceptionGroup as failed:
            first: BaseException = failed
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        return [t.result() for t in tasks]

    async def aclose(self) -> None:
        """Nothing to close: connections belong to the shared pool."""

    def body(self, prompt: Prompt) -> tuple[str, dict[str, Any]]:
        """The endpoint path and JSON body for ``prompt``."""
        body: dict[str, Any] = {"model": self._model, "temperature": 0, "max_tokens": self._max_tokens}
        if prompt.messages is None:
            body["prompt"] = prompt.text or ""
            if self._logprobs:
                body["logprobs"] = _TOP
            return "/completions", body
        body["messages"] = [dict(m) for m in prompt.messages]
        if prompt.template_kwargs:
            body["chat_template_kwargs"] = dict(prompt.template_kwargs)  # vLLM / SGLang extension
        if self._logprobs:
            body.update(logprobs=True, top_logprobs=_TOP)
        return "/chat/completions", body

    async def _one(self, prompt: Prompt) -> Generation:
        path, body = self.body(prompt)
        try:
            response = await shared_client().post(
                self._base + path, json=body, headers=self._headers, timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            raise GuardLLMError(f"{path}: no answer within {self._timeout} s") from exc
        except httpx.HTTPError as exc:
            raise GuardLLMError(f"{path}: {type(exc).__name__}") from exc
        if not response.is_success:
            raise GuardLLMError(f"{path}: HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise GuardLLMError(f"{path}: the answer is not JSON") from None
        try:
            return _chat(data) if prompt.messages is not None else _completion(data)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise GuardLLMError(f"{path}: malformed answer ({type(exc).__name__} {exc})") from None


def _first_choice(data: Any) -> dict[str, Any]:
    choices = data["choices"]
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("no choices")
    choice: dict[str, Any] = choices[0]
    return choice


def _chat(data: Any) -> Generation:
    choice = _first_choice(data)
    text = choice["message"]["content"]
    if not isinstance(text, str):
        raise TypeError("message.content is not a string")
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return Generation(text)
    tokens = []
    for step in content:
        top = {str(t["token"]): math.exp(float(t["logprob"])) for t in step.get("top_logprobs") or ()}
        top.setdefault(str(step["token"]), math.exp(float(step["logprob"])))
        tokens.append(TokenChoice(str(step["token"]), top))
    return Generation(text, tuple(tokens))


def _completion(data: Any) -> Generation:
    choice = _first_choice(data)
    text = choice["text"]
    if not isinstance(text, str):
        raise TypeError("text is not a string")
    logprobs = choice.get("logprobs")
    if not logprobs or not logprobs.get("tokens"):
        return Generation(text)
    names = logprobs["tokens"]
    chosen = logprobs.get("token_logprobs") or [None] * len(names)
    tops = logprobs.get("top_logprobs") or [None] * len(names)
    if not len(names) == len(chosen) == len(tops):
        raise ValueError("logprobs lists differ in length")
    tokens = []
    for token, logprob, top in zip(names, chosen, tops, strict=True):
        probs = {str(t): math.exp(float(lp)) for t, lp in (top or {}).items()}
        if logprob is not None:
            probs.setdefault(str(token), math.exp(float(logprob)))
        tokens.append(TokenChoice(str(token), probs))
    return Generation(text, tuple(tokens))
