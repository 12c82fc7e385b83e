"""Registry of classifier types: ``type:`` name in a policy file -> params model + factory.

Each classifier module registers itself with one :func:`register` line inside
:func:`builtin_registry`, so importing this module does no work. Params models are pydantic
models with ``extra="forbid"``; paths in them are resolved against the policy file's folder,
which the loader passes as validation context ``{"base_dir": Path}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from classifiers.base import Classifier

__all__ = ["ClassifierParams", "ClassifierType", "Registry", "builtin_registry"]

P = TypeVar("P", bound=BaseModel)


class ClassifierParams(BaseModel):
    """Base for every classifier's params: unknown keys are an error, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ClassifierType(Generic[P]):
    params: type[P]
    factory: Callable[[str, P], Classifier]


class Registry:
    """Maps type names to :class:`ClassifierType`; builds classifiers from raw policy dicts."""

    def __init__(self) -> None:
        self._types: dict[str, ClassifierType[Any]] = {}

    def register(self, type_name: str, params: type[P], factory: Callable[[str, P], Classifier]) -> None:
        if type_name in self._types:
            raise ValueError(f"classifier type {type_name!r} is already registered")
        self._types[type_name] = ClassifierType(params, factory)

    def names(self) -> list[str]:
        return sorted(self._types)

    def get(self, type_name: str) -> ClassifierType[Any]:
        try:
            return self._types[type_name]
        except KeyError:
            known = ", ".join(self.names())
            raise ValueError(f"unknown classifier type {type_name!r} (known: {known})") from None

    def validate(self, type_name: str, raw: Mapping[str, Any], base_dir: Path) -> BaseModel:
        """Validate raw params (without ``type``) into the type's params model."""
        model = self.get(type_name).params
        params: BaseModel = model.model_validate(dict(raw), context={"base_dir": base_dir})
        return params

    def build(self, name: str, type_name: str, params: BaseModel) -> Classifier:
        return self.get(type_name).factory(name, params)


@cache
def builtin_registry() -> Registry:
    """The registry with every classifier type that ships with modgate."""
    from classifiers import guardllm, lexicon, patterns, remote, transformer

    registry = Registry()
    registry.register("guard-llm", guardllm.GuardLLMParams, guardllm.GuardLLMClassifier.from_params)
    registry.register("lexicon", lexicon.LexiconParams, lexicon.LexiconClassifier.from_params)
    registry.register("patterns", patterns.PatternParams, patterns.PatternClassifier.from_params)
    registry.register("remote", remote.RemoteParams, remote.RemoteClassifier.from_params)
    registry.register(
        "transformer", transformer.TransformerParams, transformer.TransformerClassifier.from_params
    )
    return registry
