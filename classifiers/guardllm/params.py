"""Params of a ``type: guard-llm`` classifier, validated when the policy loads.

A key that the chosen family or backend would ignore is an error, as an unknown key is: a
``headers`` on a local model or a ``template`` on Llama Guard is a mistake to report, not to skip.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from classifiers.base import RiskCode
from classifiers.guardllm.categories import LLAMA_GUARD, QWEN3GUARD, SHIELDGEMMA
from classifiers.guardllm.families import Mode
from classifiers.guardllm.local import Dtype
from classifiers.http import expand_headers
from classifiers.registry import ClassifierParams

__all__ = ["FAMILY_MODES", "FamilyName", "GuardLLMParams"]

FamilyName = Literal["llama-guard-3", "llama-guard-4", "qwen3guard", "shieldgemma", "generic"]
ShieldPolicyName = Literal["dangerous", "harassment", "hate", "sexual"]

#: The prompt modes each family supports; the first is its default.
FAMILY_MODES: dict[str, tuple[Mode, ...]] = {
    "llama-guard-3": ("chat",),
    "llama-guard-4": ("chat",),
    "qwen3guard": ("chat",),
    "shieldgemma": ("prompt", "chat"),
    "generic": ("chat", "prompt"),
}
_CATEGORY_NAMES: dict[str, Mapping[str, object]] = {
    "llama-guard-3": LLAMA_GUARD,
    "llama-guard-4": LLAMA_GUARD,
    "qwen3guard": QWEN3GUARD,
    "shieldgemma": SHIELDGEMMA,
}
_GENERIC = ("template", "system", "verdict_regex", "json_verdict_field", "json_categories_field",
            "unsafe_values", "category_separator")  # fmt: skip
#: Keys that only mean something for one backend or family: (field, attribute, allowed values).
_ONLY_FOR = (
    *((f, "backend", ("openai",)) for f in ("base_url", "headers", "request_timeout_s", "logprobs")),
    *((f, "backend", ("transformers",)) for f in ("max_batch", "max_queue", "threads", "dtype")),
    ("policies", "family", ("shieldgemma",)),
    ("controversial_code", "family", ("qwen3guard",)),
    *((f, "family", ("generic",)) for f in _GENERIC),
)


class GuardLLMParams(ClassifierParams):
    """Params of a ``type: guard-llm`` classifier: a generative guard model (Llama Guard 3/4,
    Qwen3Guard-Gen, ShieldGemma, or any model described by a template and an answer parser)."""

    family: FamilyName = Field(..., description="Guard model family: how prompts are built and answers read.")
    backend: Literal["transformers", "openai"] = Field(
        ...,
        description="transformers: a local model in this process (CPU); openai: an OpenAI-compatible server.",
    )
    model: str = Field(
        ...,
        description="transformers: a local model directory, relative to the policy file's folder (never "
        "downloaded); openai: the model name the server serves.",
    )
    base_url: str | None = Field(
        None, description="openai: the server's API root, e.g. http://127.0.0.1:8000/v1."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="openai: request headers; ${NAME} is replaced by the environment variable.",
    )
    request_timeout_s: float = Field(
        30.0, gt=0.0, le=600.0, description="openai: timeout of each HTTP request."
    )
    logprobs: bool = Field(
        True, description="openai: ask for token probabilities (scores from the verdict's probability)."
    )
    mode: Mode | None = Field(
        None,
        description="chat: the model's own chat template formats the turns (default for llama-guard and "
        "qwen3guard); prompt: modgate renders the prompt (default for shieldgemma; generic may use either).",
    )
    max_new_tokens: int = Field(24, ge=1, le=1024, description="Tokens the model may generate per answer.")
    categories: dict[str, RiskCode | None] = Field(
        default_factory=dict,
        description="Category name -> risk code, over the family's shipped map (S1..S14, Qwen3Guard names, "
        "ShieldGemma policies); null ignores a category. For generic, the whole map.",
    )
    unsafe_code: RiskCode = Field(
        "X.harmful",
        description="Code scored for an unsafe verdict without a category, or with an unknown one.",
    )
    controversial_code: RiskCode = Field(
        "X.controversial", description="qwen3guard: code scored for the Controversial tier; its rule decides."
    )
    policies: list[ShieldPolicyName] | None = Field(
        None,
        min_length=1,
        description="shieldgemma: harm policies asked, one prompt each (default: all four).",
    )
    template: str | None = Field(None, description="generic: the prompt, with {text} and optionally {role}.")
    system: str | None = Field(None, description="generic: a system message (chat) or preamble (prompt).")
    verdict_regex: str | None = Field(
        None, description="generic: regex with named groups verdict and optionally categories."
    )
    json_verdict_field: str | None = Field(
        None, description="generic: the answer is JSON; the verdict's field (dotted path; string or boolean)."
    )
    json_categories_field: str | None = Field(
        None,
        description="generic: the JSON field with categories (a list, or a string split by the separator).",
    )
    unsafe_values: list[str] = Field(
        default_factory=lambda: ["unsafe"], min_length=1, description="generic: verdicts meaning unsafe."
    )
    category_separator: str = Field(",", min_length=1, description="generic: separator of category names.")
    max_batch: int = Field(8, ge=1, le=256, description="transformers: prompts per generate pass.")
    max_queue: int = Field(
        256, ge=1, description="transformers: prompts waiting before callers get an overload error."
    )
    threads: int | None = Field(None, ge=1, le=64, description="transformers: torch intra-op threads.")
    dtype: Dtype = Field(
        "float32", description="transformers: weights' dtype on load (auto: the checkpoint's)."
    )

    @field_validator("model")
    @classmethod
    def _resolve(cls, model: str, info: ValidationInfo) -> str:
        if info.data.get("backend") != "transformers":
            return model
        context = info.context if isinstance(info.context, Mapping) else {}
        path = Path(model)
        full = path if path.is_absolute() else Path(context.get("base_dir", Path.cwd())) / path
        if not (full / "config.json").is_file():
            raise ValueError(f"{model!r} is not a model directory (no config.json in {full})")
        return str(full)

    @field_validator("headers")
    @classmethod
    def _env(cls, headers: dict[str, str]) -> dict[str, str]:
        expand_headers(headers, "headers")  # fails now, at load, on an unset variable; kept unexpanded
        return headers

    @field_validator("verdict_regex")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a valid regex: {exc}") from None
            if "verdict" not in compiled.groupindex:
                raise ValueError("needs a named group (?P<verdict>...)")
        return pattern

    @model_validator(mode="after")
    def _combination(self) -> GuardLLMParams:
        for name, attribute, allowed in _ONLY_FOR:
            value = getattr(self, attribute)
            if name in self.model_fields_set and value not in allowed:
                raise ValueError(f"{name} applies only to {attribute} {' or '.join(allowed)}, not {value}")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend openai needs base_url (e.g. http://127.0.0.1:8000/v1)")
        modes = FAMILY_MODES[self.family]
        if self.mode is not None and self.mode not in modes:
            raise ValueError(f"family {self.family} has no mode {self.mode} (modes: {', '.join(modes)})")
        known = _CATEGORY_NAMES.get(self.family)
        if known is not None:
            folded = {k.casefold() for k in known}
            unknown = sorted(c for c in self.categories if c.strip().casefold() not in folded)
            if unknown:
                raise ValueError(
                    f"categories {unknown} are not {self.family} categories ({', '.join(known)})"
                )
        if self.family == "generic":
            self._check_generic()
        ignored = {k.strip().casefold() for k, code in self.categories.items() if code is None}
        if self.family == "shieldgemma" and set(self.policies or SHIELDGEMMA) <= ignored:
            raise ValueError("every ShieldGemma policy asked is ignored (categories: null)")
        return self

    def _check_generic(self) -> None:
        if not self.template or "{text}" not in self.template:
            raise ValueError("family generic needs a template containing {text}")
        if (self.verdict_regex is None) == (self.json_verdict_field is None):
            raise ValueError("family generic needs exactly one parser: verdict_regex or json_verdict_field")
        if self.json_categories_field is not None and self.json_verdict_field is None:
            raise ValueError("json_categories_field needs json_verdict_field")

    @property
    def prompt_mode(self) -> Mode:
        return self.mode or FAMILY_MODES[self.family][0]
