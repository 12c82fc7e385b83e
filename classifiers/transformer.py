"""``type: transformer``: a local Hugging Face model as a classifier of risk codes.

The model's labels map to risk codes, each with the threshold chosen for it on dev data. The
classifier *calibrates* every score so that the label's threshold lands on 0.5: the policy's
rules then use one scale (``threshold: 0.5`` means "what the model's tuner chose") whatever
model produced the score. Several labels may map to one code; the highest calibrated score
counts.

Inference runs off the event loop through one :class:`~classifiers.batcher.MicroBatcher` per
classifier. Texts are normalised first (the same folding the keyword lists see, so
full-width or zero-width tricks do not change the verdict), and results are cached by a hash
of the normalised text: system prompts and chat history come again on every turn.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from classifiers.base import RiskCode, Scores
from classifiers.batcher import MicroBatcher
from classifiers.lru import LRU
from classifiers.normalize import normalize
from classifiers.registry import ClassifierParams

__all__ = ["BUILTIN_MODELS", "LabelMap", "TransformerClassifier", "TransformerParams", "calibrate"]

#: Models that ship with modgate, by name: ``model: modgate-guard`` in a policy file.
BUILTIN_MODELS = {"modgate-guard": Path(__file__).parent / "models" / "modgate-guard"}


class LabelMap(ClassifierParams):
    code: RiskCode = Field(..., description="Risk code the label's score counts for.")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Model score that calibrates to 0.5.")


class TransformerParams(ClassifierParams):
    """Params of a ``type: transformer`` classifier."""

    model: str = Field(
        ...,
        description="A built-in model name (modgate-guard) or a local model directory, relative to the "
        "policy file's folder. Never downloaded.",
    )
    labels: dict[str, LabelMap] = Field(
        default_factory=dict,
        description="Model label -> risk code and threshold. Labels not listed are ignored; empty means "
        "the model's own defaults (head.json), which built-in models have.",
    )
    quantize: Literal["none", "int8"] = Field("none", description="Dynamic int8 quantisation on load.")
    activation: Literal["auto", "sigmoid", "softmax"] = Field(
        "auto",
        description="Sequence classification models: sigmoid scores each label apart (multi-label), "
        "softmax shares 1.0 among them; auto follows the config's problem_type (softmax when unset).",
    )
    max_tokens: int = Field(256, ge=16, le=512, description="Tokens per window; longer texts are split.")
    stride: int = Field(64, ge=0, le=256, description="Tokens of overlap between windows.")
    max_batch: int = Field(32, ge=1, le=1024, description="Texts per forward pass.")
    max_wait_ms: float = Field(0.0, ge=0.0, le=100.0, description="Wait for company when the model is idle.")
    max_queue: int = Field(1024, ge=1, description="Texts waiting before callers get an overload error.")
    cache_size: int = Field(4096, ge=0, description="Results kept by hash of the normalised text.")
    runtime: Literal["torch", "onnx"] | None = Field(
        None,
        description="torch, or onnx: the encoder in ONNX Runtime (encoder + head models; built on first "
        "use); default: the runtime the model's head was trained on (head.json), else torch.",
    )
    threads: int | None = Field(None, ge=1, le=64, description="Intra-op threads (default: the runtime's).")
    encoder_cache: Path | None = Field(
        None, description="Where built-in encoders are built (default ~/.cache/modgate)."
    )

    @field_validator("model")
    @classmethod
    def _resolve(cls, model: str, info: ValidationInfo) -> str:
        if model in BUILTIN_MODELS:
            return model
        context = info.context if isinstance(info.context, Mapping) else {}
        path = Path(model)
        full = path if path.is_absolute() else Path(context.get("base_dir", Path.cwd())) / path
        if not (full / "config.json").is_file() and not (full / "head.json").is_file():
            raise ValueError(f"{model!r} is not a built-in model ({', '.join(BUILTIN_MODELS)}) nor a model "
                             f"directory (no config.json or head.json in {full})")  # fmt: skip
        return str(full)


def calibrate(score: float, threshold: float) -> float:
    """Piecewise-linear map of [0, 1] onto itself with ``threshold -> 0.5``."""
    if score < threshold:
        return 0.5 * score / threshold
    return 0.5 + 0.5 * (score - threshold) / (1.0 - threshold)


class TransformerClassifier:
    """Implements :class:`classifiers.base.Classifier` over a ``predict`` function."""

    def __init__(
        self,
        name: str,
        predict: Any,
        label_map: Mapping[str, LabelMap],
        *,
        revision: str = "",
        cache_size: int = 4096,
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
        max_queue: int = 1024,
        model: Any = None,
    ) -> None:
        if not label_map:
            raise ValueError(f"classifier {name!r}: no label maps to a risk code")
        self.name = name
        self.revision = revision
        #: The loaded model behind ``predict``, when there is one (benchmarks, introspection).
        self.model = model
        self._labels = dict(label_map)
        self._cache: LRU[str, Scores] | None = LRU(cache_size) if cache_size else None
        self._batcher: MicroBatcher[dict[str, float]] = MicroBatcher(
            predict, name=name, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue
        )
        #: Cache hits and misses, for tests and metrics.
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_params(cls, name: str, params: TransformerParams) -> TransformerClassifier:
        directory = BUILTIN_MODELS.get(params.model, Path(params.model))
        encoder = None
        if params.model in BUILTIN_MODELS:
            from classifiers.encoder import ensure_encoder

            encoder = ensure_encoder(params.encoder_cache)
        if params.threads:
            import torch

            torch.set_num_threads(params.threads)
        from classifiers.encoder import default_cache_dir
        from classifiers.hf import Runtime

        kind = params.runtime or _trained_runtime(directory)
        runtime = Runtime(kind, params.encoder_cache or default_cache_dir(), params.threads)
        model = _shared_model(directory, encoder, params.quantize == "int8", params.max_tokens, params.stride,
                              params.max_batch, runtime, params.activation)  # fmt: skip
        labels = params.labels or _default_labels(model.spec, name)
        unknown = sorted(set(labels) - set(model.labels))
        if unknown:
            known = list(model.labels)
            raise ValueError(f"classifier {name!r}: labels {unknown} are not in the model ({known})")
        revision = model.spec.revision if model.spec else directory.name
        return cls(
            name, model.predict, labels, revision=revision, cache_size=params.cache_size,
            max_batch=params.max_batch, max_wait_ms=params.max_wait_ms, max_queue=params.max_queue,
            model=model,
        )  # fmt: skip

    async def classify(self, texts: Sequence[str]) -> list[Scores]:
        normalised = [normalize(t).text for t in texts]
        keys = [_key(t) for t in normalised]
        out: list[Scores | None] = [self._cache.get(k) if self._cache is not None else None for k in keys]
        todo: dict[str, list[int]] = {}
        for i, hit in enumerate(out):
            if hit is None:
                todo.setdefault(keys[i], []).append(i)
        self.hits += len(texts) - sum(map(len, todo.values()))
        self.misses += len(todo)
        if todo:
            probs = await self._batcher.run([normalised[idx[0]] for idx in todo.values()])
            for (key, idx), p in zip(todo.items(), probs, strict=True):
                scores = self._scores(p)
                if self._cache is not None:
                    self._cache.put(key, scores)
                for i in idx:
                    out[i] = scores
        return [s for s in out if s is not None]

    def _scores(self, probs: Mapping[str, float]) -> Scores:
        by_code: dict[str, float] = {}
        for label, spec in self._labels.items():
            score = calibrate(probs[label], spec.threshold)
            if score > by_code.get(spec.code, 0.0):
                by_code[spec.code] = score
        return Scores(self.name, by_code, revision=self.revision)

    async def aclose(self) -> None:
        await self._batcher.aclose()


def _trained_runtime(directory: Path) -> Literal["torch", "onnx"]:
    from classifiers.hf import HEAD_CONFIG, HeadSpec

    return HeadSpec.read(directory).runtime if (directory / HEAD_CONFIG).is_file() else "torch"


@functools.cache
def _shared_model(
    directory: Path,
    encoder: Path | None,
    quantize: bool,
    max_tokens: int,
    stride: int,
    batch: int,
    runtime: Any,
    activation: Literal["auto", "sigmoid", "softmax"] = "auto",
) -> Any:
    """One loaded copy per process of each model and setting: several policies (routes,
    tenants) naming modgate-guard share its few hundred MB."""
    from classifiers import hf

    return hf.load_model(
        directory, encoder=encoder, quantize=quantize, max_tokens=max_tokens, stride=stride, batch_size=batch,
        runtime=runtime, activation=activation,
    )  # fmt: skip


def _key(normalised: str) -> str:
    return hashlib.blake2b(normalised.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _default_labels(spec: Any, name: str) -> dict[str, LabelMap]:
    if spec is None or not spec.label_map:
        raise ValueError(f"classifier {name!r}: the model has no default label map; set 'labels'")
    return {label: LabelMap.model_validate(m) for label, m in spec.label_map.items()}
