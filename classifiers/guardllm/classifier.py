"""``type: guard-llm``: a generative guard model as a classifier of risk codes.

The classifier is a family (prompts and answer parsing, :mod:`.families`, :mod:`.generic`) over
a backend (:mod:`.local` or :mod:`.remote`). It judges user turns (``classify``, or
``classify_directed(texts, "input")``) and assistant turns (``classify_directed(texts,
"output")``) with the model's own prompt for each.

It sets no timeout, concurrency limit, cache or error policy of its own: the screener wraps every
classifier with those. It raises :class:`GuardLLMError` on any failure, and says whether its
results may be cached (``deterministic``: decoding is always greedy).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from classifiers.base import Direction, Scores
from classifiers.guardllm.categories import LLAMA_GUARD, QWEN3GUARD, SHIELDGEMMA
from classifiers.guardllm.families import CategoryCodes, Family, LlamaGuard, Qwen3Guard, ShieldGemma
from classifiers.guardllm.generation import Backend, GuardLLMError
from classifiers.guardllm.generic import GenericFamily, JsonVerdict, RegexVerdict
from classifiers.guardllm.params import GuardLLMParams
from classifiers.http import expand_headers

__all__ = ["GuardLLMClassifier", "make_family"]


class GuardLLMClassifier:
    """Implements :class:`~classifiers.base.Classifier` and :class:`~classifiers.base.DirectedClassifier`."""

    #: Greedy decoding: the same text gets the same verdict, so the screener may cache results.
    deterministic = True

    def __init__(self, name: str, family: Family, backend: Backend, *, revision: str) -> None:
        self.name = name
        self.family = family
        self.backend = backend
        self.revision = revision

    @classmethod
    def from_params(cls, name: str, params: GuardLLMParams) -> GuardLLMClassifier:
        family = make_family(name, params)
        backend: Backend
        if params.backend == "openai":
            from classifiers.guardllm.remote import OpenAIBackend

            assert params.base_url is not None  # the params' validator requires it
            headers = expand_headers(params.headers, f"classifiers.{name}.headers")
            backend = OpenAIBackend(
                params.base_url, params.model, headers=headers, max_tokens=params.max_new_tokens,
                timeout_s=params.request_timeout_s, logprobs=params.logprobs,
            )  # fmt: skip
            model = params.model
        else:
            from classifiers.guardllm.local import LocalBackend

            local = LocalBackend(
                Path(params.model), name=name, max_new_tokens=params.max_new_tokens,
                max_batch=params.max_batch, max_queue=params.max_queue,
                threads=params.threads, dtype=params.dtype,
            )  # fmt: skip
            if params.prompt_mode == "chat" and not local.has_chat_template:
                raise ValueError(
                    f"classifier {name!r}: {params.model} has no chat template; use mode: prompt"
                )
            backend, model = local, Path(params.model).name
        return cls(name, family, backend, revision=f"{family.name}:{model}")

    async def classify(self, texts: Sequence[str]) -> list[Scores]:
        """User turns: ``classify_directed(texts, "input")``."""
        return await self.classify_directed(texts, "input")

    async def classify_directed(self, texts: Sequence[str], direction: Direction) -> list[Scores]:
        # The original text, not the normalised one the keyword lists see: folding case or
        # traditional characters would change what a language model reads. Blank texts are not
        # sent: there is nothing to judge, and a model's verdict on nothing is noise.
        asked = [i for i, text in enumerate(texts) if text.strip()]
        prompts = [self.family.prompts(texts[i], direction) for i in asked]
        try:
            answers = await self.backend.generate([p for group in prompts for p in group])
            scores = [Scores(self.name, {}, revision=self.revision) for _ in texts]
            at = 0
            for i, group in zip(asked, prompts, strict=True):
                found = self.family.scores(answers[at : at + len(group)], direction)
                at += len(group)
                scores[i] = Scores(self.name, found, revision=self.revision)
        except GuardLLMError as exc:  # the screener's wrapper logs and counts it; on_error decides
            raise GuardLLMError(f"guard-llm {self.name}: {exc}") from exc
        return scores

    async def aclose(self) -> None:
        await self.backend.aclose()


def make_family(name: str, params: GuardLLMParams) -> Family:
    """The family of ``params``, its shipped category map overridden by ``categories``."""
    unsafe = params.unsafe_code
    if params.family in ("llama-guard-3", "llama-guard-4"):
        codes = CategoryCodes({**LLAMA_GUARD, **params.categories}, unsafe, name)
        return LlamaGuard(3 if params.family == "llama-guard-3" else 4, codes)
    if params.family == "qwen3guard":
        return Qwen3Guard(
            CategoryCodes({**QWEN3GUARD, **params.categories}, unsafe, name), params.controversial_code
        )
    if params.family == "shieldgemma":
        overrides = {k.casefold(): v for k, v in params.categories.items()}
        chosen = {key: overrides.get(key, SHIELDGEMMA[key].code) for key in params.policies or SHIELDGEMMA}
        return ShieldGemma({k: code for k, code in chosen.items() if code is not None}, params.prompt_mode)
    assert params.template is not None  # the params' validator requires a template and one parser
    reader: RegexVerdict | JsonVerdict
    if params.verdict_regex is not None:
        reader = RegexVerdict(params.verdict_regex, params.unsafe_values, params.category_separator)
    else:
        assert params.json_verdict_field is not None
        reader = JsonVerdict(
            params.json_verdict_field,
            params.json_categories_field,
            params.unsafe_values,
            params.category_separator,
        )
    codes = CategoryCodes(params.categories, unsafe, name)
    return GenericFamily(params.template, params.system, params.prompt_mode, reader, codes)
